"""The models: their signature schema, what their output means, loading and caching, the loaded set."""
