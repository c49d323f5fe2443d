"""When the exporter may call MLflow: exponential backoff after failures, and deferral to traffic."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from gateway.domain.messages import first_line

log = logging.getLogger("gateway.exporter")


class Backoff:
    """Exponential backoff with jitter, shared by every worker of one exporter: 0.5 s doubling to
    ``max_delay``. One failure makes all workers wait; one success clears it."""

    def __init__(self, max_delay: float = 30.0) -> None:
        self.max_delay = max_delay
        self.failures_in_row = 0
        self._until = 0.0
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self._until - time.time())

    def until(self) -> float:
        return self._until

    def failed(self, exc: BaseException, backlog: Callable[[], int]) -> None:
        with self._lock:
            self.failures_in_row += 1
            delay = min(self.max_delay, 0.5 * 2 ** min(self.failures_in_row - 1, 10))
            self._until = time.time() + delay * (0.5 + random.random() / 2)
            n = self.failures_in_row
        if n == 1 or n % 20 == 0:
            log.warning("MLflow export failed (%d in a row, backlog %d); retrying in %.1fs: %s",
                        n, backlog(), delay, first_line(exc))

    def succeeded(self) -> None:
        with self._lock:
            if self.failures_in_row:
                log.info("MLflow export recovered after %d failed attempt(s)", self.failures_in_row)
            self.failures_in_row = 0
            self._until = 0.0


class TrafficDeferral:
    """Per-prediction export waits while predictions arrive faster than ``busy_rps``, unless the
    oldest unexported one has waited ``max_deferral_seconds``. A run costs a tracking server about
    15 ms of CPU and a request well under 1 ms: on a shared machine, exporting during a burst would
    slow serving, while waiting costs nothing but lag (the records are already durable)."""

    def __init__(self, busy_rps: float, max_deferral_seconds: float, high_water: Callable[[], int],
                 oldest_open_ts_ms: Callable[[], int | None]) -> None:
        self.busy_rps = busy_rps
        self.max_deferral_seconds = max_deferral_seconds
        self._high_water = high_water
        self._oldest = oldest_open_ts_ms
        self._sample: tuple[float, int] | None = None
        self._busy = False
        self._lock = threading.Lock()
        self.off = False  # draining or stopping: never defer

    def deferring(self) -> bool:
        if not self.busy_rps or self.off:
            return False
        now = time.monotonic()
        with self._lock:
            if self._sample is None or now - self._sample[0] >= 0.5:
                high = self._high_water()
                if self._sample is not None:
                    rate = (high - self._sample[1]) / (now - self._sample[0])
                    busy = rate >= self.busy_rps
                    if busy != self._busy:
                        log.info("inbound %.0f predictions/s: export %s", rate,
                                 "deferred while busy" if busy else "resumed")
                    self._busy = busy
                self._sample = (now, high)
            if not self._busy:
                return False
        oldest = self._oldest()
        return oldest is not None and time.time() - oldest / 1000 < self.max_deferral_seconds
