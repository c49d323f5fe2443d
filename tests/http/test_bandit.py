from __future__ import annotations

import time
from pathlib import Path

from tests.harness.app_client import make_client, wait_ready

FEATURES = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_bandit_endpoints_and_the_logged_assignment_probability(tmp_path: Path, local_models: dict[str, str]) -> None:
    from gateway.spool.store import PredictionSpool

    with make_client(tmp_path, local_models, routing={"mode": "bandit"}, bandit={"burn_in": 5}) as c:
        wait_ready(c)
        for _ in range(200):  # the loop's first round runs at once, in its own thread
            body = c.get("/bandit").json()
            if body["phase"] is not None:
                break
            time.sleep(0.05)
        assert body["phase"] == "burn_in" and body["reweighs_here"] in (True, False)
        assert {a: arm["weight"] for a, arm in body["arms"].items()} == {"v1.0": 0.5, "v2.0": 0.5}
        assert c.get("/variants").json()["bandit"]["reward"] == "correct"
        assert 'gateway_bandit_weight{variant="v1.0"} 0.5' in c.get("/metrics").text
        rid = c.post("/predict", json=FEATURES).json()["request_id"]
        forced = c.post("/predict", json=FEATURES, headers={"X-Model-Version": "v2.0"}).json()["request_id"]
    spool = PredictionSpool(tmp_path / "spool")
    first = spool.find(rid, "primary", 0)
    assert first.assignment_probability == 0.5 and first.weights_version >= 1
    assert spool.find(forced, "primary", 0).assignment_probability == 1.0


def test_a_reward_that_does_not_fit_the_model_stops_start_up(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, routing={"mode": "bandit"},
                     bandit={"reward": "negative_abs_error"}) as c:
        for _ in range(200):
            r = c.get("/readyz")
            if "bandit.reward" in r.text:
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "'negative_abs_error' needs a regressor, the model is a classifier" in r.text


def test_no_bandit_is_a_404(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models) as c:
        r = c.get("/bandit")
        assert r.status_code == 404 and "not \"bandit\"" in r.json()["message"]
