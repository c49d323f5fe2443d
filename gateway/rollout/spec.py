"""What a guarded rollout is: the control, the candidate, the candidate's weight at each step, the
samples a step needs, and the guardrails. One pydantic model serves the ``[rollout]`` config section
and the admin API's body, so both refuse the same bad input with the same message."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        return self in (RolloutState.RUNNING, RolloutState.PAUSED)


class Decision(StrEnum):
    START = "start"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    INCONCLUSIVE = "inconclusive"  # max_samples reached, neither breached nor cleared: paused
    SUSPECT = "suspect"  # a sample-ratio mismatch: the split is not what was asked, the results are suspect: paused
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


class Require(StrEnum):
    """What a guardrail needs before a step may advance."""

    CLEARED = "cleared"  # evidence of safety: its interval lies on the safe side of the threshold
    NOT_BREACHED = "not_breached"  # no evidence of harm: its interval does not lie wholly beyond it


RequireField = Literal["cleared", "not_breached"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorRateGuard(_Spec):
    """Candidate's error rate (model failures per request) minus the control's."""

    enabled: bool = True
    max_increase: float = Field(0.01, ge=0, le=1)
    require: RequireField = "not_breached"


class LatencyGuard(_Spec):
    """Candidate's p95 request time over the control's."""

    enabled: bool = True
    max_ratio: float = Field(1.5, ge=0)
    require: RequireField = "cleared"


class DisagreementGuard(_Spec):
    """Share of requests answered by the control on which the candidate, scored in shadow on the same
    input, answers differently. Needs the shadow scoring that this guardrail turns on."""

    enabled: bool = False
    max_rate: float = Field(0.2, ge=0, le=1)
    shadow_sample_rate: float = Field(0.1, gt=0, le=1)
    require: RequireField = "not_breached"


class AccuracyGuard(_Spec):
    """Control's accuracy from /feedback minus the candidate's. The margin is a non-inferiority
    margin: with ``cleared`` the candidate must be shown no worse than ``max_drop`` below the control
    (with 0 it must be shown better, which an equal model never is)."""

    enabled: bool = True
    max_drop: float = Field(0.02, ge=0, le=1)
    require: RequireField = "cleared"


class SrmGuard(_Spec):
    """Traffic split within the step against the weights in force (a broken split makes every other
    comparison suspect): a mismatch rolls back like a breach."""

    enabled: bool = True
    alpha: float = Field(0.001, gt=0, lt=1)


class Guardrails(_Spec):
    error_rate: ErrorRateGuard = ErrorRateGuard()
    latency_p95: LatencyGuard = LatencyGuard()
    disagreement: DisagreementGuard = DisagreementGuard()
    accuracy: AccuracyGuard = AccuracyGuard()
    srm: SrmGuard = SrmGuard()


class RolloutSpec(_Spec):
    control: str = Field("v1.0", min_length=1)
    candidate: str = Field("v2.0", min_length=1)
    steps: list[float] = Field(default_factory=lambda: [0.05, 0.25, 0.5, 1.0], min_length=1, max_length=100)
    min_samples: int = Field(500, ge=1)  # candidate requests per step before it may advance
    # Candidate requests per step after which a guardrail neither breached nor cleared makes the step
    # inconclusive: the rollout pauses and says which guardrail (resume gives the step as many again).
    max_samples: int = Field(20_000, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    tuning_samples: int = Field(2000, ge=10)  # the mixture's n*: intervals are tightest near it
    guardrails: Guardrails = Guardrails()

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        for i, w in enumerate(steps):
            if isinstance(w, bool) or not 0 < w <= 1:
                raise ValueError(f"steps[{i}] = {w!r}: every step must be a weight in (0, 1]")
            if i and w <= steps[i - 1]:
                raise ValueError(f"steps[{i}] = {w!r}: steps must increase ({steps[i - 1]!r} comes before it)")
        return steps

    @model_validator(mode="after")
    def _two_variants(self) -> RolloutSpec:
        if self.control == self.candidate:
            raise ValueError("candidate: must differ from control")
        if self.max_samples < self.min_samples:
            raise ValueError(f"max_samples: {self.max_samples} is below min_samples {self.min_samples}")
        return self

    def check_variants(self, names: list[str]) -> None:
        """Raises ValueError naming the key when a variant is not configured."""
        for key in ("control", "candidate"):
            if getattr(self, key) not in names:
                raise ValueError(f"{key}: unknown variant {getattr(self, key)!r}; configured: {names}")


class RolloutSection(RolloutSpec):
    """``[rollout]``: with ``enabled``, a rollout starts at start-up unless one is already stored."""

    enabled: bool = False
    interval_seconds: float = Field(1.0, gt=0, le=3600)  # how often the controller looks
