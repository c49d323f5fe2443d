"""Who hears about served predictions, model failures and labels: the metrics and the rollout's live
counts. Typed protocols instead of duck typing, and one place that fans an event out to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from gateway.domain.records import PredictionRecord


@runtime_checkable
class RecordObserver(Protocol):
    def on_records(self, records: Sequence[PredictionRecord], primaries: Sequence[Any] | None = None) -> None:
        """Records served (``primaries`` None) or shadow records beside the primary's labels."""


@runtime_checkable
class ErrorObserver(Protocol):
    def on_error(self, variant: str, routing: str, weights_tag: str, unit: str) -> None:
        """A model call failed on valid rows; ``unit`` is what was randomised (randomisation_unit)."""


@runtime_checkable
class FeedbackObserver(Protocol):
    def on_feedback(self, variant: str, routing: str, correct: bool | None, predicted_ms: int, unit: str) -> None:
        """A ground-truth label arrived for a prediction this process answered."""


class Observers:
    """The observers of one gateway; each hears the events its protocol names."""

    def __init__(self) -> None:
        self._records: list[RecordObserver] = []
        self._errors: list[ErrorObserver] = []
        self._feedback: list[FeedbackObserver] = []

    def add(self, observer: object) -> None:
        """Subscribe ``observer`` to every event whose method it has."""
        matched = False
        for protocol, into in ((RecordObserver, self._records), (ErrorObserver, self._errors),
                               (FeedbackObserver, self._feedback)):
            if isinstance(observer, protocol):
                into.append(observer)  # type: ignore[arg-type]
                matched = True
        if not matched:
            raise TypeError(f"{type(observer).__name__} observes nothing (on_records, on_error or on_feedback)")

    def records(self, records: Sequence[PredictionRecord], primaries: Sequence[Any] | None = None) -> None:
        for observer in self._records:
            observer.on_records(records, primaries=primaries)

    def model_error(self, variant: str, routing: str, weights_tag: str, unit: str) -> None:
        for observer in self._errors:
            observer.on_error(variant, routing, weights_tag, unit)

    def feedback(self, variant: str, routing: str, correct: bool | None, predicted_ms: int, unit: str) -> None:
        for observer in self._feedback:
            observer.on_feedback(variant, routing, correct, predicted_ms, unit)
