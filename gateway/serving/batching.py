"""Adaptive micro-batching: concurrent requests for one variant are scored in one model call.

A model call has a fixed cost besides its rows (a one-row ``predict`` of the iris pipeline costs
about as much as an eight-row one: scikit-learn's input checks dominate). Each variant has one worker
thread and a queue:

- a request that arrives while the worker is idle is scored at once (no fixed wait at low load);
- requests that arrive while a call runs queue up and go into the next call together, up to
  ``max_batch_size`` rows; a request is never split, so one larger than the limit goes alone;
- with ``max_delay_s`` > 0 the worker waits that long for more rows before a call that is not full;
- only requests with the same options (probabilities, params) share a call;
- a model error fails the requests of that call only (each is retried alone); the worker goes on;
- the queue is bounded (``max_queue_rows``): past it ``submit`` raises QueueFull at once, with an
  estimate of the wait from the recent calls' time per row;
- a job whose future was cancelled while it queued (its client went away, or its deadline passed)
  is dropped before any model call.

Rows are validated in the worker too (``prepare``), per request: an invalid request fails alone, and
the event loop never spends time on validation. Framework-free: futures are ``concurrent.futures``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.batch import Rows, join
from gateway.domain.workers import STOP, QueueWorker, resolve
from gateway.variants.output import Predictions

log = logging.getLogger("gateway.batching")

Predict = Callable[[Rows, bool, "dict[str, Any] | None"], Any]  # -> an object with .predictions, .elapsed_ms


@dataclass(frozen=True, slots=True)
class JobResult:
    """One request's share of a model call."""

    rows: Rows  # its validated rows
    predictions: Predictions
    elapsed_ms: float  # the model call's own time (the whole batch)
    batch_rows: int  # rows in that call
    request_time_ms: float  # from submit to predictions: queueing, validation and the call


@dataclass(slots=True)
class _Job:
    rows: Rows
    probabilities: bool
    params: dict[str, Any] | None
    prepared: bool
    future: Future[JobResult]
    ticket: Any = None  # the caller's, handed back to ``deliver``
    submitted: float = field(default_factory=time.perf_counter)
    key: Hashable = None

    def __post_init__(self) -> None:
        params = None if not self.params else json.dumps(self.params, sort_keys=True, default=str)
        self.key = (self.probabilities, params)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


class QueueFull(RuntimeError):
    """The variant's queue holds ``queued`` rows; one more request would pass ``limit``."""

    def __init__(self, name: str, queued: int, limit: int, wait_s: float) -> None:
        super().__init__(f"variant {name} has {queued} rows queued (the limit is {limit})")
        self.name, self.queued, self.limit, self.wait_s = name, queued, limit, wait_s


