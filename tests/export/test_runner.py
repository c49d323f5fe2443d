"""The export workers never stop for good: any exception is counted and backed off, a dead worker is
restarted, and a stuck export is reported as stalled."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from gateway.export.label_runs import LabelsOnPredictionRuns
from gateway.export.policy import Backoff
from gateway.export.runner import ThreadExporter
from gateway.export.strategies import ExportCounters, PredictionRuns
from gateway.spool.store import PredictionSpool
from tests.export.test_strategies import FakeMlflow
from tests.harness.records import rec


def _exporter(spool: PredictionSpool, fake: FakeMlflow, **kw: Any) -> ThreadExporter:
    counters = ExportCounters()
    # Short leases: rows whose release failed under the lock come back within a second.
    strategy = PredictionRuns(spool, fake, counters, workers=3, lease_seconds=1.0)  # type: ignore[arg-type]
    labels = LabelsOnPredictionRuns(spool, fake, counters)  # type: ignore[arg-type]
    return ThreadExporter(spool, strategy, labels, counters, backoff=Backoff(max_delay=0.2), **kw)


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_workers_survive_a_locked_spool(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path, busy_timeout_ms=100)
    exporter = _exporter(spool, FakeMlflow([]))
    exporter.start(report_every=0)
    try:
        for round_ in range(5):
            for i in range(4):
                spool.append(rec(round_ * 10 + i))
            # Another process holds the write lock longer than the busy timeout: claims fail.
            locker = sqlite3.connect(spool.path, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
            time.sleep(0.4)
            locker.execute("ROLLBACK")
            locker.close()
        _wait(lambda: spool.count_open() == 0)
        status = exporter.status()
        assert status["workers"] == status["workers_expected"] == 3, status
        assert status["failed_attempts"] > 0 and "locked" in (status["last_error"] or "")
        # Failures counted while the spool was locked reach its counters once the exporter is idle.
        _wait(lambda: spool.stats()["total_failed_attempts"] == exporter.status()["failed_attempts"], timeout=5)
    finally:
        exporter.stop(0)


class _Fatal(BaseException):
    """Not an Exception: the loop lets it through, and the thread dies."""


def test_a_dead_worker_is_restarted(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    exporter = _exporter(spool, FakeMlflow([]))
    real_claim = exporter.strategy.claim
    fired = threading.Event()

    def claim_once_fatally(draining: bool) -> Any:
        if not fired.is_set():
            fired.set()
            raise _Fatal("worker killed")
        return real_claim(draining)

    exporter.strategy.claim = claim_once_fatally  # type: ignore[method-assign]
    exporter.start(report_every=0)
    try:
        _wait(lambda: exporter.worker_restarts >= 1)
        spool.append(rec(1))
        _wait(lambda: spool.count_open() == 0)
        assert exporter.status()["workers"] == 3
    finally:
        exporter.stop(0)


def test_stuck_export_while_mlflow_answers_is_stalled(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    spool.append(rec(1, ts=int(time.time() * 1000) - 5_000))
    failing = FakeMlflow(["before"] * 10_000)
    exporter = _exporter(spool, failing, stall_seconds=1.0, mlflow_health=lambda: None)
    exporter.start(report_every=0)
    try:
        _wait(lambda: exporter.status()["stalled"], timeout=10)  # judged by the watchdog, once a second
        down = _exporter(spool, failing, stall_seconds=1.0, mlflow_health=lambda: "ConnectError")
        assert not down._stalled(down.counters.snapshot()), "MLflow down is an outage, not a stall"
    finally:
        exporter.stop(0)
