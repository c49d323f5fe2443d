"""The spool's writer thread: records are committed off the event loop, many requests per transaction.

Whatever arrives while a transaction runs is committed together in the next one (group commit), so
the cost of a commit is shared by every request waiting for it. Each request stays all or nothing
(a savepoint each, see ``PredictionSpool.append_groups``), and its future resolves only after the
commit: a response waits for it, so nothing answered is lost.

A write waits in the queue at most ``queue_wait_ms``: one still queued past that (the writer was
held up by a lock elsewhere) fails with SpoolWriteError unwritten, and its request follows
``on_log_failure``; so does one cancelled by its caller (``Future.cancel``). Once a write has
started it finishes or fails as a whole, waiting at most ``lock_wait_ms`` for a lock held by
another process.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from gateway.domain.records import PredictionRecord
from gateway.domain.workers import STOP, QueueWorker, resolve
from gateway.spool.sqlite import SpoolWriteError
from gateway.spool.store import PredictionSpool

log = logging.getLogger("gateway.spool")


@dataclass(frozen=True, slots=True)
class _Write:
    records: Sequence[PredictionRecord]
    future: Future[list[int]]
    deadline: float  # time.monotonic() past which it is not started any more


class SpoolWriter(QueueWorker["_Write"]):
    """One thread owning the request path's writes to one spool."""

    def __init__(self, spool: PredictionSpool, *, max_group: int = 512, lock_wait_ms: float | None = None,
                 queue_wait_ms: float = 60_000.0) -> None:
        super().__init__("spool-writer")
        self.spool = spool
        self.max_group = max_group
        self.lock_wait_ms = lock_wait_ms  # None: the spool's busy timeout
        self.queue_wait_s = queue_wait_ms / 1000.0
        self.expired = 0
        self.last_commit_ms = 0.0  # how long the last group commit took (a slow one: a lock or the disk)
        # Since when every transaction failed (a full disk or size cap, a read-only file system), with
        # the latest error; None once one commits again, or a probe's write does (see ``unwritable``).
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._probed = 0.0
        self.checkpoint_interval_s = 0.25
        self.transactions = 0
        self.requests = 0
        self._busy = threading.Lock()  # held by whoever is committing: the writer thread, or an idle-time caller
        self._prepared = threading.local()
        self.start()
        self._stopped = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="spool-checkpoint", daemon=True)
        self._checkpointer.start()

    def submit(self, records: Sequence[PredictionRecord]) -> Future[list[int]]:
        """Queue one request's records; the future gives their row ids once committed, or raises
        DuplicateRequest or SpoolWriteError."""
        future: Future[list[int]] = Future()
        if self.closed:
            future.set_exception(SpoolWriteError("the gateway is shutting down"))
            return future
        self._put(_Write(records, future, time.monotonic() + self.queue_wait_s))
        return future

    def write_many(self, groups: Sequence[Sequence[PredictionRecord]]) -> list[Future[list[int]]]:
        """Several requests' records (those of one model call), committed together: right here, on
        the caller's thread, in one transaction when the writer is idle (no hand-off between threads
        at low load); else queued for the writer, which takes them together."""
        if not self.closed and self._queue.empty() and self._busy.acquire(blocking=False):
            try:
                if self._queue.empty():
                    self._own_connection()
                    writes = [_Write(records, Future(), math.inf) for records in groups]
                    self._commit(writes)
                    return [w.future for w in writes]
            finally:
                self._busy.release()
        return [self.submit(records) for records in groups]

    def _own_connection(self) -> None:
        """A thread's spool connection, set up once for request-path writes: no checkpoints of its own
        (the checkpoint thread does them), and lock waits bounded by ``lock_wait_ms``."""
        if getattr(self._prepared, "done", False):
            return
        self._prepared.done = True
        try:
            self.spool.db.leave_checkpoints()
            if self.lock_wait_ms is not None:
                self.spool.db.limit_waits(self.lock_wait_ms)
        except Exception:  # an unwritable spool: each write will say so
            log.exception("cannot set up the spool connection of %s", threading.current_thread().name)

    def _take(self) -> tuple[list[_Write], bool]:
        """The next group: one write (waiting for it), then whatever else is queued."""
        first = self._get()
        if first is None or first is STOP:
            return [], True
        group, stop = [first], False
        while len(group) < self.max_group:
            item = self._get(0)
            if item is None:
                break
            if item is STOP:
                stop = True
                break
            group.append(item)
        return group, stop

    def _checkpoints(self) -> None:
        """The WAL's checkpoints, off the commit path (the writer's connection does none itself)."""
        while not self._stopped.wait(self.checkpoint_interval_s):
            try:
                self.spool.db.checkpoint()
            except Exception as exc:  # locked or gone: the next round, or the exporter's commits, do it
                log.debug("spool checkpoint skipped: %s", exc)

    def _run(self) -> None:
        self._own_connection()
        stop = False
        while not stop:
            group, stop = self._take()
            with self._busy:
                self._commit(group)

    def _commit(self, group: list[_Write]) -> None:
        now = time.monotonic()
        live = []
        for write in group:
            if not write.future.set_running_or_notify_cancel():
                continue
            if now > write.deadline:
                self.expired += 1
                write.future.set_exception(SpoolWriteError(
                    f"the records waited more than {self.queue_wait_s:g} s for the spool's writer, "
                    f"{len(group)} request(s) queued together, its last commit took {self.last_commit_ms:.0f} ms: "
                    + ("a slow commit (the spool locked by another process, or a stalled disk)"
                       if self.last_commit_ms > self.queue_wait_s * 500 else
                       "more writes than it commits in time (saturated; fewer rows per request or window "
                       "mode help)")))
                continue
            live.append(write)
        if not live:
            return
        started = time.monotonic()
        try:
            results = self.spool.append_groups([w.records for w in live])
        except BaseException as exc:  # the writer must outlive any failure of one transaction
            log.exception("spool group commit failed")
            results = [SpoolWriteError(f"cannot write the prediction spool: {exc}")] * len(live)
        self.last_commit_ms = (time.monotonic() - started) * 1000
        failed = [r for r in results if isinstance(r, SpoolWriteError)]
        if len(failed) == len(results):
            self.last_error = str(failed[0])
            self.failing_since = self.failing_since or started
        else:
            self.failing_since = None
        self.transactions += 1
        self.requests += len(live)
        for write, result in zip(live, results, strict=True):
            resolve(write.future, result)

    def probe_now(self) -> str | None:
        """A probe write at once (start-up): a spool that cannot take records (a disk with less than
        its reserve free, a size cap reached) fails from the start, so that /readyz says so before the
        first request is refused. None when records fit."""
        problem = self.spool.probe_write()
        if problem is not None:
            self.failing_since, self.last_error, self._probed = time.monotonic(), problem, time.monotonic()
        return problem

    def unwritable(self, probe_every_s: float = 1.0) -> str | None:
        """Why the spool takes no records now, or None. While the last transactions failed, a probe
        write (at most one per ``probe_every_s``, never waiting for the writer) tells when space is
        back, so that readiness returns without traffic to try it."""
        if self.failing_since is None:
            return None
        now = time.monotonic()
        if now - self._probed >= probe_every_s and self._busy.acquire(blocking=False):
            try:
                self._probed = now
                problem = self.spool.probe_write()
            finally:
                self._busy.release()
            if problem is None:
                self.failing_since = None
                log.info("the prediction spool takes records again")
                return None
            self.last_error = problem
        return self.last_error

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread; a write queued behind the stop mark (by a
        request racing the shutdown) is refused."""
        if self.closed:
            return
        super().close(timeout)
        self._stopped.set()
        for item in self._leftovers():
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(SpoolWriteError("the gateway is shutting down"))
