"""A rollout's live counts: per arm, per step's weights, and of shadow pairs. Plain sums and
histograms, so that counts add up: each worker (or replica) keeps its own, and ``merged`` gives the
whole traffic's. ``to_dict``/``from_dict`` are their form in the shared state file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ARM_KEYS = ("requests", "errors", "labelled", "correct")


def _add_into(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


@dataclass
class ArmCounts:
    """One variant's randomised traffic: answers, model failures, labels (right ones), and request
    times as a histogram (bin of ``gateway.stats.sequential.histogram_bin`` -> count)."""

    requests: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    latency_ms: dict[str, int] = field(default_factory=dict)

    def add(self, other: ArmCounts) -> None:
        for key in ARM_KEYS:
            setattr(self, key, getattr(self, key) + getattr(other, key))
        _add_into(self.latency_ms, other.latency_ms)


@dataclass
class ShadowCounts:
    """Rows of the control's requests that the candidate scored in shadow, and where it answered
    otherwise."""

    pairs: int = 0
    disagree: int = 0


@dataclass
class RolloutCounts:
    arms: dict[str, ArmCounts] = field(default_factory=dict)
    steps: dict[str, dict[str, int]] = field(default_factory=dict)  # weights tag -> variant -> requests
    shadow: ShadowCounts = field(default_factory=ShadowCounts)
    # weights tag -> variant -> sticky users at their first request (in each worker): the unit of the
    # sample-ratio check when routing is sticky
    user_steps: dict[str, dict[str, int]] = field(default_factory=dict)

    def arm(self, variant: str) -> ArmCounts:
        """The variant's counts, created empty on first use."""
        return self.arms.setdefault(variant, ArmCounts())

    def count_split(self, weights_tag: str, variant: str) -> None:
        split = self.steps.setdefault(weights_tag, {})
        split[variant] = split.get(variant, 0) + 1

    def count_user(self, weights_tag: str, variant: str) -> None:
        split = self.user_steps.setdefault(weights_tag, {})
        split[variant] = split.get(variant, 0) + 1

    def merge(self, other: RolloutCounts) -> None:
        """Add ``other``'s counts into these."""
        for variant, arm in other.arms.items():
            self.arm(variant).add(arm)
        for tag, split in other.steps.items():
            _add_into(self.steps.setdefault(tag, {}), split)
        for tag, split in other.user_steps.items():
            _add_into(self.user_steps.setdefault(tag, {}), split)
        self.shadow.pairs += other.shadow.pairs
        self.shadow.disagree += other.shadow.disagree

    @classmethod
    def merged(cls, parts: Iterable[RolloutCounts]) -> RolloutCounts:
        """Several workers' counts added up."""
        total = cls()
        for part in parts:
            total.merge(part)
        return total

    def copy(self) -> RolloutCounts:
        return RolloutCounts.merged([self])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutCounts:
        arms = {str(v): ArmCounts(**{k: int(a.get(k, 0)) for k in ARM_KEYS},
                                  latency_ms={str(b): int(n) for b, n in a.get("latency_ms", {}).items()})
                for v, a in data.get("arms", {}).items()}
        steps = {str(t): {str(v): int(n) for v, n in split.items()} for t, split in data.get("steps", {}).items()}
        shadow = data.get("shadow", {})
        users = {str(t): {str(v): int(n) for v, n in split.items()} for t, split in data.get("user_steps", {}).items()}
        return cls(arms, steps, ShadowCounts(int(shadow.get("pairs", 0)), int(shadow.get("disagree", 0))), users)
