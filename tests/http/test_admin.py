"""Live routing changes: auth, validation, atomic application, and what the traffic then sees."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.spool.store import PredictionSpool
from stack.iris import FEATURES
from tests.harness.app_client import AUTH, TOKEN


def test_admin_is_off_without_a_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    r = client.put("/admin/routing", json={"weights": {"v1.0": 1}}, headers=AUTH)
    assert r.status_code == 404 and "GATEWAY_ADMIN_TOKEN" in r.json()["message"]


def test_a_blank_token_turns_the_admin_api_off(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", " ")
    r = client.put("/admin/routing", json={"weights": {"v1.0": 1}}, headers={"Authorization": "Bearer  "})
    assert r.status_code == 404 and "admin API is off" in r.json()["message"]
    assert client.get("/variants").json()["weights"] == {"v1.0": 0.5, "v2.0": 0.5}


def test_missing_and_wrong_tokens(admin_client: TestClient) -> None:
    assert admin_client.put("/admin/routing", json={}).status_code == 401
    assert admin_client.put("/admin/routing", json={}, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert admin_client.put("/admin/routing", json={}, headers={"Authorization": TOKEN}).status_code == 401
    assert admin_client.post("/admin/promote", json={"variant": "v2.0"}).status_code == 401


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"weights": {"v1.0": -1}}, "weight"),
        ({"weights": {"v1.0": 0, "v2.0": 0}}, "variants.weight"),
        ({"weights": {"v3.0": 1}}, "unknown variant"),
        ({"mode": "canary"}, "mode"),
        ({"mode": "shadow", "shadow": {"candidate": "v1.0"}}, "shadow.candidate"),
        ({"shadow": {"sample_rate": 2}}, "sample_rate"),
    ],
)
def test_invalid_changes_are_refused_and_change_nothing(admin_client: TestClient, body: dict, key: str) -> None:  # type: ignore[type-arg]
    before = admin_client.get("/variants").json()["config_hash"]
    r = admin_client.put("/admin/routing", json=body, headers=AUTH)
    assert r.status_code == 422 and key in r.text, r.text
    assert admin_client.get("/variants").json()["config_hash"] == before


def test_weight_change_shows_in_traffic_and_config_hash(admin_client: TestClient, tmp_path: Path) -> None:
    old_hash = admin_client.get("/variants").json()["config_hash"]
    r = admin_client.put("/admin/routing", json={"weights": {"v1.0": 0.9, "v2.0": 0.1}}, headers=AUTH)
    assert r.status_code == 200 and r.json()["weights"] == {"v1.0": 0.9, "v2.0": 0.1}
    new_hash = r.json()["config_hash"]
    assert new_hash != old_hash and r.json()["old_config_hash"] == old_hash
    seen = Counter(admin_client.post("/predict", json=FEATURES).json()["model_version"] for _ in range(400))
    assert 0.84 < seen["v1.0"] / 400 < 0.96, seen
    spool = PredictionSpool(tmp_path / "spool")
    rid = admin_client.post("/predict", json=FEATURES).json()["request_id"]
    rec = spool.find(rid)
    assert rec is not None and rec.config_hash == new_hash and rec.weights == "v1.0=0.9,v2.0=0.1"
    # Shadow mode switched on live.
    r = admin_client.put("/admin/routing", json={"mode": "shadow"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["mode"] == "shadow"
    assert admin_client.post("/predict", json=FEATURES).headers["X-Routing-Reason"] == "shadow"


def test_promote_sends_all_traffic_to_one_variant(admin_client: TestClient) -> None:
    r = admin_client.post("/admin/promote", json={"variant": "v2.0"}, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["routing"]["weights"] == {"v1.0": 0.0, "v2.0": 1.0}
    assert r.json()["registry"]["moved"] is False  # local model files: no registry alias to move
    assert {admin_client.post("/predict", json=FEATURES).json()["model_version"] for _ in range(50)} == {"v2.0"}
    assert admin_client.post("/admin/promote", json={"variant": "v9"}, headers=AUTH).status_code == 400
