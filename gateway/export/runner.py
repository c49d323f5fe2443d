"""Background threads that drain a PredictionSpool into MLflow with one strategy per granularity."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from gateway.exceptions import first_line
from gateway.export.labels import LabelStep
from gateway.export.policy import Backoff, TrafficDeferral
from gateway.export.strategies import ExportCounters, ExportStrategy
from gateway.spool import PredictionSpool

log = logging.getLogger("gateway.exporter")


class ThreadExporter:
    """Worker threads: claim, export, back off on failure; labels when there is nothing else to do."""

    def __init__(self, spool: PredictionSpool, strategy: ExportStrategy, labels: LabelStep,
                 counters: ExportCounters, *, backoff: Backoff | None = None,
                 deferral: TrafficDeferral | None = None, retention_seconds: float = 24 * 3600.0,
                 lease_seconds: float = 60.0) -> None:
        self.spool = spool
        self.strategy = strategy
        self.labels = labels
        self.counters = counters
        self.backoff = backoff or Backoff()
        self.deferral = deferral
        self.retention_seconds = retention_seconds
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._draining = False
        self._prune_lock = threading.Lock()
        self._last_prune = time.monotonic()

    # -- the Exporter protocol -----------------------------------------------------------------

    def start(self, report_every: float = 30.0) -> None:
        for i in range(self.strategy.workers):
            t = threading.Thread(target=self._loop, name=f"mlflow-export-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if report_every > 0:
            t = threading.Thread(target=self._report_loop, args=(report_every,), name="export-report", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, grace_seconds: float) -> int:
        """Drain for up to ``grace_seconds`` while MLflow answers, then stop. Return the backlog left."""
        deadline = time.monotonic() + grace_seconds
        self.drain_now()
        while time.monotonic() < deadline and (self.spool.count_open() > 0 or self.spool.count_open_labels() > 0):
            if self.backoff.until() > time.time() + (deadline - time.monotonic()):
                break  # MLflow is down and will not be retried within the grace time
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=self.lease_seconds)
        left = self.spool.count_open()
        if left:
            log.warning("export stopped with %d prediction record(s) left in the spool for the next start", left)
        return left

    def status(self) -> dict[str, Any]:
        alive = sum(t.is_alive() for t in self._threads if t.name.startswith("mlflow-export"))
        return {**self.counters.snapshot(), "alive": alive > 0 and not self._stop.is_set(), "workers": alive,
                "kind": "thread"}

    # -- control -------------------------------------------------------------------------------

    def drain_now(self) -> None:
        """From now on, close windows early and never defer to traffic (drain and shutdown)."""
        self._draining = True
        if self.deferral is not None:
            self.deferral.off = True

    def _deferring(self) -> bool:
        return (self.strategy.defers_to_traffic and self.deferral is not None and not self._stop.is_set()
                and self.deferral.deferring())

    def _interrupted(self) -> bool:
        return (self._stop.is_set() and self.backoff.remaining() > 0) or self._deferring()

    def _wait(self, seconds: float) -> None:
        self._wake.wait(timeout=seconds)
        self._wake.clear()

    # -- the worker loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            pause = self.backoff.remaining()
            if pause:
                self._wait(pause)
                continue
            if self._deferring():
                self._wait(0.5)
                continue
            try:
                work = self.strategy.claim(self._draining)
                if work is None:
                    if self.labels.run(self._draining):
                        self._succeeded()
                        continue
                    self._housekeeping()
                    self._wait(0.2)
                    continue
                self.strategy.export(work, self._interrupted)
            except Exception as exc:
                self._failed(exc)
                continue
            self._succeeded()

    def _housekeeping(self) -> None:
        if time.monotonic() - self._last_prune > 60 and self._prune_lock.acquire(blocking=False):
            try:
                self.spool.prune(self.retention_seconds)
                self._last_prune = time.monotonic()
            finally:
                self._prune_lock.release()

    def _failed(self, exc: BaseException) -> None:
        with self.counters.lock:
            self.counters.failed_attempts += 1
            self.counters.last_error = first_line(exc)
            self.counters.last_error_at = time.time()
        self.backoff.failed(exc, self.spool.count_open)

    def _succeeded(self) -> None:
        self.backoff.succeeded()
        self.counters.last_success_at = time.time()

    def _report_loop(self, every: float) -> None:
        """A log line whenever something moved: backlog, lag, and the running totals."""
        last: tuple[int, int, int] | None = None
        while not self._stop.wait(every):
            s = self.spool.stats()
            snap = self.counters.snapshot()
            now = (int(s["backlog"] or 0), snap["exported"], snap["failed_attempts"])
            if now != last and (now[0] or last is None or now[1] != last[1]):
                log.info("export: backlog %d, lag %.1fs, exported %d, failed attempts %d, duplicates avoided %d",
                         s["backlog"], s["export_lag_seconds"], snap["exported"], snap["failed_attempts"],
                         snap["duplicates_avoided"])
            last = now
