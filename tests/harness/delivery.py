from __future__ import annotations

import time
from typing import Any

import httpx

from stack.iris import FEATURES
from stack.processes import GatewayProcess, runs_by_request


def wait_drained(gw: GatewayProcess, timeout: float = 120, labels: bool = False) -> dict[str, Any]:
    """Until the spool holds no prediction left to export (and, with ``labels``, no label either: labels
    travel on their own after their predictions)."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = httpx.get(gw.url + "/stats", timeout=10).json()
        if stats["spool"]["backlog"] == 0 and not (labels and stats["spool"].get("labels_backlog")):
            return stats
        time.sleep(0.3)
    raise TimeoutError(f"spool not drained after {timeout}s: {stats}")


class TrafficThread:
    """Sequential-ish background traffic (a few connections) that remembers every 200's request id."""

    def __init__(self, url: str, connections: int = 3, pause: float = 0.0) -> None:
        import threading

        self.url = url
        self.ok_ids: list[str] = []
        self.failures: list[str] = []
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pause = pause
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(connections)]

    def _run(self, worker: int) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while not self._stop.is_set():
                n += 1
                rid = f"w{worker}-{n}-{time.monotonic_ns()}"
                start = time.perf_counter()
                try:
                    r = http.post("/predict", json=FEATURES, headers={"X-Request-ID": rid})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(type(exc).__name__)
                    time.sleep(0.05)
                    continue
                with self._lock:
                    if r.status_code == 200:
                        self.ok_ids.append(r.json()["request_id"])
                        self.latencies_ms.append((time.perf_counter() - start) * 1000)
                    else:
                        self.failures.append(f"HTTP {r.status_code}")
                if self._pause:
                    time.sleep(self._pause)

    def __enter__(self) -> TrafficThread:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def assert_exactly_once(tracking_uri: str, served_ids: list[str],
                        experiment: str = "iris-flower-prediction") -> dict[str, int]:
    """Every served request id has exactly one primary run; returns the counts for reporting."""
    runs = runs_by_request(tracking_uri, experiment)
    primary = {rid: len(v) for (rid, role), v in runs.items() if role == "primary"}
    missing = [rid for rid in served_ids if rid not in primary]
    duplicated = [rid for rid, n in primary.items() if n > 1]
    counts = {"served": len(served_ids), "in_mlflow": sum(1 for rid in served_ids if rid in primary),
              "missing": len(missing), "duplicated": len(duplicated)}
    print("exactly-once check:", counts)
    assert not missing, f"{len(missing)} served predictions missing from MLflow, e.g. {missing[:3]}"
    assert not duplicated, f"{len(duplicated)} predictions have more than one run, e.g. {duplicated[:3]}"
    return counts
