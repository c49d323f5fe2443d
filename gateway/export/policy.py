"""When the exporter may call MLflow: exponential backoff after failures, and deferral to traffic."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
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


class FallingBehind:
    """Whether predictions arrive faster than they reach MLflow, for minutes: the backlog grew by at
    least ``min_growth`` rows over the last ``window_s`` while rows came in at more than ``ratio``
    times the rate they went out. Fed a sample (rows ever written, rows ever exported) now and then;
    says so once in the log when it starts and when it ends."""

    def __init__(self, window_s: float = 180.0, min_growth: int = 1000, ratio: float = 1.1,
                 granularity: str = "prediction") -> None:
        self.window_s = window_s
        self.min_growth = min_growth
        self.ratio = ratio
        self.granularity = granularity
        self.behind = False
        self.in_per_s: float | None = None
        self.out_per_s: float | None = None
        self._samples: deque[tuple[float, int, int]] = deque()

    def observe(self, now: float, written: int, exported: int) -> bool:
        samples = self._samples
        samples.append((now, written, exported))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()  # keep one sample at least window_s old
        t0, w0, e0 = samples[0]
        span = now - t0
        if span < self.window_s or span <= 0:
            return self.behind
        self.in_per_s, self.out_per_s = (written - w0) / span, (exported - e0) / span
        growth = (written - w0) - (exported - e0)
        behind = growth >= self.min_growth and self.in_per_s > self.ratio * self.out_per_s
        if behind and not self.behind:
            log.warning("the prediction log is falling behind: %.0f rows/s in, %.0f rows/s out to MLflow over the "
                        "last %.0f s, the backlog up %d rows. %s", self.in_per_s, self.out_per_s, span, growth,
                        self._advice())
        elif self.behind and not behind:
            log.info("the prediction log keeps up again: %.0f rows/s in, %.0f rows/s out", self.in_per_s,
                     self.out_per_s)
        self.behind = behind
        return behind

    def _advice(self) -> str:
        if not self.out_per_s:
            return "Nothing reached MLflow meanwhile: see the exporter's last_error."
        if self.granularity == "prediction":
            return ("One MLflow run per prediction cannot keep up at this rate: [mlflow] granularity = \"window\" "
                    "logs one run per version per window, tens of thousands of rows a second "
                    "(docs/prediction-log.md).")
        return "Give the exporter more workers ([mlflow] export_workers) or MLflow more capacity."

    def describe(self) -> dict[str, object]:
        return {"falling_behind": self.behind,
                "in_rows_per_s": None if self.in_per_s is None else round(self.in_per_s, 1),
                "out_rows_per_s": None if self.out_per_s is None else round(self.out_per_s, 1)}
