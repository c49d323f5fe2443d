"""The thread that installs routing changes other processes made (through the shared state)."""

from __future__ import annotations

import logging

from gateway.domain.errors import StateUnavailable
from gateway.domain.messages import first_line
from gateway.domain.workers import PeriodicWorker
from gateway.routing.table import RoutingTable

log = logging.getLogger("gateway.routing")


class RoutingFollower(PeriodicWorker):
    """A thread that keeps one process's routing in step with the shared state."""

    def __init__(self, table: RoutingTable, interval_s: float | None = None) -> None:
        super().__init__("routing-follower", interval_s or table.poll_interval_s, wait_first=True)
        self.table = table

    def start(self) -> None:
        if self.table.shared:
            super().start()

    def round(self) -> bool:
        try:
            self.table.sync()
        except StateUnavailable:
            pass  # logged once by the store, and shown in /readyz and /metrics: try again
        except Exception as exc:  # a locked or vanished file: keep the routing in force, try again
            log.warning("routing state not read: %s", first_line(exc, 200))
        return False
