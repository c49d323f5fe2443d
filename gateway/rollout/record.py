"""The rollout as it is kept: its record (spec, state, step, history, the last evaluation) and the
interface of the stores that keep it (gateway/state/: the local state file, or MLflow)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gateway.rollout.counts import RolloutCounts
from gateway.rollout.spec import RolloutSpec, RolloutState


@dataclass(frozen=True)
class RolloutRecord:
    rollout_id: str
    spec: RolloutSpec
    state: RolloutState
    step: int
    started_at: float
    updated_at: float
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)  # guardrails at the last look, running minima

    @property
    def weight(self) -> float:
        """The candidate's weight in force."""
        if self.state is RolloutState.PROMOTED:
            return 1.0
        if self.state in (RolloutState.ROLLED_BACK, RolloutState.ABORTED):
            return 0.0
        return self.spec.steps[self.step]

    def with_decision(self, entry: dict[str, Any], **changes: Any) -> RolloutRecord:
        now = time.time()
        return replace(self, updated_at=now, history=[*self.history, {"at": now, **entry}], **changes)


Change = Callable[[RolloutRecord | None], RolloutRecord | None]


class RolloutRecords(Protocol):
    """Where the rollout is kept: the state file (state/local_rollout.py) or MLflow (state/mlflow_rollout.py)."""

    def load(self) -> RolloutRecord | None: ...
    def update(self, change: Change) -> RolloutRecord | None: ...
    def put_counts(self, rollout_id: str, worker: str, counts: RolloutCounts) -> None: ...
    def counts(self, rollout_id: str) -> tuple[RolloutCounts, int]: ...
