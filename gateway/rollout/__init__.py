"""Guarded rollouts: the spec, the live counts, the guardrails, the controller, the Prometheus source."""
