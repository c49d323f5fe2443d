"""The settings: one TOML file with environment overrides, its sections and their validators."""
