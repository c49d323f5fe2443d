"""A slow model must not hold everyone: a client that gives up cancels its queued work (not scored,
not logged), a request past ``[model] request_timeout_ms`` gets 504 naming the variant, and a full
queue answers 503 with Retry-After at once, with /readyz saying which variant is saturated. Against
a real gateway process and a real pyfunc model that sleeps as long as each request asks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway.spool.store import PredictionSpool
from stack.processes import GatewayProcess, write_config
from tests.harness.slow_model import save_sleeper

pytestmark = pytest.mark.integration

TIMEOUT_MS = 4000


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("slow")
    model = save_sleeper(work / "sleeper")
    config = write_config(work / "gateway.toml", "http://127.0.0.1:9", work / "spool", work / "cache",
                          variants=[{"name": "slow", "model_uri": model, "weight": 1.0}],
                          model={"request_timeout_ms": TIMEOUT_MS}, spool={"export": False},
                          batching={"max_batch_size": 64, "max_queue_rows": 128})
    with GatewayProcess(config, work) as gw:
        yield gw


def _rows(n: int) -> list[dict[str, float]]:
    return [{"a": 2.0, "b": 1.0}] * n


def _invoke(url: str, rows: int, sleep: float, timeout: float, request_id: str) -> httpx.Response | None:
    try:
        return httpx.post(url + "/invocations", json={"dataframe_records": _rows(rows), "params": {"sleep": sleep}},
                          headers={"X-Request-ID": request_id}, timeout=timeout)
    except httpx.TimeoutException:
        return None  # the client gave up and closed its connection


def _stats(gw: GatewayProcess) -> dict[str, Any]:
    return httpx.get(gw.url + "/stats", timeout=10).json()  # type: ignore[no-any-return]


def _idle(gw: GatewayProcess) -> dict[str, Any]:
    """/stats once nothing is queued and no model call runs."""
    for _ in range(200):
        stats = _stats(gw)
        slow = stats["batching"]["slow"]
        idle = slow["queued_rows"] == 0 and slow["call_seconds"] is None
        if idle and httpx.get(gw.url + "/readyz").status_code == 200:
            return stats
        threading.Event().wait(0.1)
    raise AssertionError(_stats(gw))


def test_clients_that_give_up_cancel_their_queued_work(gateway: GatewayProcess) -> None:
    before = _stats(gateway)["batching"]["slow"]
    with ThreadPoolExecutor(10) as pool:
        blocker = pool.submit(_invoke, gateway.url, 64, 2.0, 30, "blocker")  # the model is busy for 2 s
        threading.Event().wait(0.3)
        gone = [pool.submit(_invoke, gateway.url, 16, 2.0, 0.5, f"gone-{i}") for i in range(8)]
        assert all(f.result() is None for f in gone)  # each gave up after 0.5 s
        after = pool.submit(_invoke, gateway.url, 1, 0.0, 30, "after")
        assert blocker.result().status_code == 200
        answered = after.result()
    assert answered is not None and answered.status_code == 200, answered
    assert answered.json() == {"predictions": ["big"]}
    stats = _idle(gateway)
    slow = stats["batching"]["slow"]
    # Without cancellation the eight would each have held the model 2 s, and "after" waited 16 s more.
    assert slow["calls"] - before["calls"] == 2, slow  # the blocker's call and "after"'s
    assert slow["dropped"] - before["dropped"] == 8, slow
    assert stats["requests"].get("cancelled", 0) >= 8


def test_a_request_past_its_deadline_gets_504_naming_the_variant(gateway: GatewayProcess) -> None:
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(_invoke, gateway.url, 4, 6.0, 30, "stuck")  # the model runs 6 s: past the 4 s deadline
        threading.Event().wait(0.3)
        behind = pool.submit(_invoke, gateway.url, 1, 0.0, 30, "behind")  # queued behind it
        responses = [stuck.result(), behind.result()]
    for r, rid in zip(responses, ("stuck", "behind"), strict=True):
        assert r is not None and r.status_code == 504, r and r.text
        body = r.json()
        assert body["error_code"] == "DEADLINE_EXCEEDED" and body["variant"] == "slow", body
        assert rid in body["message"] and "request_timeout_ms" in body["message"]
    _idle(gateway)


def test_a_full_queue_answers_503_with_retry_after_and_readyz_says_so(gateway: GatewayProcess) -> None:
    with ThreadPoolExecutor(4) as pool:
        blocker = pool.submit(_invoke, gateway.url, 4, 2.5, 30, "busy")
        threading.Event().wait(0.3)
        queued = [pool.submit(_invoke, gateway.url, 64, 0.0, 30, f"queued-{i}") for i in range(2)]  # 128 rows wait
        threading.Event().wait(0.5)
        refused = _invoke(gateway.url, 1, 0.0, 30, "refused")
        ready = httpx.get(gateway.url + "/readyz", timeout=10)
        results = [blocker.result(), *(f.result() for f in queued)]
    assert refused is not None and refused.status_code == 503, refused and refused.text
    assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" and refused.json()["variant"] == "slow"
    assert int(refused.headers["retry-after"]) >= 1
    assert ready.status_code == 503 and ready.json()["saturated"] == {"slow": {"queued_rows": 128,
                                                                              "max_queue_rows": 128}}, ready.text
    assert [r.status_code for r in results if r is not None] == [200, 200, 200]
    _idle(gateway)  # /readyz is 200 again once the queue drained


def test_cancelled_and_timed_out_work_is_not_logged(gateway: GatewayProcess) -> None:
    """Runs last in the module: the earlier tests' requests, read from the spool once the gateway stopped."""
    _idle(gateway)
    gateway.stop()
    spool = PredictionSpool(gateway.workdir / "spool")
    try:
        logged = {rid for rid in ["blocker", "after", "busy", "queued-0", "queued-1"] if spool.find(rid)}
        unlogged = [rid for rid in [*(f"gone-{i}" for i in range(8)), "stuck", "behind", "refused"]
                    if spool.find(rid) is not None]
    finally:
        spool.close()
    assert logged == {"blocker", "after", "busy", "queued-0", "queued-1"}
    assert unlogged == []
