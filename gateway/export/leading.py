"""One exporter per spool, however many worker processes serve it.

Under ``--workers N`` every uvicorn worker builds its own gateway on the one spool. Without this, each
started an exporter (a child process with MLflow's client and, in window mode, its own appends to
the table): N processes competing for the machine that serves. ``LeadingExporter`` starts the real
exporter only in the worker that holds ``<spool.dir>/exporter.lock``; the others stand by and try the
lock every ``poll_seconds``. The lock goes with the process, so when the leading worker exits or is
killed (uvicorn replaces it), another worker's exporter starts within a poll. Leases and the spool's
exactly-once marks make the hand-over safe: what the old one had leased goes back when the lease ends.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.export import Exporter
from gateway.spool.leader import LeaderLock

log = logging.getLogger("gateway.exporter")

LOCK_NAME = "exporter.lock"


class LeadingExporter:
    def __init__(self, build: Callable[[], Exporter], lock_path: Path, *, poll_seconds: float = 1.0) -> None:
        self._build = build
        self._lock = LeaderLock(lock_path)
        self.lock_path = lock_path
        self.poll_seconds = poll_seconds
        self.inner: Exporter | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._waiter: threading.Thread | None = None

    @property
    def leads(self) -> bool:
        return self.inner is not None

    def start(self) -> None:
        if not self._take():
            log.info("exporter standing by: worker %s leads the export (%s)", self._leader_pid() or "?",
                     self.lock_path)
            self._waiter = threading.Thread(target=self._wait_for_lock, name="exporter-standby", daemon=True)
            self._waiter.start()

    def _take(self) -> bool:
        with self._mutex:
            if self._stop.is_set() or not self._lock.try_acquire():
                return False
            self._lock.write(str(os.getpid()))
            self.inner = self._build()
            self.inner.start()
            return True

    def _wait_for_lock(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if self._take():
                log.info("exporter of worker %d took over the export (%s)", os.getpid(), self.lock_path)
                return

    def stop(self, grace_seconds: float) -> Any:
        with self._mutex:
            self._stop.set()
            inner = self.inner
        if self._waiter is not None:
            self._waiter.join(timeout=self.poll_seconds + 1)
        if inner is None:
            return self.status()
        try:
            return inner.stop(grace_seconds)
        finally:
            self._lock.release()

    def status(self) -> dict[str, Any]:
        inner = self.inner
        if inner is not None:
            return {**inner.status(), "leads": True}
        # Standing by is a healthy state: the export runs in the leading worker, and /stats, /readyz
        # and the metrics of that worker report its progress (the spool's figures are the same here).
        return {"kind": "standby", "leads": False, "alive": not self._stop.is_set(), "workers": 0,
                "stalled": False, "leader_pid": self._leader_pid()}

    def _leader_pid(self) -> int | None:
        try:
            text = self.lock_path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None
