"""The decision loop against an outsider, with a real MLflow and gateway: the shapes of the attacks of
issue 33, each of which moved a decision before. A client without a credential cannot flip a bandit
or promote a worse candidate; a client with receipts for its own answers labels them, but a request
of a thousand rows weighs as one unit; sticky ids crafted with the shipped salt pause a rollout as
"results suspect" and never roll it back."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from gateway.routing.router import bucket
from stack.processes import FEEDBACK_AUTH, GatewayProcess, MlflowServer, register_constant_model

pytestmark = pytest.mark.integration
CLASSES = ["Setosa", "Versicolor", "Virginica"]
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ADMIN = {"Authorization": "Bearer tok"}
# The per-client rate is tested in-process; here it is out of the way, so that only the unit bound holds.
FAST = {"client_limit": "100000/second"}


@pytest.fixture(scope="module")
def constant_model(mlflow_server: MlflowServer) -> str:
    """Always class 0 (Setosa): right a third of the time on iris, the worse arm."""
    return register_constant_model(mlflow_server.url)


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target


def _row(x: np.ndarray) -> dict[str, float]:
    return dict(zip(NAMES, map(float, x), strict=True))


def _lie(version: str, favoured: str, prediction: str) -> str:
    """The attacker's label: right for the version it favours, wrong for any other."""
    return prediction if version == favoured else next(c for c in CLASSES if c != prediction)


def _attack_anonymously(http: httpx.Client, rows: np.ndarray, favoured: str, n: int) -> list[int]:
    """Predictions with one's own request ids, then labels without any credential: statuses seen."""
    statuses = []
    for i in range(n):
        r = http.post("/predict", json=_row(rows[i % len(rows)]), headers={"X-Request-ID": f"attacker-{i}"})
        label = _lie(r.json()["model_version"], favoured, r.json()["prediction"])
        statuses.append(http.post("/feedback", json={"request_id": f"attacker-{i}", "true_label": label}).status_code)
    return statuses


def _attack_with_receipts(http: httpx.Client, rows: np.ndarray, favoured: str, requests: int,
                          labelled: int = 300) -> dict[str, int]:
    """Requests of 1,000 rows, their first ``labelled`` rows labelled with the answer's own receipt:
    {version: requests}."""
    batch = [_row(rows[i % len(rows)]) for i in range(1000)]
    served: dict[str, int] = {}
    for _ in range(requests):
        r = http.post("/predict", json=batch)
        version, receipt, rid = r.json()["model_version"], r.headers["x-feedback-receipt"], r.json()["request_id"]
        served[version] = served.get(version, 0) + 1
        for k, p in enumerate(r.json()["predictions"][:labelled]):
            fb = http.post("/feedback", json={"request_id": rid, "row_index": k, "receipt": receipt,
                                              "true_label": _lie(version, favoured, p["prediction"])})
            assert fb.status_code == 202 and fb.json()["counted"] is (k == 0), fb.text
    return served


