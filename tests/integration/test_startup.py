"""Start-up under traffic: requests that arrive while the models load get 503 (or a refused
connection before the port opens), never a 500, and the gateway never dies of it. A request used to
import mlflow on the event loop while the loader thread imported it too: Python's import lock then
reported a deadlock and the process exited (2 of 4 starts under 10 /invocations requests a second)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from stack.processes import GatewayProcess, local_models_config

pytestmark = pytest.mark.integration

STARTS = 10
BODY = json.dumps({"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                                       "data": [[5.1, 3.5, 1.4, 0.2]]}})


def _traffic(url: str, stop: threading.Event, seen: Counter[str], per_second: float = 20.0) -> None:
    with httpx.Client(base_url=url, timeout=5) as http:
        while not stop.is_set():
            try:
                r = http.post("/invocations", content=BODY, headers={"Content-Type": "application/json"})
                seen[str(r.status_code)] += 1
            except httpx.TransportError:
                seen["no connection"] += 1
            time.sleep(1 / per_second)


def _one_start(i: int, tmp_path: Path, local_models: dict[str, str]) -> Counter[str]:
    work = tmp_path / f"start-{i}"
    gw = GatewayProcess(config=local_models_config(work, local_models), workdir=work)
    seen: Counter[str] = Counter()
    stop = threading.Event()
    sender = threading.Thread(target=_traffic, args=(gw.url, stop, seen), daemon=True)
    gw.start(wait_ready=False)
    sender.start()
    try:
        deadline = time.monotonic() + 60
        while seen["200"] < 5 and time.monotonic() < deadline:
            assert gw.proc is not None and gw.proc.poll() is None, \
                f"start {i}: the gateway exited ({gw.proc.returncode}):\n{gw.log_text()[-3000:]}"
            time.sleep(0.05)
    finally:
        stop.set()
        sender.join(10)
        gw.stop()
    assert seen["200"] >= 5, f"start {i}: {dict(seen)}\n{gw.log_text()[-3000:]}"
    assert set(seen) <= {"200", "503", "no connection"}, f"start {i}: {dict(seen)}\n{gw.log_text()[-3000:]}"
    assert "deadlock" not in gw.log_text()
    return seen


def test_ten_starts_under_traffic_never_die_and_never_answer_500(tmp_path: Path,
                                                                 local_models: dict[str, str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    totals: Counter[str] = Counter()
    with ThreadPoolExecutor(2) as pool:  # two gateways start at a time, each under its own traffic
        for seen in pool.map(lambda i: _one_start(i, tmp_path, local_models), range(STARTS)):
            totals.update(seen)
    print(f"\n{STARTS} starts under /invocations traffic: {dict(totals)}")
    assert totals["503"] + totals["no connection"] > 0, "no request arrived before the models were loaded"
