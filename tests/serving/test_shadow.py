"""Shadow bookkeeping: a bounded number in flight, each slot given back whatever happens, and the
counts a shadow scoring leaves."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.serving.observers import Observers
from gateway.serving.outcome import ServiceCounters
from gateway.serving.shadow import ShadowBook
from gateway.spool.store import DuplicateRequest, SpoolWriteError
from gateway.variants.output import Predictions
from tests.harness.records import rec


class Seen:
    def __init__(self) -> None:
        self.calls: list[tuple[int, Any]] = []

    def on_records(self, records: list[Any], primaries: Any = None) -> None:
        self.calls.append((len(records), primaries))


def test_slots_are_bounded_and_always_given_back() -> None:
    counts, seen = ServiceCounters(), Seen()
    observers = Observers()
    observers.add(seen)
    book = ShadowBook(counts, observers, queue=2)
    outcome = SimpleNamespace(request_id="r1", shadow="v2.0",
                              predictions=Predictions(["Setosa", "Virginica"], [0, 2]))
    assert book.reserve() and book.reserve()
    assert not book.reserve() and counts.snapshot()["shadow_dropped"] == 1
    book.settled(outcome, [rec(1, row=0), rec(1, row=1)], None)  # both predicted Setosa: 1 of 2 agree
    book.failed(outcome, RuntimeError("candidate broke"))
    assert book.reserve() and book.reserve()  # both slots came back
    book.settled(outcome, [rec(1)], DuplicateRequest([rec(1)]))  # an earlier try scored it already
    book.settled(outcome, [rec(1)], SpoolWriteError("disk full"))
    assert counts.snapshot() == {"shadow_dropped": 1, "shadow_scored": 2, "shadow_agree": 1, "shadow_failed": 2}
    assert seen.calls == [(2, ["Setosa", "Virginica"])]
    assert book.reserve() and book.reserve() and not book.reserve()
