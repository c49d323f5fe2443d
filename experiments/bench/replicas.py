"""Gateway replicas on one machine, for real: PostgreSQL as MLflow's store, `mlflow server`, three
gateway processes with their own spools and the routing state shared in MLflow, HAProxy (Debian) in
front of them, Prometheus scraping all three, and the standalone rollout controller.

    python -m experiments.bench.replicas [--workdir DIR] [--json FILE]      (make replicas)

runs three scenarios and prints what it measured:
1. a weight change through one replica: when each replica applied it, and the shares seen through
   the load balancer;
2. SIGKILL of one replica under load: the load balancer fails over, the replica restarts on its
   spool, and every answered request is in MLflow exactly once;
3. a rollout of a degraded candidate, decided by `python -m gateway.rollout` from the replicas'
   counts summed in Prometheus: rolled back on all three;
4. the same on the accuracy guardrail alone, with feedback sent through the load balancer (so most
   labels reach a replica that did not answer): accuracy read from the labels in MLflow.
The integration test (tests/integration/test_replicas.py) runs the same scenarios and asserts on them.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from experiments.bench.replica_stack import AUTH, CANDIDATE, ROWS, Load, ReplicaStack, weights_of
from stack.processes import (
    runs_by_request,
)

# -- the scenarios --------------------------------------------------------------------------------------

def convergence(stack: ReplicaStack, shares_n: int = 1000) -> dict[str, Any]:
    """Weights v1.0=1 through replica 0; when each replica applied them; the last v2.0 answer seen
    through the load balancer; then 0.2/0.8 and the shares of the next ``shares_n`` answers after 5 s."""
    target = {"v1.0": 1.0, "v2.0": 0.0, CANDIDATE: 0.0}
    applied: dict[str, float] = {}
    with Load(stack.lb_url) as load:
        time.sleep(1.5)
        before = Counter(a.variant for a in load.since(0) if a.status == 200)
        r = httpx.put(stack.gateways[0].url + "/admin/routing", json={"weights": target}, headers=AUTH, timeout=30)
        r.raise_for_status()
        t0 = time.monotonic()
        pending = {f"replica-{i}": gw.url for i, gw in enumerate(stack.gateways)}
        while pending and time.monotonic() - t0 < 30:
            for name, url in list(pending.items()):
                if weights_of(url) == target:
                    applied[name] = round(time.monotonic() - t0, 3)
                    del pending[name]
            time.sleep(0.05)
        time.sleep(max(0.0, 6.0 - (time.monotonic() - t0)))
    after = load.since(t0)
    old = [a.at - t0 for a in after if a.status == 200 and a.variant == "v2.0"]
    settled = [a for a in after if a.at - t0 >= 5.0 and a.status == 200]
    r = httpx.put(stack.gateways[1].url + "/admin/routing",
                  json={"weights": {"v1.0": 0.2, "v2.0": 0.8, CANDIDATE: 0.0}}, headers=AUTH, timeout=30)
    r.raise_for_status()
    time.sleep(5.0)
    shares = Counter(httpx.post(stack.lb_url + "/predict", json=ROWS[i % 3], timeout=10).json()["model_version"]
                     for i in range(shares_n))
    return {"applied_after_s": applied, "not_applied": sorted(pending),
            "through_lb": {"before_change": dict(before), "answers_after_change": len(after),
                           "v2_answers_after_change": len(old),
                           "last_v2_answer_after_s": round(max(old), 3) if old else 0.0,
                           "answers_after_5s": len(settled),
                           "v2_answers_after_5s": sum(a.variant == "v2.0" for a in settled)},
            "shares_after_0.2_0.8": {k: round(v / shares_n, 3) for k, v in sorted(shares.items())},
            "shares_n": shares_n}


def sigkill(stack: ReplicaStack, seconds: float = 12.0, down_s: float = 2.0) -> dict[str, Any]:
    """Load through the balancer; SIGKILL replica 1 a third of the way in; restart it on its spool."""
    victim = stack.gateways[1]
    start_ms = int(time.time() * 1000)
    with Load(stack.lb_url) as load:
        time.sleep(seconds / 3)
        victim.send_signal(signal.SIGKILL)
        assert victim.proc is not None
        victim.proc.wait()
        killed_at = time.monotonic()
        time.sleep(down_s)
        victim.stop()
        victim.start(wait_ready=True)
        restarted_after = time.monotonic() - killed_at
        time.sleep(max(0.0, seconds - (time.monotonic() - killed_at) - seconds / 3))
    answers = load.answers
    ok = [a for a in answers if a.status == 200]
    errors = Counter(str(a.status) for a in answers if a.status != 200) + load.failures
    return {"answers": len(answers), "ok": len(ok), "errors": dict(errors),
            "restarted_after_s": round(restarted_after, 2),
            "ok_request_ids": [a.request_id for a in ok], "between_ms": (start_ms, int(time.time() * 1000))}


def in_mlflow(stack: ReplicaStack, request_ids: list[str], between_ms: tuple[int, int],
              timeout: float = 300) -> dict[str, Any]:
    """Wait until every replica's spool is drained, then count each answered request's primary
    records in MLflow (window tables or per-prediction runs, as the stack logs them); records made
    in the same time span that answer no 200 (the load balancer's client saw an error) are counted
    apart."""
    deadline = time.monotonic() + timeout
    for gw in stack.gateways:
        while True:
            backlog = httpx.get(gw.url + "/stats", timeout=10).json()["spool"]["backlog"]
            if backlog == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gw.url}: spool not drained ({backlog} left)")
            time.sleep(0.5)
    assert stack.mlflow is not None
    logged: Counter[str] = Counter()
    if stack.granularity == "window":
        import mlflow

        from gateway.mlflow.readback import search_all, window_records

        mlflow.set_tracking_uri(stack.mlflow.url)
        experiment = mlflow.get_experiment_by_name("iris-flower-prediction")
        assert experiment is not None
        runs = search_all([experiment.experiment_id], "tags.granularity = 'window'")
        records = window_records(runs, stack.mlflow.url)
        primary = records[(records["role"] == "primary") & records["ts_ms"].between(*between_ms)]
        logged.update(primary["request_id"])
    else:
        for (rid, role), found in runs_by_request(stack.mlflow.url).items():
            if role == "primary" and any(between_ms[0] <= r.info.start_time <= between_ms[1] for r in found):
                logged[rid] += len(found)
    counts = Counter(logged.get(rid, 0) for rid in request_ids)
    answered = set(request_ids)
    return {"answered": len(request_ids), "exactly_once": counts.get(1, 0), "missing": counts.get(0, 0),
            "duplicated": sum(n for k, n in counts.items() if k > 1),
            "logged_but_not_answered": sum(1 for rid in logged if rid not in answered)}


def rollback(stack: ReplicaStack, timeout: float = 120) -> dict[str, Any]:
    """A rollout of the constant candidate with the disagreement guardrail, started through replica 2;
    the standalone controller decides from Prometheus; every replica must end rolled back."""
    spec = {"control": "v1.0", "candidate": CANDIDATE, "steps": [0.2, 0.5, 1.0], "min_samples": 5000,
            "guardrails": {"disagreement": {"enabled": True, "max_rate": 0.2, "shadow_sample_rate": 0.5}}}
    r = httpx.post(stack.gateways[2].url + "/admin/rollout", json=spec, headers=AUTH, timeout=30)
    r.raise_for_status()
    rollout_id = r.json()["rollout_id"]
    t0 = time.monotonic()
    rolled_back: dict[str, float] = {}
    with Load(stack.lb_url) as load:
        while len(rolled_back) < len(stack.gateways) and time.monotonic() - t0 < timeout:
            for i, gw in enumerate(stack.gateways):
                name = f"replica-{i}"
                if name not in rolled_back:
                    state = httpx.get(gw.url + "/rollout", timeout=5).json()
                    if state.get("state") == "rolled_back" and weights_of(gw.url).get(CANDIDATE) == 0.0:
                        rolled_back[name] = round(time.monotonic() - t0, 3)
            time.sleep(0.2)
        done = time.monotonic()
        time.sleep(3.0)
    during = [a for a in load.answers if a.at < done and a.status == 200]
    after = [a for a in load.since(done + 1.0) if a.status == 200]
    final = httpx.get(stack.gateways[0].url + "/rollout", timeout=5).json()
    decision = next((h for h in reversed(final.get("history", [])) if h.get("decision") == "rollback"), {})
    return {"rollout_id": rollout_id, "state": final.get("state"), "rolled_back_after_s": rolled_back,
            "reason": decision.get("reason"), "by": decision.get("by"),
            "disagreement": final.get("guardrails", {}).get("disagreement"),
            "candidate_answers_before_rollback": sum(a.variant == CANDIDATE for a in during),
            "answers_before_rollback": len(during),
            "candidate_answers_after_rollback": sum(a.variant == CANDIDATE for a in after),
            "answers_after_rollback": len(after)}


def accuracy_rollback(stack: ReplicaStack, timeout: float = 180) -> dict[str, Any]:
    """The same constant candidate with the accuracy guardrail only, feedback sent through the load
    balancer (so mostly to replicas that did not answer): the controller reads accuracy from the labels
    in MLflow and rolls back on every replica."""
    spec = {"control": "v1.0", "candidate": CANDIDATE, "steps": [0.5, 1.0], "min_samples": 100_000,
            "max_samples": 100_000,
            "guardrails": {"accuracy": {"enabled": True, "max_drop": 0.0},
                           "latency_p95": {"enabled": False}, "error_rate": {"enabled": False},
                           "disagreement": {"enabled": False}}}
    r = httpx.post(stack.gateways[0].url + "/admin/rollout", json=spec, headers=AUTH, timeout=30)
    r.raise_for_status()
    rollout_id = r.json()["rollout_id"]
    t0 = time.monotonic()
    rolled_back: dict[str, float] = {}
    with Load(stack.lb_url, clients=2, feedback=True) as load:
        while len(rolled_back) < len(stack.gateways) and time.monotonic() - t0 < timeout:
            for i, gw in enumerate(stack.gateways):
                if f"replica-{i}" not in rolled_back and httpx.get(gw.url + "/rollout", timeout=5).json().get(
                        "state") == "rolled_back":
                    rolled_back[f"replica-{i}"] = round(time.monotonic() - t0, 3)
            time.sleep(0.5)
    final = httpx.get(stack.gateways[1].url + "/rollout", timeout=5).json()
    decision = next((h for h in reversed(final.get("history", [])) if h.get("decision") == "rollback"), {})
    return {"rollout_id": rollout_id, "state": final.get("state"), "rolled_back_after_s": rolled_back,
            "reason": decision.get("reason"), "by": decision.get("by"),
            "accuracy": final.get("guardrails", {}).get("accuracy"), "labels_sent": dict(load.labels),
            "answers": len(load.answers)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.replicas", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where logs and data go (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gateway-replicas-"))
    print(f"starting PostgreSQL-backed MLflow, 3 gateways, HAProxy, Prometheus and the controller in {workdir}")
    report: dict[str, Any] = {}
    with ReplicaStack(workdir) as stack:
        print(f"load balancer {stack.lb_url}, Prometheus {stack.prometheus_url}")
        report["convergence"] = convergence(stack)
        print("1. weight change through replica 0:", json.dumps(report["convergence"], indent=2))
        killed = sigkill(stack)
        ids, between = killed.pop("ok_request_ids"), killed.pop("between_ms")
        report["sigkill"] = {**killed, "mlflow": in_mlflow(stack, ids, between)}
        print("2. SIGKILL of replica 1 under load:", json.dumps(report["sigkill"], indent=2))
        report["rollback"] = rollback(stack)
        print("3. degraded candidate:", json.dumps(report["rollback"], indent=2))
        report["accuracy_rollback"] = accuracy_rollback(stack)
        print("4. degraded candidate, accuracy from feedback in MLflow:",
              json.dumps(report["accuracy_rollback"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
