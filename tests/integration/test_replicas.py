"""Replicas on one machine, for real (experiments/replicas.py): PostgreSQL as MLflow's store, the MLflow
server, three gateway processes with their own spools and the routing state in MLflow, HAProxy in
front, Prometheus scraping all three, and `python -m gateway.rollout` deciding for all of them.
One stack for the module; the tests run in order (a weight change, a SIGKILL, a rollback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from experiments.bench.replica_stack import CANDIDATE, ReplicaStack
from experiments.bench.replicas import (
    accuracy_rollback,
    convergence,
    in_mlflow,
    rollback,
    sigkill,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaStack]:
    with ReplicaStack(Path(tmp_path_factory.mktemp("replicas"))) as s:
        yield s


def test_a_weight_change_through_one_replica_reaches_all_three_within_5s(stack: ReplicaStack) -> None:
    result = convergence(stack, shares_n=600)
    print("convergence:", json.dumps(result))
    assert result["not_applied"] == []
    assert all(t < 5.0 for t in result["applied_after_s"].values()), result["applied_after_s"]
    lb = result["through_lb"]
    assert lb["last_v2_answer_after_s"] < 5.0
    assert lb["answers_after_5s"] > 0 and lb["v2_answers_after_5s"] == 0
    assert set(lb["before_change"]) == {"v1.0", "v2.0"}  # the load balancer spread traffic before
    shares = result["shares_after_0.2_0.8"]
    assert abs(shares["v2.0"] - 0.8) < 0.06 and abs(shares.get("v1.0", 0) - 0.2) < 0.06  # 3.7 sd at n = 600
    # Every replica serves the same routing, and says where it comes from.
    hashes = {httpx.get(gw.url + "/variants").json()["config_hash"] for gw in stack.gateways}
    assert len(hashes) == 1
    ready = httpx.get(stack.gateways[0].url + "/readyz").json()
    assert ready["shared_state"]["backend"] == "mlflow" and ready["shared_state"]["reachable"] is True
    metrics = httpx.get(stack.gateways[2].url + "/metrics").text
    assert 'gateway_shared_state_reachable{backend="mlflow"} 1.0' in metrics


def test_sigkill_of_a_replica_under_load_loses_and_duplicates_nothing(stack: ReplicaStack) -> None:
    result = sigkill(stack, seconds=9.0)
    ids, between = result.pop("ok_request_ids"), result.pop("between_ms")
    result["mlflow"] = in_mlflow(stack, ids, between)
    print("sigkill:", json.dumps(result))
    assert result["ok"] > 500
    logged = result["mlflow"]
    assert logged["missing"] == 0 and logged["duplicated"] == 0
    assert logged["exactly_once"] == result["ok"] == len(ids)
    # Only requests in flight at the moment of the kill fail; HAProxy sends the rest elsewhere.
    assert sum(result["errors"].values()) <= 20, result["errors"]
    assert httpx.get(stack.gateways[1].url + "/readyz").status_code == 200


def test_the_controller_rolls_back_a_degraded_candidate_on_every_replica(stack: ReplicaStack) -> None:
    result = rollback(stack)
    print("rollback:", json.dumps(result))
    assert result["state"] == "rolled_back" and result["by"] == "controller"
    assert len(result["rolled_back_after_s"]) == 3
    assert "disagreement" in result["reason"]
    assert result["disagreement"]["breached"] is True
    assert result["candidate_answers_after_rollback"] == 0 and result["answers_after_rollback"] > 0
    for gw in stack.gateways:
        assert httpx.get(gw.url + "/variants").json()["weights"][CANDIDATE] == 0.0
    # The controller's decision came from the replicas' counts summed in Prometheus.
    controller = httpx.get(f"http://127.0.0.1:{stack.controller_port}/metrics").text
    assert "gateway_rollout_controller_looks_total" in controller
    breached = next(line for line in controller.splitlines()
                    if line.startswith("gateway_rollout_guardrail_breached{") and 'guardrail="disagreement"' in line)
    assert breached.endswith(" 1.0")


def test_feedback_through_the_load_balancer_rolls_back_on_accuracy_read_from_mlflow(stack: ReplicaStack) -> None:
    result = accuracy_rollback(stack)
    print("accuracy rollback:", json.dumps(result))
    labels = result["labels_sent"]
    assert labels.get("remote", 0) > 0 and labels.get("local", 0) > 0  # no 404: every replica took them
    assert set(labels) <= {"remote", "local"}, labels
    assert result["state"] == "rolled_back" and result["by"] == "controller"
    assert len(result["rolled_back_after_s"]) == 3
    assert "accuracy" in result["reason"]
    accuracy = result["accuracy"]
    assert accuracy["breached"] is True and accuracy["estimate"] < -0.3
    assert accuracy["n"]["candidate"] > 0 and accuracy["n"]["control"] > 0
