"""What runs beside the gateway: the comparison report, test traffic, and the benchmarks (bench/)."""
