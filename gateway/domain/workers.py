"""The gateway's long-lived threads, on one base: a named daemon thread that starts once, stops once
and says whether it is alive. Two kinds: a queue worker (the model batchers, the spool's writer) takes
items from its queue until ``close``, which lets everything queued before it through; a periodic
worker (the MLflow outbox's sender, the routing follower) runs a round every ``interval_s`` or at once
when poked, until ``stop``."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Final, Generic, TypeVar

T = TypeVar("T")


class _Stop:
    """The mark ``close`` queues behind the last item."""


STOP: Final = _Stop()


def resolve(future: Future[Any], outcome: Any) -> None:
    """Settle a future with a result, or with the exception that took its place."""
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Worker:
    """One named daemon thread running ``_run``."""

    def __init__(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive() and self._thread.ident is None:
            self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def _join(self, timeout: float) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class QueueWorker(Worker, Generic[T]):
    """A thread serving a queue of ``T``. ``close`` refuses new items (``closed``), queues the stop
    mark, and waits for the thread to reach it: whatever was queued before is served."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._queue: queue.SimpleQueue[T | _Stop] = queue.SimpleQueue()
        self.closed = False

    def _put(self, item: T) -> None:
        self._queue.put(item)

    def _get(self, timeout: float | None = None) -> T | _Stop | None:
        """The next item or the stop mark; None when ``timeout`` (0: do not wait) passes first."""
        try:
            return self._queue.get_nowait() if timeout == 0 else self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _leftovers(self) -> list[T]:
        """Items queued behind the stop mark (by a caller racing ``close``): for the subclass to refuse."""
        left: list[T] = []
        while (item := self._get(0)) is not None:
            if not isinstance(item, _Stop):
                left.append(item)
        return left

    def close(self, timeout: float = 10.0) -> None:
        """Serve what is queued, then stop the thread (waiting up to ``timeout`` seconds)."""
        if self.closed:
            return
        self.closed = True
        self._queue.put(STOP)
        self._join(timeout)


class PeriodicWorker(Worker):
    """A thread that calls ``round`` every ``interval_s`` seconds, at once after a round that did some
    work (``round`` returned True) or when poked, until ``stop``. ``wait_first``: the first round
    after one interval, not at start."""

    def __init__(self, name: str, interval_s: float, *, wait_first: bool = False) -> None:
        super().__init__(name)
        self.interval_s = interval_s
        self.wait_first = wait_first
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def round(self) -> bool:
        raise NotImplementedError

    def poke(self) -> None:
        """Something changed: run a round now."""
        self._wake.set()

    def _run(self) -> None:
        if self.wait_first:
            self._pause()
        while not self._stopping.is_set():
            if not self.round():
                self._pause()

    def _pause(self) -> None:
        """Until the interval passes, or a poke or ``stop`` comes."""
        self._wake.wait(self.interval_s)
        self._wake.clear()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._join(timeout)
