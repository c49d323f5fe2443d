"""The one place that builds: every service of a gateway process (build.py), handed down frozen
(services.py), started and stopped in order (gateway.py); the exporter and the standalone rollout
controller built the same way (exporter.py, controller.py)."""
