"""The micro-batcher: every request gets its own rows' answers, calls never mix options, a failure
stays inside its call, and requests that arrive during a call share the next one."""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.serving.batching import BatcherClosed, MicroBatcher, QueueFull
from gateway.variants.output import Predictions


@dataclass
class Result:
    predictions: Predictions
    elapsed_ms: float


class FakeModel:
    """Predicts each row's own ``x`` (so a mixed-up split shows), recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool, Any]] = []
        self.gate: threading.Event | None = None
        self.fail_on: set[int] = set()
        self.entered = threading.Event()

    def __call__(self, rows: list[dict[str, Any]], probabilities: bool, params: Any) -> Result:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append((len(rows), probabilities, params))
        if any(r["x"] in self.fail_on for r in rows):
            raise RuntimeError("model broke")
        return Result(Predictions([r["x"] for r in rows]), 1.5)


def _prepare(rows: Any) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if not isinstance(r, dict) or "x" not in r:
            raise ValueError("bad row")
        out.append(dict(r))
    return out


jobs_strategy = st.lists(
    st.tuples(st.lists(st.integers(0, 10_000), min_size=1, max_size=12), st.booleans()), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(jobs=jobs_strategy, max_batch=st.integers(1, 20))
def test_each_request_gets_its_own_rows_and_calls_respect_limits_and_options(
        jobs: list[tuple[list[int], bool]], max_batch: int) -> None:
    model = FakeModel()
    model.gate = threading.Event()  # hold the first call so that the rest queue up behind it
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=max_batch)
    try:
        futures = [batcher.submit([{"x": x} for x in xs], probabilities=proba) for xs, proba in jobs]
        model.gate.set()
        wait(futures, timeout=10)
        for (xs, _), future in zip(jobs, futures, strict=True):
            result = future.result()
            assert [p.label for p in result.predictions] == xs
            assert result.rows == [{"x": x} for x in xs]
            assert result.batch_rows >= len(xs) and result.elapsed_ms == 1.5
        for rows, _, _ in model.calls:
            # a call is never over the limit, unless one request alone is larger (never split)
            assert rows <= max(max_batch, max(len(xs) for xs, _ in jobs))
        assert sum(rows for rows, _, _ in model.calls) == sum(len(xs) for xs, _ in jobs)
        assert batcher.calls == len(model.calls)
    finally:
        batcher.close()


def test_requests_arriving_during_a_call_share_the_next_one() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=64)
    try:
        first = batcher.submit([{"x": 0}])
        assert model.entered.wait(5)  # idle model: the first request is called at once, alone
        rest = [batcher.submit([{"x": i}]) for i in range(1, 9)]
        model.gate.set()
        wait([first, *rest], timeout=10)
        assert [rows for rows, _, _ in model.calls] == [1, 8]
        assert first.result().batch_rows == 1 and all(f.result().batch_rows == 8 for f in rest)
    finally:
        batcher.close()


def test_different_options_never_share_a_call() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=64)
    try:
        blocker = batcher.submit([{"x": 0}])
        assert model.entered.wait(5)
        a = [batcher.submit([{"x": i}], params={"k": 1}) for i in range(3)]
        b = [batcher.submit([{"x": i}], probabilities=True) for i in range(3)]
        c = [batcher.submit([{"x": i}]) for i in range(3)]
        model.gate.set()
        wait([blocker, *a, *b, *c], timeout=10)
        assert sorted(model.calls[1:], key=repr) == sorted([(3, False, {"k": 1}), (3, True, None), (3, False, None)],
                                                            key=repr)
    finally:
        batcher.close()


def test_a_model_error_fails_only_the_guilty_request_and_the_worker_goes_on() -> None:
    model = FakeModel()
    model.fail_on = {13}
    model.gate = threading.Event()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=4)
    try:
        blocker = batcher.submit([{"x": 0}])
        assert model.entered.wait(5)
        shared = [batcher.submit([{"x": x}]) for x in (1, 13, 2, 3)]  # one call of four: it fails...
        fine = [batcher.submit([{"x": x}]) for x in (4, 5)]
        model.gate.set()
        wait([blocker, *shared, *fine], timeout=10)
        assert blocker.result().predictions[0].label == 0
        with pytest.raises(RuntimeError, match="model broke"):  # ...then each is tried alone: only 13 fails
            shared[1].result()
        assert [shared[i].result().predictions[0].label for i in (0, 2, 3)] == [1, 2, 3]
        assert [shared[i].result().batch_rows for i in (0, 2, 3)] == [1, 1, 1]  # their own calls
        assert [f.result().predictions[0].label for f in fine] == [4, 5]
        assert batcher.submit([{"x": 7}]).result(5).predictions[0].label == 7
    finally:
        batcher.close()


def test_invalid_rows_fail_their_request_alone() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=64)
    try:
        blocker = batcher.submit([{"x": 0}])
        assert model.entered.wait(5)
        good, bad, good2 = batcher.submit([{"x": 1}]), batcher.submit([{"y": 1}]), batcher.submit([{"x": 2}])
        model.gate.set()
        wait([blocker, good, bad, good2], timeout=10)
        with pytest.raises(ValueError, match="bad row"):
            bad.result()
        assert good.result().predictions[0].label == 1 and good2.result().predictions[0].label == 2
        assert good.result().batch_rows == 2
        prepared = batcher.submit([{"x": 9}], prepared=True).result(5)  # validated already: taken as is
        assert prepared.predictions[0].label == 9
    finally:
        batcher.close()


def test_close_scores_what_is_queued_then_refuses() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=2)
    futures = [batcher.submit([{"x": i}]) for i in range(7)]
    threading.Timer(0.2, model.gate.set).start()
    batcher.close()
    assert [f.result(0).predictions[0].label for f in futures] == list(range(7))
    assert not batcher.alive
    with pytest.raises(BatcherClosed):
        batcher.submit([{"x": 1}])


def test_a_delay_gathers_rows_for_a_call_that_is_not_full() -> None:
    model = FakeModel()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=4, max_delay_s=0.5)
    try:
        futures = [batcher.submit([{"x": i}]) for i in range(4)]
        wait(futures, timeout=10)
        assert [rows for rows, _, _ in model.calls] == [4]  # full: no need to wait out the delay
    finally:
        batcher.close()


def test_a_full_queue_refuses_at_once_and_says_how_long_to_wait() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=8, max_queue_rows=10)
    try:
        blocker = batcher.submit([{"x": 0}])  # taken into a call at once: no longer queued
        assert model.entered.wait(5)
        queued = [batcher.submit([{"x": i} for i in range(4)]) for _ in range(2)]
        assert batcher.queued_rows == 8 and not batcher.saturated(within_s=0)
        with pytest.raises(QueueFull) as full:
            batcher.submit([{"x": 1} for _ in range(3)])  # 8 + 3 > 10
        assert (full.value.queued, full.value.limit) == (8, 10) and batcher.refused == 1
        assert batcher.saturated(within_s=60)
        batcher.submit([{"x": 1}, {"x": 2}])  # 8 + 2 fits
        assert batcher.queued_rows == 10 and batcher.saturated(within_s=0)
        model.gate.set()
        wait([blocker, *queued], timeout=10)
        assert all(f.exception() is None for f in queued)
        for _ in range(100):
            if batcher.queued_rows == 0:
                break
            time.sleep(0.02)
        assert batcher.queued_rows == 0 and not batcher.saturated(within_s=0)
        # nothing waits: a request larger than the bound goes alone, as one over max_batch_size does
        assert len(batcher.submit([{"x": i} for i in range(12)]).result(5).predictions) == 12
        assert batcher.seconds_per_row > 0
    finally:
        batcher.close()


def test_a_cancelled_job_is_dropped_before_its_model_call() -> None:
    model = FakeModel()
    model.gate = threading.Event()
    batcher = MicroBatcher("v", model, prepare=_prepare, max_batch_size=1, max_queue_rows=100)
    try:
        blocker = batcher.submit([{"x": 0}])
        assert model.entered.wait(5)
        gone = [batcher.submit([{"x": i}]) for i in range(1, 6)]
        kept = batcher.submit([{"x": 99}])
        assert all(f.cancel() for f in gone)  # queued: cancellable
        model.gate.set()
        assert kept.result(5).predictions[0].label == 99
        blocker.result(5)
        assert [rows for rows, _, _ in model.calls] == [1, 1]  # the blocker and the kept one: no call for the rest
        assert batcher.dropped == 5 and batcher.queued_rows == 0
    finally:
        batcher.close()