class MicroBatcher(QueueWorker["_Job"]):
    """The queue and worker thread of one variant."""

    def __init__(self, name: str, predict: Predict, *,
                 prepare: Callable[[Rows], Sequence[dict[str, Any]]] | None = None, max_batch_size: int = 1024,
                 max_delay_s: float = 0.0, max_queue_rows: int | None = None,
                 deliver: Callable[[list[tuple[Any, JobResult | BaseException]]], None] | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        super().__init__(f"batch-{name}")
        self.name = name
        self._predict = predict
        self._on_start = on_start  # once, on the worker thread, before its first call (its thread pools)
        self._prepare = prepare
        # Called once per model call, on the worker, with (ticket, result or error) of each request in
        # it: the caller finishes them together (the scorer commits their records in one transaction).
        self._deliver = deliver
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay_s = max(0.0, max_delay_s)
        self.max_queue_rows = max_queue_rows
        self.calls = 0
        self.rows = 0
        self.dropped = 0  # jobs cancelled while they queued, never scored
        self.refused = 0  # submits refused with QueueFull
        self.last_refused = 0.0  # time.monotonic() of the latest
        self.seconds_per_row = 0.0  # the recent model calls' time per row (moving average)
        self.call_started: float | None = None  # time.monotonic() when the running model call began
        self._queued_rows = 0  # submitted and not yet taken into a call (held jobs included)
        self._count_lock = threading.Lock()
        self._held: deque[_Job] = deque()  # taken from the queue, waiting for a call with their options
        self._stop = False
        self.start()

    def submit(self, rows: Rows | Sequence[dict[str, Any]], *, probabilities: bool = False,
               params: dict[str, Any] | None = None, prepared: bool = False, ticket: Any = None) -> Future[JobResult]:
        """Queue one request's rows (raw, or ``prepared`` = validated already); row dicts are taken as
        a batch of them."""
        if self.closed:
            raise BatcherClosed(f"variant {self.name} is shutting down")
        with self._count_lock:
            queued = self._queued_rows
            # A request larger than the bound alone still goes when nothing waits (as max_batch_size).
            if self.max_queue_rows is not None and queued and queued + len(rows) > self.max_queue_rows:
                self.refused += 1
                self.last_refused = time.monotonic()
                raise QueueFull(self.name, queued, self.max_queue_rows, queued * self.seconds_per_row)
            self._queued_rows = queued + len(rows)
        job = _Job(Rows.of_dicts(rows), probabilities, params, prepared, Future(), ticket)
        count = len(rows)  # a job cancelled while it queues stops counting at once
        job.future.add_done_callback(lambda done: self._taken(count) if done.cancelled() else None)
        self._put(job)
        return job.future

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def call_seconds(self) -> float | None:
        """How long the running model call has taken so far; None when the worker is idle."""
        started = self.call_started
        return None if started is None else round(time.monotonic() - started, 3)

    def saturated(self, within_s: float = 1.0) -> bool:
        """The queue is at its bound, or refused a request within the last ``within_s`` seconds."""
        if self.max_queue_rows is None:
            return False
        return (self._queued_rows >= self.max_queue_rows
                or (self.refused > 0 and time.monotonic() - self.last_refused < within_s))

    def _taken(self, rows: int) -> None:
        with self._count_lock:
            self._queued_rows -= rows

    # -- the worker -----------------------------------------------------------------------------

    def _next(self, timeout: float | None) -> _Job | None:
        """A held job first, else the queue's next (waiting up to ``timeout``; None: as long as it takes)."""
        while True:
            job = self._held.popleft() if self._held else self._get(timeout)
            if job is None:
                return None
            if job is STOP:
                self._stop = True
                return None
            if not job.future.cancelled():
                return job
            self.dropped += 1  # its client is gone: dropped unscored, and unlogged

    def _gather(self) -> list[_Job]:
        first = self._next(None)
        if first is None:
            return []
        batch, rows = [first], len(first.rows)
        deadline = time.perf_counter() + self.max_delay_s
        passed: list[_Job] = []
        while rows < self.max_batch_size:
            wait = max(0.0, deadline - time.perf_counter()) if self.max_delay_s else 0.0
            job = self._next(wait)
            if job is None:
                break
            if job.key != first.key or rows + len(job.rows) > self.max_batch_size:
                passed.append(job)
                if rows + len(job.rows) > self.max_batch_size:
                    break
                continue
            batch.append(job)
            rows += len(job.rows)
        self._held.extendleft(reversed(passed))
        return batch

    def _run(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception:  # a limit that cannot be set costs speed, not answers
                log.exception("batch worker of %s: start hook", self.name)
        while True:
            if self._stop and not self._held and self._queue.empty():
                return
            try:
                batch = self._gather()
                if batch:
                    self.call_started = time.monotonic()
                    self._call(batch)
            except BaseException:  # the worker must outlive anything one batch does
                log.exception("batch worker of %s", self.name)
            finally:
                self.call_started = None

    def _call(self, batch: list[_Job]) -> None:
        settled: list[tuple[_Job, JobResult | BaseException]] = []
        ready: list[tuple[_Job, Rows]] = []
        running = [job for job in batch if job.future.set_running_or_notify_cancel()]
        self.dropped += len(batch) - len(running)
        self._taken(sum(len(job.rows) for job in running))
        for job in running:
            try:
                rows = (Rows.of_dicts(self._prepare(job.rows)) if not job.prepared and self._prepare is not None
                        else job.rows)
            except Exception as exc:
                settled.append((job, exc))
                continue
            ready.append((job, rows))
        if ready:
            all_rows = join([rows for _, rows in ready])
            first = ready[0][0]
            try:
                result = self._predict(all_rows, first.probabilities, first.params)
            except Exception as exc:
                if len(ready) == 1:
                    settled.append((first, exc))
                else:  # one request's bad rows must not fail its batch-mates: each is tried alone
                    settled += [(job, self._alone(job, rows)) for job, rows in ready]
            else:
                self._count_call(len(all_rows), result.elapsed_ms)
                done = time.perf_counter()
                start = 0
                for job, rows in ready:
                    end = start + len(rows)
                    settled.append((job, JobResult(rows, result.predictions[start:end], result.elapsed_ms,
                                                   len(all_rows), (done - job.submitted) * 1000.0)))
                    start = end
        if self._deliver is not None and settled:
            try:
                self._deliver([(job.ticket, outcome) for job, outcome in settled])
            except Exception:
                log.exception("delivering a batch of %s", self.name)
        for job, outcome in settled:
            resolve(job.future, outcome)

    def _alone(self, job: _Job, rows: Rows) -> JobResult | BaseException:
        """One request's own model call, after the call it shared failed."""
        try:
            result = self._predict(rows, job.probabilities, job.params)
        except Exception as exc:
            return exc
        self._count_call(len(rows), result.elapsed_ms)
        return JobResult(rows, result.predictions, result.elapsed_ms, len(rows),
                         round((time.perf_counter() - job.submitted) * 1000.0, 3))  # to the microsecond

    def _count_call(self, rows: int, elapsed_ms: float) -> None:
        self.calls += 1
        self.rows += rows
        per_row = elapsed_ms / 1000.0 / max(1, rows)
        self.seconds_per_row = per_row if self.calls == 1 else 0.8 * self.seconds_per_row + 0.2 * per_row
