"""Routing changes recorded in MLflow: one run per change in the routing-changes experiment.

Written from a background thread; a failure is logged, never raised to the admin call (the change
itself is already in force, and the gateway's log has a line for it either way)."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from gateway.domain.contract import ROUTING_CHANGES_EXPERIMENT as EXPERIMENT
from gateway.domain.contract import get_or_create_experiment
from gateway.domain.messages import first_line
from gateway.routing.table import RoutingChange

log = logging.getLogger("gateway.changes")


class RoutingChangeRecorder:
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    def __call__(self, change: RoutingChange) -> None:
        threading.Thread(target=self._record, args=(change, int(time.time() * 1000)),
                         name="routing-change-log", daemon=True).start()

    def _record(self, change: RoutingChange, at_ms: int) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Param

            client = MlflowClient(tracking_uri=self.tracking_uri)
            exp_id = get_or_create_experiment(client, EXPERIMENT)
            details = change.details or {}
            tags = {"config_hash": change.config_hash, "old_config_hash": change.old_config_hash,
                    "source": change.source, "mode": change.mode}
            name = f"routing-{change.config_hash}"
            if details:  # a rollout's decision: what it decided and the statistics behind it
                tags.update({"rollout_id" if k == "rollout_id" else f"rollout_{k}": str(details[k])
                             for k in ("rollout_id", "decision", "state", "control", "candidate") if k in details})
                tags["rollout_reason"] = str(details.get("reason", ""))[:5000]
                name = f"rollout-{details.get('rollout_id')}-{details.get('decision')}"
            run = client.create_run(exp_id, start_time=at_ms, run_name=name, tags=tags)
            client.log_batch(run.info.run_id, params=[
                Param("weights", json.dumps(change.weights, sort_keys=True)),
                Param("shadow", json.dumps(change.shadow, sort_keys=True))],
                metrics=_decision_metrics(details, at_ms))
            if details:
                client.log_text(run.info.run_id, json.dumps(details, indent=2, sort_keys=True), "decision.json")
            client.set_terminated(run.info.run_id, end_time=at_ms)
        except Exception as exc:
            log.warning("routing change %s -> %s not recorded in MLflow: %s", change.old_config_hash,
                        change.config_hash, first_line(exc, 200))


def _decision_metrics(details: dict[str, Any], at_ms: int) -> list[Any]:
    """Each guardrail's estimate, interval ends and always-valid p-value, and the step's weight."""
    from mlflow.entities import Metric

    if not details:
        return []
    values: dict[str, Any] = {"rollout_step": details.get("step"), "candidate_weight": details.get("candidate_weight")}
    for name, g in (details.get("guardrails") or {}).items():
        low, high = (g.get("interval") or [None, None])[:2]
        values.update({f"{name}_estimate": g.get("estimate"), f"{name}_low": low, f"{name}_high": high,
                       f"{name}_p_value": g.get("p_value"), f"{name}_breached": float(bool(g.get("breached")))})
    return [Metric(k, float(v), at_ms, 0) for k, v in values.items() if isinstance(v, int | float)]
