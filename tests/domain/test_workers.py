"""The thread base every long-lived gateway thread stands on: a queue worker serves everything queued
before ``close`` exactly once, in order; a periodic worker runs rounds until ``stop``."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.workers import STOP, PeriodicWorker, QueueWorker


class Collector(QueueWorker[int]):
    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__("collector")
        self.served: list[int] = []
        self.gate = gate

    def put(self, item: int) -> None:
        self._put(item)

    def _run(self) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        while True:
            item = self._get()
            if item is STOP or item is None:
                return
            self.served.append(item)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(), max_size=50))
def test_close_serves_everything_queued_before_it_once_in_order(items: list[int]) -> None:
    gate = threading.Event()
    worker = Collector(gate)
    worker.start()
    for item in items:
        worker.put(item)
    gate.set()
    worker.close(timeout=5)
    assert worker.served == items
    assert not worker.alive and worker.closed


def test_items_queued_behind_the_stop_mark_are_left_over_for_the_owner_to_refuse() -> None:
    gate = threading.Event()
    worker = Collector(gate)
    worker.start()
    worker.put(1)
    worker.closed = True
    worker._queue.put(STOP)
    worker.put(2)  # a caller racing the close
    gate.set()
    worker._join(5)
    assert worker.served == [1]
    assert worker._leftovers() == [2]


def test_a_second_close_is_a_no_op_and_start_runs_the_thread_once() -> None:
    worker = Collector()
    worker.start()
    worker.start()
    worker.close(timeout=5)
    worker.close(timeout=5)
    assert not worker.alive


class Rounds(PeriodicWorker):
    def __init__(self, interval_s: float, busy_rounds: int = 0, wait_first: bool = False) -> None:
        super().__init__("rounds", interval_s, wait_first=wait_first)
        self.count = 0
        self.busy_rounds = busy_rounds
        self.ran = threading.Event()

    def round(self) -> bool:
        self.count += 1
        self.ran.set()
        return self.count <= self.busy_rounds


def test_a_round_at_start_then_one_per_poke() -> None:
    worker = Rounds(interval_s=60)
    worker.start()
    assert worker.ran.wait(5)
    assert worker.count == 1
    worker.ran.clear()
    worker.poke()
    assert worker.ran.wait(5)
    worker.stop(timeout=5)
    assert worker.count == 2 and not worker.alive


def test_busy_rounds_follow_each_other_without_waiting() -> None:
    worker = Rounds(interval_s=60, busy_rounds=5)
    worker.start()
    for _ in range(100):
        if worker.count >= 6:
            break
        worker.ran.wait(0.05)
    worker.stop(timeout=5)
    assert worker.count == 6  # five busy rounds, then one that found nothing, then the 60 s wait


def test_wait_first_runs_no_round_before_the_interval_and_stop_ends_the_wait() -> None:
    worker = Rounds(interval_s=60, wait_first=True)
    worker.start()
    worker.stop(timeout=5)
    assert worker.count == 0 and not worker.alive
