"""The local stack: a real ``mlflow server`` and gateway processes on free ports, the iris models
trained and registered, configs written. The tests, the benchmarks and ``make replicas`` all start
their processes through this package (it is not part of the gateway, which never imports it)."""
