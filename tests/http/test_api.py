"""The HTTP contract, through the app factory in-process, with local model files and no MLflow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.security.pseudonyms import Pseudonyms
from gateway.spool.store import PredictionSpool
from stack.iris import FEATURES, FORM, IRIS_MODEL, SEED_FORM
from tests.harness.app_client import FEEDBACK_AUTH, make_client, wait_ready
from tests.harness.strategies import bad_values, iris_values


def test_seed_form_call(client: TestClient) -> None:
    r = client.post("/predict", content=SEED_FORM, headers=FORM)
    assert r.status_code == 200
    body = r.json()
    assert body["prediction"] == "Setosa" and body["prediction_class"] == 0
    assert body["model_version"] in ("v1.0", "v2.0")
    assert r.headers["X-Model-Version"] == body["model_version"]
    assert r.headers["X-Request-ID"] == body["request_id"]
    assert r.headers["X-Routing-Reason"] == "weighted"


def test_json_sent_as_curl_d_sends_it_without_a_content_type_is_read_as_json(client: TestClient) -> None:
    """curl -d '{...}' labels the body a form; a form field never starts with a brace."""
    import json

    for body in (json.dumps(FEATURES), " " + json.dumps([FEATURES, FEATURES])):
        r = client.post("/predict", content=body, headers=FORM)
        assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["prediction"] == "Setosa"


def test_json_and_query_string(client: TestClient) -> None:
    assert client.post("/predict", json=FEATURES).json()["prediction"] == "Setosa"
    r = client.post("/predict", params=FEATURES)
    assert r.status_code == 200 and r.json()["prediction"] == "Setosa"


def test_forced_version_and_request_id_echo(client: TestClient) -> None:
    r = client.post("/predict", json=FEATURES, headers={"X-Model-Version": "v2.0", "X-Request-ID": "abc-123"})
    assert r.status_code == 200
    assert r.json()["model_version"] == "v2.0" and r.headers["X-Routing-Reason"] == "forced"
    assert r.headers["X-Request-ID"] == "abc-123" == r.json()["request_id"]


def test_unknown_forced_version_lists_valid(client: TestClient) -> None:
    r = client.post("/predict", json=FEATURES, headers={"X-Model-Version": "v3.0"})
    assert r.status_code == 400
    assert r.json()["valid"] == ["v1.0", "v2.0"] and "v1.0, v2.0" in r.json()["message"]


def test_sticky_user_keeps_version(client: TestClient) -> None:
    seen = {u: {client.post("/predict", json=FEATURES, headers={"X-User-ID": u}).json()["model_version"]
                for _ in range(5)} for u in ("alice", "bob", "carol", "dave", "erin", "frank")}
    assert all(len(v) == 1 for v in seen.values())
    r = client.post("/predict", json=FEATURES, headers={"X-User-ID": "alice"})
    assert r.headers["X-Routing-Reason"] == "sticky"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in FEATURES.items() if k != "petal_width"}, "petal_width"),
        ({**FEATURES, "sepal_length": "long"}, "sepal_length"),
        ({**FEATURES, "sepal_width": "NaN"}, "sepal_width"),
        ({**FEATURES, "petal_length": "inf"}, "petal_length"),
        ({**FEATURES, "petal_length": "-Infinity"}, "petal_length"),
        ({**FEATURES, "petal_width": 0}, "petal_width"),
        ({**FEATURES, "petal_width": 100.01}, "petal_width"),
        ({**FEATURES, "sepal_length": None}, "sepal_length"),
    ],
)
def test_bad_input_names_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]]
    assert field in r.json()["message"]


def test_json_nan_literal_and_form_nan(client: TestClient) -> None:
    r = client.post("/predict", content='{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, '
                    '"petal_width": Infinity}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} == {"sepal_length", "petal_width"}
    r = client.post("/predict", content=SEED_FORM.replace("5.1", "nan"), headers=FORM)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "sepal_length"


@pytest.mark.parametrize(
    ("content", "ctype", "status"),
    [
        ('{"sepal_length": 5.1,', "application/json", 400),
        ("[1, 2, 3, 4]", "application/json", 422),
        ('"just a string"', "application/json", 422),
        (b"\xff\xfe\x00", "application/json", 400),
        ("<xml/>", "application/xml", 400),
        ("", "application/json", 422),
    ],
)
def test_malformed_bodies_never_500(client: TestClient, content: Any, ctype: str, status: int) -> None:
    r = client.post("/predict", content=content, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    assert "message" in r.json()


def test_bad_request_id_rejected(client: TestClient) -> None:
    r = client.post("/predict", json=FEATURES, headers={"X-Request-ID": "x" * 200})
    assert r.status_code == 400 and "X-Request-ID" in r.json()["message"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({k: st.one_of(iris_values, bad_values) for k in FEATURES}))
def test_any_input_is_answered_200_or_422(client: TestClient, values: dict[str, Any]) -> None:
    form = "&".join(f"{k}={v}" for k, v in values.items())
    r = client.post("/predict", content=form, headers=FORM)
    assert r.status_code in (200, 422), r.text


def test_service_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    variants = client.get("/variants").json()
    assert variants["mode"] == "weighted" and variants["weights"] == {"v1.0": 0.5, "v2.0": 0.5}
    assert len(variants["config_hash"]) == 12
    assert [v["name"] for v in variants["variants"]] == ["v1.0", "v2.0"]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(body)
    assert client.get("/docs").status_code == 200


def test_every_answer_is_in_the_spool_before_the_response(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        spool = PredictionSpool(tmp_path / "spool")
        for _ in range(20):
            r = c.post("/predict", json=FEATURES)
            assert r.status_code == 200
            rec = spool.find(r.json()["request_id"])  # already there when the response arrives
            assert rec is not None and rec.model_version == r.json()["model_version"]
            assert rec.prediction == r.json()["prediction"] and rec.routing == "weighted"
            assert rec.features == FEATURES
        assert spool.count() == 20


def test_retry_with_same_request_id_is_idempotent(client: TestClient) -> None:
    h = {"X-Request-ID": "retry-1"}
    first = client.post("/predict", json=FEATURES, headers=h)
    again = client.post("/predict", json=FEATURES, headers=h)
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["X-Idempotent-Replay"] == "true"
    other = client.post("/predict", json={**FEATURES, "sepal_length": 6.0}, headers=h)
    assert other.status_code == 409


def test_shadow_mode_scores_candidate_after_response(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, routing={"mode": "shadow"}) as c:
        wait_ready(c)
        ids = []
        for _ in range(10):
            r = c.post("/predict", json=FEATURES)
            assert r.json()["model_version"] == "v1.0" and r.headers["X-Routing-Reason"] == "shadow"
            ids.append(r.json()["request_id"])
        spool = PredictionSpool(tmp_path / "spool")
        for _ in range(100):
            if spool.count() == 20:
                break
            time.sleep(0.05)
        shadows = [spool.find(i, "shadow") for i in ids]
        assert all(s is not None and s.model_version == "v2.0" for s in shadows)


def test_failing_candidate_never_touches_primary(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, routing={"mode": "shadow"}) as c:
        wait_ready(c)
        services = c.app.state.services  # type: ignore[attr-defined]

        class Broken:
            def predict(self, x: Any) -> Any:
                raise RuntimeError("candidate exploded")

        services.variants["v2.0"].model = Broken()
        for _ in range(5):
            assert c.post("/predict", json=FEATURES).status_code == 200
        for _ in range(100):
            if services.counts.snapshot().get("shadow_failed") == 5:
                break
            time.sleep(0.05)
        counts = services.counts.snapshot()
        assert counts["shadow_failed"] == 5 and counts["served"] == 5


def test_a_model_error_names_the_variant_and_request_not_the_models_message(
        tmp_path: Path, local_models: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    with make_client(tmp_path, local_models) as c:
        wait_ready(c)

        class Broken:
            def predict(self, x: Any) -> Any:
                raise RuntimeError("BOOM reading /secret/path/model.py")

        c.app.state.services.variants["v1.0"].model = Broken()  # type: ignore[attr-defined]
        r = c.post("/predict", json=FEATURES, headers={"X-Model-Version": "v1.0", "X-Request-ID": "req-7"})
    assert r.status_code == 500 and r.json()["variant"] == "v1.0" and r.json()["request_id"] == "req-7"
    assert "req-7" in r.json()["message"] and "BOOM" not in r.text and "/secret" not in r.text
    assert "request req-7: variant v1.0 failed to predict: BOOM reading /secret/path/model.py" in caplog.text


def test_a_poison_row_fails_its_own_request_not_its_batch_mates(tmp_path: Path, local_models: dict[str, str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with make_client(tmp_path, local_models, batching={"max_batch_size": 64, "max_batch_delay_ms": 20}) as c:
        wait_ready(c)
        variant = c.app.state.services.variants["v1.0"]  # type: ignore[attr-defined]
        real = variant.model

        class Poisoned:  # raises on the whole call when any row is the poison (as a model would)
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def predict(self, x: Any) -> Any:
                if (np.asarray(x)[:, 0] == 9.5).any():
                    raise ValueError("poison")
                return real.predict(x)

        variant.model = Poisoned()

        def send(i: int) -> tuple[bool, int]:
            poison = i % 3 == 0
            row = {**FEATURES, "sepal_length": 9.5 if poison else 5.1}
            return poison, c.post("/predict", json=row, headers={"X-Model-Version": "v1.0"}).status_code

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(send, range(90)))
    assert sorted({s for p, s in results if p}) == [500]
    assert sorted({s for p, s in results if not p}) == [200], results  # batch-mates of a poison row got 500


@pytest.mark.parametrize("missing", [float("nan"), None])
def test_an_output_that_is_no_answer_is_a_model_failure_not_a_class(
        tmp_path: Path, local_models: dict[str, str], missing: object) -> None:
    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        variant = c.app.state.services.variants["v1.0"]  # type: ignore[attr-defined]
        real = variant.model

        class Unsure:  # no answer for rows with sepal_length 9.5, as a model with missing outputs gives
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def predict(self, x: Any) -> Any:
                out = real.predict(x).astype(object)
                out[np.asarray(x)[:, 0] == 9.5] = missing
                return out

        variant.model = Unsure()
        forced = {"X-Model-Version": "v1.0"}
        bad = c.post("/predict", json={**FEATURES, "sepal_length": 9.5}, headers=forced)
        good = c.post("/predict", json=FEATURES, headers=forced)
        spool = c.app.state.gateway.spool  # type: ignore[attr-defined]
        logged = [spool.find(r.json().get("request_id", "-")) for r in (bad, good)]
    assert bad.status_code == 500 and "v1.0" in bad.json()["message"], bad.text
    assert good.status_code == 200 and good.json()["prediction"] == "Setosa"
    assert logged[1] is not None and logged[1].prediction == "Setosa"
    assert spool.count() == 1  # nothing was logged for the unanswered row


@pytest.mark.parametrize(("policy", "status"), [("reject", 503), ("serve", 200)])
def test_full_spool_policy(tmp_path: Path, local_models: dict[str, str], policy: str, status: int) -> None:
    with make_client(tmp_path, local_models, spool={"max_size_mb": 0.3, "on_log_failure": policy}) as c:
        wait_ready(c)
        codes = [c.post("/predict", json=FEATURES).status_code for _ in range(1500)]
        assert codes[0] == 200
        assert codes[-1] == status
        stats = c.get("/stats").json()
        if policy == "reject":
            # Everything answered 200 is in the spool; nothing unlogged was served.
            assert stats["spool"]["backlog"] == codes.count(200)
            assert stats["requests"]["rejected_unlogged"] == codes.count(503)
        else:
            assert stats["requests"]["served_unlogged"] > 0
            assert c.post("/predict", json=FEATURES).headers["X-Prediction-Logged"] == "false"


def test_metrics_endpoint_counts_per_variant(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, routing={"mode": "shadow"}) as c:
        wait_ready(c)
        for _ in range(6):
            assert c.post("/predict", json=FEATURES).status_code == 200
        assert c.post("/predict", json={**FEATURES, "petal_width": -1}).status_code == 422
        assert c.post("/predict", json=FEATURES, headers={"X-Model-Version": "nope"}).status_code == 400
        for _ in range(100):
            if c.app.state.services.counts.snapshot().get("shadow_scored") == 6:  # type: ignore[attr-defined]
                break
            time.sleep(0.05)
        text = c.get("/metrics").text
    assert 'gateway_requests_total{reason="shadow",role="primary",status="200",variant="v1.0"} 6.0' in text
    assert 'gateway_requests_total{reason="none",role="primary",status="422",variant="none"} 1.0' in text
    assert 'gateway_requests_total{reason="none",role="primary",status="400",variant="none"} 1.0' in text
    assert 'gateway_predict_latency_seconds_count{role="primary",variant="v1.0"} 6.0' in text
    assert 'gateway_predict_latency_seconds_count{role="shadow",variant="v2.0"} 6.0' in text
    assert 'gateway_predictions_total{prediction="Setosa",role="primary",variant="v1.0"} 6.0' in text
    assert 'gateway_shadow_comparisons_total{agree="true",candidate="v2.0"} 6.0' in text
    assert "gateway_spool_backlog 12.0" in text and "gateway_export_lag_seconds" in text
    assert 'gateway_variant_info{' in text and 'variant="v2.0"' in text


def test_feedback_is_stored_and_validated(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        rid = c.post("/predict", json=FEATURES).json()["request_id"]
        other = c.post("/predict", json=FEATURES).json()["request_id"]
        third = c.post("/predict", json=FEATURES).json()["request_id"]
        r = c.post("/feedback", json={"request_id": rid, "true_label": "setosa"}, headers=FEEDBACK_AUTH)
        assert r.status_code == 202 and r.json()["correct"] is True and r.json()["true_label"] == "Setosa"
        r = c.post("/feedback", json={"request_id": other, "true_label": 2}, headers=FEEDBACK_AUTH)
        assert r.status_code == 202 and r.json()["correct"] is False and r.json()["true_label"] == "Virginica"
        # The first label stands: the same one again is a retry, a different one is refused.
        r = c.post("/feedback", json={"request_id": rid, "true_label": 0}, headers=FEEDBACK_AUTH)
        assert r.status_code == 202 and r.json()["replayed"] is True
        r = c.post("/feedback", json={"request_id": rid, "true_label": "Virginica"}, headers=FEEDBACK_AUTH)
        assert r.status_code == 409 and r.json()["true_label"] == "Setosa"
        r = c.post("/feedback", json={"request_id": rid, "true_label": "tulip"}, headers=FEEDBACK_AUTH)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "true_label"
        assert c.post("/feedback", json={"request_id": rid, "true_label": 7}, headers=FEEDBACK_AUTH).status_code == 422
        r = c.post("/feedback", json={"request_id": "never-seen", "true_label": "Setosa"}, headers=FEEDBACK_AUTH)
        assert r.status_code == 404 and "never-seen" in r.json()["message"]
        assert c.post("/feedback", json={"true_label": "Setosa"}, headers=FEEDBACK_AUTH).status_code == 422
        # A numeric reward (a bandit's reward = "feedback") rides with the label; anything else is a 422.
        for bad in ("lots", True, "NaN", "Infinity", [1]):
            r = c.post("/feedback", json={"request_id": third, "true_label": 0, "reward": bad}, headers=FEEDBACK_AUTH)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reward", bad
        r = c.post("/feedback", content=b'{"request_id": "%s", "true_label": 0, "reward": NaN}' % third.encode(),
                   headers={"content-type": "application/json", **FEEDBACK_AUTH})
        assert r.status_code == 422
        # Outside [bandit] reward_range ([0, 1] by default): one reward of 1e308 would outweigh every other label.
        for far in (2.5, -0.1, 1e308):
            r = c.post("/feedback", json={"request_id": third, "true_label": 0, "reward": far}, headers=FEEDBACK_AUTH)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reward" and "[0, 1]" in r.text, far
        r = c.post("/feedback", json={"request_id": third, "true_label": 0, "reward": 0.5}, headers=FEEDBACK_AUTH)
        assert r.status_code == 202 and r.json()["reward"] == 0.5
        # The same label with another reward is not a retry: 409 says what is stored.
        r = c.post("/feedback", json={"request_id": third, "true_label": 0, "reward": 0.25}, headers=FEEDBACK_AUTH)
        assert r.status_code == 409 and r.json()["reward"] == 0.5 and "reward 0.5" in r.json()["message"]
    spool = PredictionSpool(tmp_path / "spool")
    assert spool.labels.count_open() == 3
    _, (first, second, with_reward) = spool.labels.claim(10)
    assert first.request_id == rid and first.correct is True and second.request_id == other
    assert second.correct is False and first.reward is None and with_reward.reward == 0.5
    assert {first.trust, second.trust, with_reward.trust} == {"token"}


def test_feedback_for_a_prediction_still_in_flight_waits_for_it(tmp_path: Path, local_models: dict[str, str]) -> None:
    """Its prediction is scored but its commit waits (another connection holds the spool's write lock):
    the feedback waits for it rather than answering 404."""
    import sqlite3
    import threading

    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        scorer = c.app.state.services.scorer  # type: ignore[attr-defined]
        other = sqlite3.connect(scorer.writer.spool.path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        pending = scorer.submit([FEATURES], request_id="slow-one")

        def release_then_answer() -> None:
            other.execute("COMMIT")
            scorer.finish(*pending.result(5))

        threading.Timer(0.3, release_then_answer).start()
        r = c.post("/feedback", json={"request_id": "slow-one", "true_label": "Setosa"}, headers=FEEDBACK_AUTH)
        assert r.status_code == 202 and r.json()["correct"] is True


def test_sticky_key_is_hashed_as_utf8(client: TestClient) -> None:
    """A non-ASCII user id arrives as UTF-8 bytes; it must land in the bucket GrowthBook's SDKs give it."""
    router = client.app.state.services.routing.router  # type: ignore[attr-defined]
    users = ["zoë", "Ærøskøbing", "用户-42", "ümlaut", "émile", "ñandú", "Ødegaard", "łukasz"]
    for user in users:
        r = client.post("/predict", json=FEATURES, headers={"X-User-ID": user.encode("utf-8")})
        assert r.status_code == 200 and r.headers["X-Model-Version"] == router.sticky_variant(user), user


def test_batch_list_limits_and_row_errors(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, model={**IRIS_MODEL, "max_rows": 5}) as c:
        wait_ready(c)
        r = c.post("/predict?probabilities=true", json=[FEATURES, {**FEATURES, "petal_length": 5.5,
                                                                  "petal_width": 2.2}])
        assert r.status_code == 200, r.text
        body = r.json()
        assert [p["prediction"] for p in body["predictions"]] == ["Setosa", "Virginica"]
        assert set(body["predictions"][0]["probabilities"]) == {"Setosa", "Versicolor", "Virginica"}
        assert c.post("/predict", json=[FEATURES] * 6).status_code == 413
        bad = c.post("/predict", json=[FEATURES, {**FEATURES, "sepal_width": -1}, FEATURES])
        assert bad.status_code == 422 and bad.json()["errors"][0]["row"] == 1
        assert "row 1 sepal_width" in bad.json()["message"]
        assert c.post("/predict", json=[]).status_code == 400
        spool = PredictionSpool(tmp_path / "spool")
        assert spool.count() == 2, "only the accepted request's rows are logged"
        assert [rec.row_index for rec in spool.find_request(body["request_id"])] == [0, 1]


def test_openapi_shows_the_models_columns(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    row = spec["components"]["schemas"]["Row"]
    assert set(row["properties"]) == set(FEATURES) and row["properties"]["sepal_length"]["exclusiveMinimum"] == 0
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["oneOf"][1]["type"] == "array"
    assert {"/invocations", "/v2/models/{name}/infer", "/ping"} <= set(spec["paths"])


def test_allow_listed_headers_and_the_sticky_users_pseudonym_are_logged(
        tmp_path: Path, local_models: dict[str, str]) -> None:
    import hashlib

    from gateway.export.strategies import prediction_tags

    with make_client(tmp_path, local_models, routing={"log_headers": ["X-Country"]}) as c:
        wait_ready(c)
        r = c.post("/predict", json=FEATURES, headers={"X-Country": "de", "X-Other": "secret", "X-User-ID": "alice"})
        plain = c.post("/predict", json=FEATURES)
        spool = c.app.state.gateway.spool  # type: ignore[attr-defined]
        logged, bare = spool.find(r.json()["request_id"]), spool.find(plain.json()["request_id"])
    assert logged is not None and logged.headers == '{"x-country":"de"}' and "secret" not in logged.headers
    key = (tmp_path / "spool" / "keys" / "pseudonym.key").read_bytes()  # made at first start: no key was set
    assert logged.user == Pseudonyms(key).of("alice") and "alice" not in logged.user
    # The salted hash of the release before (the salt is public): a dictionary with it finds nothing.
    assert logged.user != hashlib.sha256(b"iris-ab\x00alice").hexdigest()[:16]
    assert logged.routing == "sticky"
    tags = prediction_tags(logged)
    assert tags["header.x-country"] == "de" and tags["user"] == logged.user
    assert bare is not None and bare.headers == "" and bare.user is None
    assert "header.x-country" not in prediction_tags(bare) and "user" not in prediction_tags(bare)
