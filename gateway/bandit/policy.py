"""One reweighting: from each arm's rewards to the next weights and bucket ranges. Pure logic: the
reweigher (reweigher.py) reads the rewards and installs the result; the simulations drive it directly."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from gateway.bandit.thompson import ArmRewards, Posterior, RewardKind, probability_best, with_floor
from gateway.routing import allocation
from gateway.routing.allocation import Segment


class Phase(StrEnum):
    BURN_IN = "burn_in"  # equal weights until every arm has its labelled predictions
    THOMPSON = "thompson"


@dataclass(frozen=True, slots=True)
class Reweighting:
    """What one reweighting decided, and why: the change log's run and GET /bandit show it."""

    phase: Phase
    weights: dict[str, float]  # as routed: whole buckets over BUCKETS
    segments: tuple[Segment, ...]
    probability_best: dict[str, float]
    posteriors: dict[str, dict[str, float]]
    moved_share: float  # of the bucket space (sticky users) that changed arm
    labelled: dict[str, int] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {"bandit": {"phase": str(self.phase), "weights": self.weights, "probability_best": self.probability_best,
                           "posteriors": self.posteriors, "labelled": self.labelled,
                           "moved_share": self.moved_share}}


class ThompsonPolicy:
    def __init__(self, arms: Sequence[str], kind: RewardKind, *, burn_in: int = 100, min_share: float = 0.01,
                 draws: int = 10_000, seed: int | None = None) -> None:
        if len(arms) < 2:
            raise ValueError("a bandit needs at least two arms")
        self.arms = list(arms)
        self.kind = kind
        self.burn_in = burn_in
        self.min_share = min_share
        self.draws = draws
        self._rng = np.random.default_rng(seed)
        # Whole buckets per arm for the floor: rounding up keeps every arm at or over min_share.
        self.floor_buckets = math.ceil(min_share * allocation.BUCKETS - 1e-9)

    def start(self) -> tuple[Segment, ...]:
        """Equal weights, cut in arm order."""
        return allocation.initial(allocation.quantise({a: 1.0 for a in self.arms}, self.floor_buckets))

    def reweigh(self, rewards: Mapping[str, ArmRewards], segments: Sequence[Segment]) -> Reweighting:
        per_arm = {a: rewards.get(a, ArmRewards()) for a in self.arms}
        posteriors = {a: Posterior(self.kind, r) for a, r in per_arm.items()}
        labelled = {a: r.n for a, r in per_arm.items()}
        summaries = {a: p.summary() for a, p in posteriors.items()}
        if min(labelled.values()) < self.burn_in:
            phase, best = Phase.BURN_IN, {a: 1.0 / len(self.arms) for a in self.arms}
            target = {a: 1.0 for a in self.arms}
        else:
            phase, best = Phase.THOMPSON, probability_best(posteriors, self.draws, self._rng)
            target = with_floor(best, self.min_share)
        counts = allocation.quantise(target, self.floor_buckets)
        new = allocation.rebalance(segments, counts)
        old_shares = allocation.shares(segments)
        moved = sum(max(0, old_shares.get(a, 0) - counts[a]) for a in self.arms) / allocation.BUCKETS
        return Reweighting(phase, {a: counts[a] / allocation.BUCKETS for a in self.arms}, new, best, summaries,
                           moved, labelled)
