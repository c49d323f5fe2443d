"""The always-valid statistics that the rollout and the report both use."""
