"""Real local processes (MLflow servers, gateways), the in-process app, factories and strategies."""
