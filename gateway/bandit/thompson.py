"""Thompson sampling (Thompson 1933): each arm's posterior over its mean reward, and the weights that
route traffic, each arm's probability of being the best one, estimated from posterior draws.

0/1 rewards get a Beta-Bernoulli posterior from a uniform Beta(1, 1) prior. Other rewards get a
Normal posterior for the mean: centred on the sample mean with the standard error (a Student t with
n - 1 degrees of freedom, the flat-prior posterior of a Normal mean with unknown variance). Every arm
keeps at least ``min_share``: the rest is shared in proportion to the probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from gateway.bandit.spec import RewardKind

__all__ = ["ArmRewards", "Posterior", "RewardKind", "probability_best", "with_floor"]


@dataclass(frozen=True, slots=True)
class ArmRewards:
    """What an arm has earned so far: the number of rewards, their sum and their sum of squares."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, reward: float) -> ArmRewards:
        return ArmRewards(self.n + 1, self.total + reward, self.squares + reward * reward)

    def __add__(self, other: ArmRewards) -> ArmRewards:
        return ArmRewards(self.n + other.n, self.total + other.total, self.squares + other.squares)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan


@dataclass(frozen=True, slots=True)
class Posterior:
    """One arm's posterior for its mean reward: the distribution to draw from, and its summary."""

    kind: RewardKind
    rewards: ArmRewards

    def _dist(self):
        r = self.rewards
        if self.kind is RewardKind.BINARY:
            return stats.beta(1.0 + r.total, 1.0 + r.n - r.total)
        if r.n < 2:
            return stats.norm(r.total if r.n else 0.0, 1e6)  # nothing known yet: flat over any reward
        variance = max((r.squares - r.total * r.total / r.n) / (r.n - 1), 1e-12)
        return stats.t(r.n - 1, loc=r.mean, scale=math.sqrt(variance / r.n))

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return self._dist().rvs(size=size, random_state=rng)

    def summary(self) -> dict[str, float]:
        dist = self._dist()
        low, high = dist.interval(0.95)
        return {"mean": float(dist.mean()), "low": float(low), "high": float(high), "n": self.rewards.n}


def probability_best(posteriors: Mapping[str, Posterior], draws: int, rng: np.random.Generator) -> dict[str, float]:
    """Each arm's share of ``draws`` joint posterior draws in which it has the highest mean (ties
    split evenly)."""
    names = list(posteriors)
    samples = np.column_stack([posteriors[n].draw(draws, rng) for n in names])
    best = samples == samples.max(axis=1, keepdims=True)
    wins = (best / best.sum(axis=1, keepdims=True)).sum(axis=0) / draws
    return {n: float(w) for n, w in zip(names, wins, strict=True)}


def with_floor(probabilities: Mapping[str, float], min_share: float) -> dict[str, float]:
    """Weights summing to 1 with every arm at least ``min_share``: the floor, and the rest of the
    traffic in proportion to the probabilities."""
    k = len(probabilities)
    if min_share * k > 1 + 1e-12:
        raise ValueError(f"min_share {min_share} times {k} arms is more than all of the traffic")
    spare = 1.0 - min_share * k
    total = sum(probabilities.values())
    return {n: min_share + spare * (p / total if total > 0 else 1.0 / k) for n, p in probabilities.items()}
