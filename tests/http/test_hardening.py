"""Inputs from the hardening review (issue 12's repros): each gets a clear 4xx in the documented shape,
never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stack.iris import FEATURES
from tests.harness.app_client import AUTH, make_client, wait_ready

NESTED = "[" * 100_000 + "]" * 100_000




@pytest.mark.parametrize("path", ["/predict", "/invocations", "/v2/models/model/infer", "/feedback"])
def test_deeply_nested_json_is_a_400(admin_client: TestClient, path: str) -> None:
    r = admin_client.post(path, content=NESTED, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text  # local model files: the OIP model name is "model"
    assert "nested" in r.text or "parsing" in r.text


def test_lone_surrogates_are_refused_not_500(admin_client: TestClient) -> None:
    body = '{"request_id": "\\ud800", "true_label": "Setosa"}'
    r = admin_client.post("/feedback", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "request_id"
    r = admin_client.post("/admin/promote", content='{"variant": "\\ud800"}', headers={
        **AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["valid"] == ["v1.0", "v2.0"]
    r = admin_client.post("/predict", content='{"sepal_length": "\\udc00"}', headers={
        "Content-Type": "application/json"})
    assert r.status_code == 422


def test_huge_weights_are_refused(admin_client: TestClient) -> None:
    r = admin_client.put("/admin/routing", json={"weights": {"v1.0": 1e308, "v2.0": 1e308}}, headers=AUTH)
    assert r.status_code == 422 and "finite" in r.json()["message"]


def test_booleans_are_not_numbers(admin_client: TestClient) -> None:
    r = admin_client.post("/predict", json={**FEATURES, "sepal_length": True})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "sepal_length"
    assert "boolean" in r.json()["errors"][0]["message"]
    r = admin_client.put("/admin/routing", json={"weights": {"v1.0": True}}, headers=AUTH)
    assert r.status_code == 422
    rid = admin_client.post("/predict", json=FEATURES).json()["request_id"]
    assert admin_client.post("/feedback", json={"request_id": rid, "true_label": True}).status_code == 422


def test_admin_authenticates_before_reading_the_body(admin_client: TestClient) -> None:
    r = admin_client.put("/admin/routing", json={"weights": "not a dict", "bogus": 1})
    assert r.status_code == 401 and "schema" not in r.text and r.headers["WWW-Authenticate"] == "Bearer"


def test_live_weights_are_reported(admin_client: TestClient) -> None:
    assert admin_client.put("/admin/routing", json={"weights": {"v1.0": 0.9, "v2.0": 0.1}},
                            headers=AUTH).status_code == 200
    weights = {v["name"]: v["weight"] for v in admin_client.get("/variants").json()["variants"]}
    assert weights == {"v1.0": 0.9, "v2.0": 0.1}
    info = [ln for ln in admin_client.get("/metrics").text.splitlines() if ln.startswith("gateway_variant_info{")]
    assert any('variant="v1.0"' in ln and 'weight="0.9"' in ln for ln in info), info


def test_one_error_shape_for_framework_errors(admin_client: TestClient) -> None:
    r = admin_client.get("/predict")
    assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed" and "message" in r.json()
    r = admin_client.get("/no/such/path")
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    r = admin_client.post("/feedback", content="{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and set(r.json()) >= {"error", "message", "errors"}
    r = admin_client.post("/predict", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400 and r.json()["error"] == "MalformedBody"


def test_body_and_header_limits(tmp_path: Path, local_models: dict[str, str]) -> None:
    with make_client(tmp_path, local_models, http={"max_body_mb": 0.01, "max_header_kb": 1}) as c:
        wait_ready(c)
        big = b"[" + b",".join([b'{"sepal_length": 5.1}'] * 2000) + b"]"
        r = c.post("/predict", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "max_body_mb" in r.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
            yield b"["
            for _ in range(2000):
                yield b'{"sepal_length": 5.1},'
            yield b"{}]"

        r = c.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge"
        r = c.post("/predict", json=FEATURES, headers={"X-User-ID": "u" * 5000})
        assert r.status_code == 431 and "max_header_kb" in r.json()["message"]
        assert c.post("/predict", json=FEATURES).status_code == 200


def test_a_stalled_body_times_out() -> None:
    import asyncio

    from gateway.http.limits import BodyTimeout, RequestLimits

    async def app(scope: object, receive: object, send: object) -> None:
        await receive()  # type: ignore[operator]

    async def stalled() -> dict[str, object]:
        await asyncio.sleep(10)
        return {"type": "http.request", "body": b""}

    async def sink(message: object) -> None:
        return None

    limits = RequestLimits(app, max_body_bytes=100, max_header_bytes=1000, read_timeout=0.05)  # type: ignore[arg-type]
    with pytest.raises(BodyTimeout, match="body_read_timeout_seconds"):
        asyncio.run(limits({"type": "http", "headers": []}, stalled, sink))  # type: ignore[arg-type]


def test_openapi_documents_every_error_status(admin_client: TestClient) -> None:
    spec = admin_client.get("/openapi.json").json()
    for path, body in (("/predict", "ErrorBody"), ("/invocations", "MlflowErrorBody"),
                       ("/v2/models/{name}/infer", "OipErrorBody")):
        documented = spec["paths"][path]["post"]["responses"]
        assert {"200", "400", "409", "413", "422", "503"} <= set(documented), (path, sorted(documented))
        ref = documented["422"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith(body), ref


def test_a_deleted_spool_file_is_noticed(tmp_path: Path, local_models: dict[str, str]) -> None:
    import threading

    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        assert c.post("/predict", json=FEATURES).status_code == 200
        for f in (tmp_path / "spool").glob("predictions.sqlite3*"):
            f.unlink()
        r = c.post("/predict", json=FEATURES)
        assert r.status_code == 503 and "deleted or replaced" in r.json()["message"]
        assert str(tmp_path) not in r.text, "no internal path in what a client sees"
        ready = c.get("/readyz")
        assert ready.status_code == 503 and "deleted or replaced" in ready.json()["reason"]
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(c.get("/stats").status_code))
        worker.start()  # a thread that never had a connection must not create an empty spool
        worker.join()
        assert results == [200] and not (tmp_path / "spool" / "predictions.sqlite3").exists()
