"""The thread that installs routing changes other processes made (through the shared state)."""

from __future__ import annotations

import logging
import threading

from gateway.domain.errors import StateUnavailable
from gateway.domain.messages import first_line
from gateway.routing.table import RoutingTable

log = logging.getLogger("gateway.routing")


class RoutingFollower:
    """A thread that keeps one process's routing in step with the shared state."""

    def __init__(self, table: RoutingTable, interval_s: float | None = None) -> None:
        self.table = table
        self.interval_s = interval_s or table.poll_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routing-follower", daemon=True)

    def start(self) -> None:
        if self.table.shared:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.table.sync()
            except StateUnavailable:
                pass  # logged once by the store, and shown in /readyz and /metrics: try again
            except Exception as exc:  # a locked or vanished file: keep the routing in force, try again
                log.warning("routing state not read: %s", first_line(exc, 200))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
