"""Background threads that drain a PredictionSpool into MLflow with one strategy per granularity."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.domain.messages import first_line
from gateway.export.label_runs import LabelStep
from gateway.export.policy import Backoff, FallingBehind, TrafficDeferral
from gateway.export.strategies import ExportCounters, ExportStrategy
from gateway.spool.store import PredictionSpool

log = logging.getLogger("gateway.exporter")


class ThreadExporter:
    """Worker threads: claim, export, back off on failure; labels when there is nothing else to do.

    A worker loop survives any exception (counted, logged, backed off); a worker that dies anyway is
    restarted by a watchdog. ``status()`` reports the live workers, the last error and a ``stalled``
    flag: predictions waiting longer than ``stall_seconds`` with no export for as long, while the
    tracking server answers its health check (so the exporter, not MLflow, is stuck)."""

    def __init__(self, spool: PredictionSpool, strategy: ExportStrategy, labels: LabelStep,
                 counters: ExportCounters, *, backoff: Backoff | None = None,
                 deferral: TrafficDeferral | None = None, retention_seconds: float = 24 * 3600.0,
                 lease_seconds: float = 60.0, stall_seconds: float = 120.0,
                 mlflow_health: Callable[[], str | None] | None = None,
                 falling_behind: FallingBehind | None = None, trend_every_s: float = 10.0) -> None:
        self.spool = spool
        self.strategy = strategy
        self.labels = labels
        self.counters = counters
        self.backoff = backoff or Backoff()
        self.deferral = deferral
        self.retention_seconds = retention_seconds
        self.lease_seconds = lease_seconds
        self.stall_seconds = stall_seconds
        self._mlflow_health = mlflow_health
        self._health: tuple[float, str | None] = (0.0, None)  # (checked at, problem)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._workers: list[threading.Thread] = []
        self._threads: list[threading.Thread] = []
        self._draining = False
        self._prune_lock = threading.Lock()
        self._last_prune = time.monotonic()
        self.worker_restarts = 0
        self.stalled = False  # set by the watchdog
        self.falling_behind = falling_behind or FallingBehind()  # fed by the watchdog too
        self.trend_every_s = trend_every_s
        self._trend_at = 0.0
        self._unpersisted_failures = 0
        self._started_at = time.time()

    # -- the Exporter protocol -----------------------------------------------------------------

    def start(self, report_every: float = 30.0) -> None:
        self._started_at = time.time()
        self._workers = [self._spawn(i) for i in range(self.strategy.workers)]
        self._threads.append(threading.Thread(target=self._watchdog, name="export-watchdog", daemon=True))
        if report_every > 0:
            self._threads.append(threading.Thread(target=self._report_loop, args=(report_every,),
                                                  name="export-report", daemon=True))
        for t in self._threads:
            t.start()

    def _spawn(self, i: int) -> threading.Thread:
        t = threading.Thread(target=self._loop, name=f"mlflow-export-{i}", daemon=True)
        t.start()
        return t

    def _watchdog(self) -> None:
        """Restart a worker that died despite its loop catching everything (it should never happen),
        and judge whether the export is stalled: here, in the background, because it may ask MLflow's
        health check, which ``status()`` (read by /stats and /metrics) must never wait for."""
        while not self._stop.wait(1.0):
            self.stalled = self._stalled(self.counters.snapshot())
            self._sample_trend()
            for i, t in enumerate(self._workers):
                if not t.is_alive() and not self._stop.is_set():
                    self.worker_restarts += 1
                    log.error("export worker %s died; restarting it (%d restart(s) so far)", t.name,
                              self.worker_restarts)
                    self._workers[i] = self._spawn(i)

    def _sample_trend(self) -> None:
        now = time.monotonic()
        if now - self._trend_at < self.trend_every_s:
            return
        self._trend_at = now
        try:
            self.falling_behind.observe(now, self.spool.high_water(), self.spool.exported_total())
        except Exception as exc:  # a locked spool: the next sample
            log.debug("backlog trend not sampled: %s", first_line(exc))

    def stop(self, grace_seconds: float, join_seconds: float | None = None) -> int:
        """Drain for up to ``grace_seconds`` while MLflow answers, then stop, waiting at most
        ``join_seconds`` in all (default: a lease) for threads inside an MLflow call. Return the
        backlog left."""
        deadline = time.monotonic() + grace_seconds
        self.drain_now()
        while time.monotonic() < deadline and (self.spool.count_open() > 0 or self.spool.labels.count_open() > 0):
            if self.backoff.until() > time.time() + (deadline - time.monotonic()):
                break  # MLflow is down and will not be retried within the grace time
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        end = time.monotonic() + (self.lease_seconds if join_seconds is None else join_seconds)
        for t in [*self._workers, *self._threads]:
            t.join(timeout=max(0.0, end - time.monotonic()))
        self._persist_failures()
        left = self.spool.count_open()
        if left:
            log.warning("export stopped with %d prediction record(s) left in the spool for the next start", left)
        return left

    def status(self) -> dict[str, Any]:
        alive = sum(t.is_alive() for t in self._workers)
        snap = self.counters.snapshot()
        return {**snap, "alive": alive > 0 and not self._stop.is_set(), "workers": alive,
                "workers_expected": len(self._workers), "worker_restarts": self.worker_restarts,
                "stalled": self.stalled, **self.falling_behind.describe(), "kind": "thread"}

    def _stalled(self, snap: dict[str, Any]) -> bool:
        try:
            oldest = self.spool.oldest_open_ts_ms()
        except Exception:  # the spool itself failing is reported through last_error
            return False
        now = time.time()
        if oldest is None or now - oldest / 1000 < self.stall_seconds:
            return False
        last_progress = max(snap["last_success_at"] or 0.0, self._started_at)
        if now - last_progress < self.stall_seconds:
            return False
        if self._mlflow_health is not None:
            checked_at, problem = self._health
            if now - checked_at > 10:
                problem = self._mlflow_health()
                self._health = (now, problem)
            return problem is None  # MLflow answers, yet nothing moves: the exporter is stuck
        return True

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
            try:
                if self._deferring():
                    self._wait(0.5)
                    continue
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
        self._persist_failures()  # failures counted while the spool itself was locked: now, when idle
        if time.monotonic() - self._last_prune > 60 and self._prune_lock.acquire(blocking=False):
            try:
                self.spool.prune(self.retention_seconds)
                self.spool.labels.prune(self.retention_seconds)
                self._last_prune = time.monotonic()
            finally:
                self._prune_lock.release()

    def _failed(self, exc: BaseException) -> None:
        with self.counters.lock:
            self.counters.failed_attempts += 1
            self.counters.last_error = f"{type(exc).__name__}: {first_line(exc)}"
            self.counters.last_error_at = time.time()
            self._unpersisted_failures += 1
        self._persist_failures()
        self.backoff.failed(exc, self._backlog)

    def _persist_failures(self) -> None:
        """Add the failures to the spool's counters, which outlive this exporter. When the spool is what
        fails, they wait for the next write that works."""
        with self.counters.lock:
            pending, self._unpersisted_failures = self._unpersisted_failures, 0
        if not pending:
            return
        try:
            self.spool.bump_counter("failed_attempts", pending)
        except Exception:
            with self.counters.lock:
                self._unpersisted_failures += pending

    def _backlog(self) -> int:
        try:
            return self.spool.count_open()
        except Exception:
            return -1

    def _succeeded(self) -> None:
        self._persist_failures()
        self.backoff.succeeded()
        self.counters.last_success_at = time.time()

    def _report_loop(self, every: float) -> None:
        """A log line whenever something moved: backlog, lag, and the running totals."""
        last: tuple[int, int, int] | None = None
        while not self._stop.wait(every):
            try:
                s = self.spool.stats()
            except Exception as exc:
                log.warning("export: cannot read the spool's state: %s", first_line(exc))
                continue
            snap = self.counters.snapshot()
            now = (int(s["backlog"] or 0), snap["exported"], snap["failed_attempts"])
            if now != last and (now[0] or last is None or now[1] != last[1]):
                log.info("export: backlog %d, lag %.1fs, exported %d, failed attempts %d, duplicates avoided %d",
                         s["backlog"], s["export_lag_seconds"], snap["exported"], snap["failed_attempts"],
                         snap["duplicates_avoided"])
            last = now