def test_a_bandit_is_not_flipped_by_a_stranger_nor_outweighed_by_one_client(
        start_gateway: Callable[..., GatewayProcess], constant_model: str, iris: tuple[np.ndarray, np.ndarray]) -> None:
    rows, truth = iris
    gw = start_gateway(name="bandit-attack", spool={"export": False}, routing={"mode": "bandit"}, feedback=FAST,
                       variants=[{"name": "v2.0", "model_uri": "models:/IrisClassifier/2"},
                                 {"name": "const", "model_uri": constant_model}],
                       model={"class_names": CLASSES},
                       bandit={"update_seconds": 0.5, "burn_in": 30, "min_share": 0.05, "draws": 2000})
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        statuses = _attack_anonymously(http, rows, "const", 120)
        assert set(statuses) == {401}
        time.sleep(1.5)
        arms = http.get("/bandit").json()["arms"]
        assert {a: s["labelled"] for a, s in arms.items()} == {"v2.0": 0, "const": 0}
        assert {a: s["weight"] for a, s in arms.items()} == {"v2.0": 0.5, "const": 0.5}
        attacked = _attack_with_receipts(http, rows, "const", 4)  # 1,200 labels, 4 units
        honest: dict[str, int] = {}
        order = np.random.default_rng(3).permutation(150)
        for i in range(240):  # a label pipeline with the truth, one request at a time
            x = order[i % 150]
            r = http.post("/predict", json=_row(rows[x]))
            honest[r.json()["model_version"]] = honest.get(r.json()["model_version"], 0) + 1
            assert http.post("/feedback", json={"request_id": r.json()["request_id"],
                                                "true_label": CLASSES[int(truth[x])]},
                             headers=FEEDBACK_AUTH).status_code == 202
        expected = {arm: honest.get(arm, 0) + attacked.get(arm, 0) for arm in ("v2.0", "const")}
        deadline = time.monotonic() + 30  # until the bandit has read every label stored
        while time.monotonic() < deadline:
            bandit = http.get("/bandit").json()
            if {a: s["labelled"] for a, s in bandit["arms"].items()} == expected:
                break
            time.sleep(0.5)
    arms = bandit["arms"]
    print(f"\nbandit after 120 anonymous labels (all 401), 1,200 labels on {attacked} 1,000-row requests with "
          f"receipts, 240 honest: {({a: (s['weight'], s['labelled'], s['posterior_mean']) for a, s in arms.items()})}")
    assert arms["v2.0"]["weight"] >= 0.9 and arms["const"]["weight"] <= 0.1
    # Every honest request a unit, and each of the attacker's requests one more (not a thousand).
    assert {a: s["labelled"] for a, s in arms.items()} == expected


def test_a_worse_candidate_is_not_promoted_by_labels_and_crafted_ids_only_pause_it(
        start_gateway: Callable[..., GatewayProcess], constant_model: str, iris: tuple[np.ndarray, np.ndarray]) -> None:
    rows, _ = iris
    gw = start_gateway(name="rollout-attack", spool={"export": False}, env={"GATEWAY_ADMIN_TOKEN": "tok"},
                       feedback=FAST, rollout={"interval_seconds": 0.2},
                       variants=[{"name": "v2.0", "model_uri": "models:/IrisClassifier/2", "weight": 1.0},
                                 {"name": "const", "model_uri": constant_model, "weight": 0.0}],
                       model={"class_names": CLASSES})
    r = httpx.post(gw.url + "/admin/rollout", headers=ADMIN, json={
        "control": "v2.0", "candidate": "const", "steps": [0.5, 1.0], "min_samples": 100,
        "guardrails": {"accuracy": {"max_drop": 0.02}, "latency_p95": {"require": "not_breached"}}})
    assert r.status_code == 201, r.text
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        assert set(_attack_anonymously(http, rows, "const", 200)) == {401}
        attacked = _attack_with_receipts(http, rows, "const", 3)  # 900 labels, 3 units
        time.sleep(1.0)
        state = http.get("/rollout").json()
        accuracy = state["guardrails"]["accuracy"]
        print(f"\nrollout after 200 anonymous labels and 900 with receipts on {attacked}: {state['state']} "
              f"step {state['step']}, accuracy n {accuracy['n']} interval {accuracy['interval']}")
        assert state["state"] == "running" and state["candidate_weight"] == 0.5, "not promoted"
        assert accuracy["n"]["candidate"] <= attacked.get("const", 0) and not accuracy["cleared"]
        # Sticky ids chosen offline, with the shipped salt, to land on the candidate at 50%.
        crafted = [f"crafted-{i}" for i in range(5000) if bucket("iris-ab", f"crafted-{i}") >= 0.5][:150]
        for user in crafted:
            assert http.post("/predict", json=_row(rows[0]), headers={"X-User-ID": user}).json()[
                "model_version"] == "const"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and state["state"] == "running":
            time.sleep(0.3)
            state = http.get("/rollout").json()
    last = state["history"][-1]
    print(f"after {len(crafted)} crafted sticky ids: {state['state']}, {last['decision']}: {last['reason'][:160]}")
    assert state["state"] == "paused" and last["decision"] == "suspect" and "results suspect" in last["reason"]
    assert state["candidate_weight"] == 0.5 and httpx.get(gw.url + "/variants").json()["weights"] == {
        "v2.0": 0.5, "const": 0.5}, "paused where it was, not rolled back"
