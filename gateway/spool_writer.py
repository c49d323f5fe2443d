"""The spool's writer thread: records are committed off the event loop, many requests per transaction.

Whatever arrives while a transaction runs is committed together in the next one (group commit), so
the cost of a commit is shared by every request waiting for it. Each request stays all or nothing
(a savepoint each, see ``PredictionSpool.append_groups``), and its future resolves only after the
commit: a response waits for it, so nothing answered is lost.

A write still waiting in the queue can be cancelled (``Future.cancel``): the request that gave up on
it follows ``on_log_failure`` and the records are never written. Once a write has started it
finishes or fails as a whole, waiting at most ``lock_wait_ms`` for a lock held by another process.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from gateway.records import PredictionRecord
from gateway.spool import PredictionSpool, SpoolWriteError

log = logging.getLogger("gateway.spool")


@dataclass(frozen=True, slots=True)
class _Write:
    records: Sequence[PredictionRecord]
    future: Future[list[int]]


class SpoolWriter:
    """One thread owning the request path's writes to one spool."""

    def __init__(self, spool: PredictionSpool, *, max_group: int = 512, lock_wait_ms: float | None = None) -> None:
        self.spool = spool
        self.max_group = max_group
        self.lock_wait_ms = lock_wait_ms  # None: the spool's busy timeout
        self.transactions = 0
        self.requests = 0
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    def submit(self, records: Sequence[PredictionRecord]) -> Future[list[int]]:
        """Queue one request's records; the future gives their row ids once committed, or raises
        DuplicateRequest or SpoolWriteError."""
        future: Future[list[int]] = Future()
        if self._closed:
            future.set_exception(SpoolWriteError("the gateway is shutting down"))
            return future
        self._queue.put(_Write(records, future))
        return future

    def _take(self) -> tuple[list[_Write], bool]:
        """The next group: one write (waiting for it), then whatever else is queued."""
        first = self._queue.get()
        if first is None:
            return [], True
        group, stop = [first], False
        while len(group) < self.max_group:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            group.append(item)
        return group, stop

    def _run(self) -> None:
        if self.lock_wait_ms is not None:
            try:
                self.spool.limit_waits(self.lock_wait_ms)
            except Exception:  # an unwritable spool: each write will say so
                log.exception("cannot set the spool writer's lock wait")
        stop = False
        while not stop:
            group, stop = self._take()
            live = [w for w in group if w.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self.spool.append_groups([w.records for w in live])
            except BaseException as exc:  # the thread must outlive any failure of one transaction
                log.exception("spool group commit failed")
                results = [SpoolWriteError(f"cannot write the prediction spool: {exc}")] * len(live)
            self.transactions += 1
            self.requests += len(live)
            for write, result in zip(live, results, strict=True):
                if isinstance(result, Exception):
                    write.future.set_exception(result)
                else:
                    write.future.set_result(result)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        while True:  # a write queued behind the stop mark, by a request racing the shutdown
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(SpoolWriteError("the gateway is shutting down"))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
