"""The shared state: routing and rollout, in a local file (one machine) or MLflow's registry (replicas)."""
