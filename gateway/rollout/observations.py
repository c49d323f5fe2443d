"""The live counts a rollout's guardrails read, kept by every worker process for the active rollout.

A listener of the scorer (answers, shadow scorings, model failures) and of /feedback. Only requests
whose variant was chosen at random (weighted or sticky) count: forced requests say nothing about a
split. The counts (counts.py) add up: each worker writes its own to the shared state and the
controller sums them. Nothing here needs MLflow.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.domain.records import RANDOMISED, PredictionRecord, predictions_of, randomisation_unit
from gateway.rollout.counts import ArmCounts, RolloutCounts
from gateway.stats.sequential import histogram_bin

MAX_USERS_PER_STEP = 1_000_000  # users remembered per step's weights (about 100 MB); past it, not counted


@dataclass(frozen=True, slots=True)
class Following:
    """The active rollout this worker counts for."""

    rollout_id: str
    control: str
    candidate: str
    started_ms: int = 0  # feedback on predictions made before the rollout does not count


class RolloutObserver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.following: Following | None = None
        self._counts = RolloutCounts()
        self._dirty = False
        self._users: dict[str, set[str]] = {}  # weights tag -> sticky users seen by this worker

    def follow(self, following: Following | None) -> None:
        """Count for this rollout from now on; a new rollout starts from zero."""
        with self._lock:
            if following is None or self.following is None or following.rollout_id != self.following.rollout_id:
                self._counts = RolloutCounts()
                self._users = {}
                self._dirty = True
            self.following = following

    def _arm_of(self, variant: str) -> ArmCounts | None:
        f = self.following
        if f is None or variant not in (f.control, f.candidate):
            return None
        return self._counts.arm(variant)

    def on_records(self, records: Sequence[PredictionRecord], primaries: Sequence[object] | None = None) -> None:
        first = records[0]
        with self._lock:
            f = self.following
            if f is None:
                return
            if first.role == "shadow":
                if first.model_version == f.candidate and primaries is not None:
                    shadow = self._counts.shadow
                    shadow.pairs += len(records)
                    shadow.disagree += sum(p != mine for p, mine in zip(primaries, predictions_of(records),
                                                                        strict=True))
                    self._dirty = True
                return
            if first.routing not in RANDOMISED:
                return
            arm = self._arm_of(first.model_version)
            if arm is None:
                return
            unit = randomisation_unit(first.routing, first.user, first.request_id)
            arm.count("requests", unit)
            ms = first.request_time_ms if first.request_time_ms is not None else first.inference_time_ms
            arm.count_time(histogram_bin(float(ms)), unit)
            # Keyed by the weights the request was routed under (not by step): a request routed just
            # before a change, and counted just after it, still lands with its own weights.
            self._counts.count_split(first.weights, first.model_version)
            if first.routing == "sticky" and first.user:
                seen = self._users.setdefault(first.weights, set())
                if first.user not in seen and len(seen) < MAX_USERS_PER_STEP:
                    seen.add(first.user)
                    self._counts.count_user(first.weights, first.model_version)
            self._dirty = True

    def on_error(self, variant: str, routing: str, weights_tag: str, unit: str) -> None:
        """A model failure answering a request (500): counted against its variant."""
        with self._lock:
            if routing not in RANDOMISED:
                return
            arm = self._arm_of(variant)
            if arm is not None:
                arm.count("errors", unit)
                self._counts.count_split(weights_tag, variant)
                self._dirty = True

    def on_feedback(self, variant: str, routing: str, correct: bool | None, predicted_ms: int, unit: str) -> None:
        if correct is None:
            return
        with self._lock:
            if routing not in RANDOMISED or self.following is None or predicted_ms < self.following.started_ms:
                return
            arm = self._arm_of(variant)
            if arm is not None:
                arm.count("labelled", unit)
                arm.count("correct", unit, int(correct))
                self._dirty = True

    def current(self) -> tuple[str, RolloutCounts] | None:
        """(rollout id, a copy of the counts) of the rollout followed, for /metrics."""
        with self._lock:
            if self.following is None:
                return None
            return self.following.rollout_id, self._counts.copy()

    def take_snapshot(self) -> tuple[str, RolloutCounts] | None:
        """(rollout id, a copy of the counts) if they changed since the last call, else None."""
        with self._lock:
            if self.following is None or not self._dirty:
                return None
            self._dirty = False
            return self.following.rollout_id, self._counts.copy()
