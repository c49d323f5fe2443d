"""A routing change's run in MLflow's routing-changes experiment (gateway/routing/change_log.py puts
the change in the outbox; its sender calls this): the new weights and shadow as params, the source
and mode as tags, a rollout's or a bandit's statistics as metrics and its decision as a JSON file."""

from __future__ import annotations

import json
from typing import Any

from gateway.domain.contract import LEGACY_ROUTING_CHANGES_EXPERIMENT
from gateway.mlflow.client import get_or_create_experiment, tracking_client

CHANGE_ID = "change_id"  # the tag that makes a retried change's run findable


def deliver_change_run(tracking_uri: str, key: str, change: dict[str, Any], maybe_landed: bool) -> None:
    """Create the change's run (tagged ``change_id`` = key). ``maybe_landed``: an earlier try may
    have created it; a finished one is kept (nothing to do), a half-made one is deleted and redone."""
    from mlflow.entities import Param

    client = tracking_client(tracking_uri)
    exp_id = get_or_create_experiment(client, change.get("experiment") or LEGACY_ROUTING_CHANGES_EXPERIMENT)
    if maybe_landed:
        earlier = client.search_runs([exp_id], filter_string=f"tags.{CHANGE_ID} = '{key}'", max_results=10)
        if any(r.info.status == "FINISHED" for r in earlier):
            return
        for run in earlier:
            client.delete_run(run.info.run_id)
    at_ms = int(change["at_ms"])
    details = change.get("details") or {}
    tags = {"config_hash": change["config_hash"], "old_config_hash": change["old_config_hash"],
            "source": change["source"], "mode": change["mode"], CHANGE_ID: key}
    name = f"routing-{change['config_hash']}"
    bandit = details.get("bandit") if details else None
    if bandit:  # a bandit's reweighting: the posterior per arm behind the new weights
        name = f"bandit-{bandit.get('phase')}-{change['config_hash']}"
        tags["bandit_phase"] = str(bandit.get("phase"))
    elif details:  # a rollout's decision: what it decided and the statistics behind it
        tags.update({"rollout_id" if k == "rollout_id" else f"rollout_{k}": str(details[k])
                     for k in ("rollout_id", "decision", "state", "control", "candidate") if k in details})
        tags["rollout_reason"] = str(details.get("reason", ""))[:5000]
        name = f"rollout-{details.get('rollout_id')}-{details.get('decision')}"
    run = client.create_run(exp_id, start_time=at_ms, run_name=name, tags=tags)
    client.log_batch(run.info.run_id, params=[
        Param("weights", json.dumps(change["weights"], sort_keys=True)),
        Param("shadow", json.dumps(change["shadow"], sort_keys=True))],
        metrics=_decision_metrics(details, at_ms))
    if details:
        client.log_text(run.info.run_id, json.dumps(details, indent=2, sort_keys=True), "decision.json")
    client.set_terminated(run.info.run_id, end_time=at_ms)


def _decision_metrics(details: dict[str, Any], at_ms: int) -> list[Any]:
    """Each guardrail's estimate, interval ends and always-valid p-value, and the step's weight."""
    from mlflow.entities import Metric

    if not details:
        return []
    if details.get("bandit"):
        b = details["bandit"]
        values = {f"{k}_{arm}": post.get(k2) for arm, post in (b.get("posteriors") or {}).items()
                  for k, k2 in (("posterior_mean", "mean"), ("posterior_low", "low"), ("posterior_high", "high"))}
        values.update({f"probability_best_{arm}": p for arm, p in (b.get("probability_best") or {}).items()})
        values.update({f"labelled_{arm}": n for arm, n in (b.get("labelled") or {}).items()})
        values.update({f"weight_{arm}": w for arm, w in (b.get("weights") or {}).items()})
        values["moved_share"] = b.get("moved_share")
        return [Metric(k, float(v), at_ms, 0) for k, v in values.items() if isinstance(v, int | float)]
    values: dict[str, Any] = {"rollout_step": details.get("step"), "candidate_weight": details.get("candidate_weight")}
    for name, g in (details.get("guardrails") or {}).items():
        low, high = (g.get("interval") or [None, None])[:2]
        values.update({f"{name}_estimate": g.get("estimate"), f"{name}_low": low, f"{name}_high": high,
                       f"{name}_p_value": g.get("p_value"), f"{name}_breached": float(bool(g.get("breached")))})
    return [Metric(k, float(v), at_ms, 0) for k, v in values.items() if isinstance(v, int | float)]
