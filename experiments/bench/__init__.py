"""The benchmarks and their baselines: the serving bench, the report at scale, replicas, simulations."""
