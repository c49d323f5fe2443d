"""Shadow scoring's bookkeeping: a bounded number of scorings in flight, and what each one leaves
behind (counts, agreement with the primary, metrics). The scoring itself goes through the candidate's
micro-batcher like any request (see pipeline.py). Framework-free."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from gateway.domain.messages import first_line
from gateway.domain.records import PredictionRecord, predictions_of
from gateway.serving.observers import Observers
from gateway.serving.outcome import PredictionOutcome, ServiceCounters
from gateway.spool.store import DuplicateRequest

log = logging.getLogger("gateway.scoring")


class ShadowBook:
    def __init__(self, counts: ServiceCounters, observers: Observers, queue: int = 1000) -> None:
        self.counts = counts
        self.observers = observers
        self._slots = threading.BoundedSemaphore(queue)

    def reserve(self) -> bool:
        """A place for one more scoring in flight; False (counted as shadow_dropped) when all are taken."""
        if self._slots.acquire(blocking=False):
            return True
        self.counts.add("shadow_dropped")
        return False

    def release(self) -> None:
        self._slots.release()

    def settled(self, outcome: PredictionOutcome, records: Sequence[PredictionRecord],
                write_error: BaseException | None) -> None:
        """The candidate scored the request and its records were written (or why not)."""
        try:
            if isinstance(write_error, DuplicateRequest):  # scored before, by an earlier try of this request
                self.counts.add("shadow_scored")
            elif write_error is not None:
                self._failed(outcome, write_error)
            else:
                self.counts.add("shadow_scored")
                agree = sum(mine == theirs for mine, theirs in zip(predictions_of(records), outcome.predictions.labels,
                                                               strict=True))
                self.counts.add("shadow_agree", agree)
                primaries = outcome.predictions.labels
                self.observers.records(records, primaries=primaries)
        finally:
            self.release()

    def failed(self, outcome: PredictionOutcome, error: BaseException) -> None:
        """The candidate could not score it: counted and logged; the primary's answer is untouched."""
        try:
            self._failed(outcome, error)
        finally:
            self.release()

    def _failed(self, outcome: PredictionOutcome, error: BaseException) -> None:
        self.counts.add("shadow_failed")
        log.warning("shadow scoring of %s by %s failed: %s", outcome.request_id, outcome.shadow, first_line(error))
