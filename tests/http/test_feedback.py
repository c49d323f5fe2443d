"""Who may label, and how much one of them can move: credentials, receipts, untrusted labels, one
counted label per unit, rates, what errors echo; and what a blind test hides. In-process gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.spool.store import PredictionSpool
from stack.iris import FEATURES
from tests.harness.app_client import AUTH, FEEDBACK_AUTH, make_client, wait_ready


def _label(c: TestClient, answer: object, label: object = "Setosa", row: int = 0, **extra: object) -> object:
    r = answer  # the prediction's response: its request id and its receipt
    body = {"request_id": r.json()["request_id"], "true_label": label, "row_index": row,  # type: ignore[attr-defined]
            "receipt": r.headers["x-feedback-receipt"], **extra}  # type: ignore[attr-defined]
    return c.post("/feedback", json=body)


def test_a_label_needs_the_token_or_its_answers_receipt(client: TestClient) -> None:
    mine, theirs = client.post("/predict", json=FEATURES), client.post("/predict", json=FEATURES)
    rid = theirs.json()["request_id"]
    r = client.post("/feedback", json={"request_id": rid, "true_label": "Setosa"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert "X-Feedback-Receipt" in r.json()["message"] and "prediction" not in r.json()
    r = client.post("/feedback", json={"request_id": rid, "true_label": "Setosa"},
                    headers={"Authorization": "Bearer guess"})
    assert r.status_code == 403 and "wrong feedback token" in r.json()["message"]
    # Label squatting: my receipt does not cover their request; the answer says nothing of theirs.
    r = client.post("/feedback", json={"request_id": rid, "true_label": "Virginica",
                                       "receipt": mine.headers["x-feedback-receipt"]})
    assert r.status_code == 403 and "does not match" in r.json()["message"] and "Setosa" not in r.text
    r = _label(client, theirs)  # the owner labels it
    assert r.status_code == 202 and r.json()["trust"] == "receipt" and r.json()["counted"] is True  # type: ignore[attr-defined]
    r = client.post("/feedback", json={"request_id": mine.json()["request_id"], "true_label": 0},
                    headers=FEEDBACK_AUTH)  # a label pipeline, with the token
    assert r.status_code == 202 and r.json()["trust"] == "token"


def test_untrusted_labels_can_be_recorded_but_never_used_and_tell_nothing(
        tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, feedback={"untrusted": "record"}) as c:
        wait_ready(c)
        known = c.post("/predict", json=FEATURES).json()["request_id"]
        answers = [c.post("/feedback", json={"request_id": rid, "true_label": "Virginica"})
                   for rid in (known, "never-existed")]
        assert [a.status_code for a in answers] == [202, 202]
        shapes = [{k: v for k, v in a.json().items() if k != "request_id"} for a in answers]
        assert shapes[0] == shapes[1] == {"row_index": 0, "true_label": "Virginica", "trust": "untrusted",
                                          "recorded": True, "used_for_decisions": False}
        # The owner's label is not blocked by the stranger's.
        r = c.post("/feedback", json={"request_id": known, "true_label": "Setosa"}, headers=FEEDBACK_AUTH)
        assert r.status_code == 202 and r.json()["replayed"] is False
        assert c.get("/stats").json()["spool"]["labels_untrusted"] == 2
    spool = PredictionSpool(tmp_path / "spool")
    _, labels = spool.labels.claim(10)
    assert [(lb.request_id, lb.true_label, lb.trust) for lb in labels] == [(known, "Setosa", "token")]


def test_one_request_or_one_user_counts_once_for_each_version(tmp_path: Path, local_models: dict[str, str]) -> None:
    """A thousand rows labelled by their own client weigh as one unit: its first label counts."""
    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        batch = c.post("/predict", json=[FEATURES] * 5)
        counted = [_label(c, batch, row=k).json()["counted"] for k in range(5)]  # type: ignore[attr-defined]
        assert counted == [True, False, False, False, False]
        sticky = [c.post("/predict", json=FEATURES, headers={"X-User-ID": "dave"}) for _ in range(3)]
        assert [_label(c, s).json()["counted"] for s in sticky] == [True, False, False]  # type: ignore[attr-defined]
        assert c.get("/stats").json()["requests"]["feedback_not_counted"] == 6


def test_each_client_has_a_rate(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, feedback={"client_limit": "3/minute"}) as c:
        wait_ready(c)
        answers = [c.post("/predict", json=FEATURES) for _ in range(4)]
        assert [_label(c, a).status_code for a in answers] == [202, 202, 202, 429]  # type: ignore[attr-defined]
        r = _label(c, answers[3])
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and "client_limit" in r.json()["message"]  # type: ignore[attr-defined]
        assert c.post("/feedback", json={"request_id": answers[3].json()["request_id"], "true_label": 0},
                      headers=FEEDBACK_AUTH).status_code == 202  # the token has a rate of its own


def test_an_error_echoes_a_bounded_part_of_what_was_sent(client: TestClient) -> None:
    rid = client.post("/predict", json=FEATURES).json()["request_id"]
    huge = "x" * 2_000_000
    r = client.post("/feedback", json={"request_id": rid, "true_label": huge}, headers=FEEDBACK_AUTH)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "true_label"
    assert len(r.content) < 2_000 and "2000002 characters" in r.json()["message"]


def test_a_blind_test_hides_the_version_from_every_answer(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, routing={"reveal_version": False}) as c:
        wait_ready(c)
        r = c.post("/predict", json=FEATURES, headers={"X-User-ID": "erin"})
        assert r.status_code == 200 and "model_version" not in r.json() and "X-Model-Version" not in r.headers
        oip = c.post("/v2/models/model/infer", json={"inputs": [
            {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": list(FEATURES.values())}]})
        assert oip.status_code == 200 and "model_version" not in oip.json() and "X-Model-Version" not in oip.headers
        inv = c.post("/invocations", json={"inputs": [FEATURES]})
        assert inv.status_code == 200 and "X-Model-Version" not in inv.headers
        fb = _label(c, r)
        assert fb.status_code == 202 and "model_version" not in fb.json()  # type: ignore[attr-defined]
        logged = c.app.state.gateway.spool.find(r.json()["request_id"])  # type: ignore[attr-defined]
        assert logged is not None and logged.model_version in ("v1.0", "v2.0")  # the log still knows


def test_the_shipped_salt_is_warned_about_and_a_secret_one_is_not(
        tmp_path: Path, local_models: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "gateway"), make_client(tmp_path / "a", local_models) as c:
        wait_ready(c)
    assert "routing.salt is the shipped default" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "gateway"), make_client(tmp_path / "b", local_models,
                                                                  routing={"salt": "s3cret"}) as c:
        wait_ready(c)
    assert "shipped default" not in caplog.text


def test_paths_and_process_ids_are_for_the_admin_side(admin_client: TestClient) -> None:
    anonymous = {p: admin_client.get(p).text for p in ("/readyz", "/variants", "/stats")}
    admin = {p: admin_client.get(p, headers=AUTH).text for p in ("/readyz", "/variants", "/stats")}
    for path, body in anonymous.items():
        assert "routing.db" not in body and "worker_pid" not in body and '"pid"' not in body, path
    assert "routing.db" in admin["/readyz"] and "worker_pid" in admin["/variants"]


def test_a_spool_short_of_room_is_unready_from_the_start(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, spool={"min_free_mb": 1e9}) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["spool_writable"] is False and "free" in r.json()["reason"]
        assert c.get("/stats").json()["requests"] == {}  # nothing was tried: start-up found it


def test_logged_headers_keep_every_value_and_every_byte(tmp_path: Path, local_models: dict[str, str]) -> None:
    from starlette.requests import Request

    from gateway.http.inference import logged_headers

    with make_client(tmp_path, local_models, routing={"log_headers": ["X-Country"]}) as c:
        wait_ready(c)
        r = c.post("/predict", json=FEATURES, headers=[("X-Country", "de"), ("X-Country", "fr")])
        both = c.app.state.gateway.spool.find(r.json()["request_id"])  # type: ignore[attr-defined]
    assert both.headers == '{"x-country":"de, fr"}'
    # The raw bytes as a server hands them over (the test client re-encodes header text): not UTF-8.
    raw = Request({"type": "http", "headers": [(b"x-country", b"caf\xe9"), (b"x-other", b"x")]})
    assert logged_headers(raw, ["x-country"]) == '{"x-country":"caf\\\\xe9"}'
    assert logged_headers(Request({"type": "http", "headers": [(b"x-country", "zoë".encode())]}),
                          ["x-country"]) == '{"x-country":"zoë"}'
