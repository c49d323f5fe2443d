"""A seeded bandit simulation over the real policy and allocation code: requests arrive at a fixed
rate, each is routed by the bucket ranges in force (as the Router does), its 0/1 reward arrives after a
delay, and the policy reweighs every ``update_seconds`` on the rewards that have arrived."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.bandit.policy import ThompsonPolicy
from gateway.bandit.thompson import ArmRewards, RewardKind
from gateway.routing import allocation


@dataclass
class SimResult:
    arms: np.ndarray  # the arm of each assignment, in order
    propensity: np.ndarray  # its assignment probability as logged
    rewards: np.ndarray  # its reward (NaN if it had not arrived when the run stopped)
    weights: list[dict[str, float]]  # after each reweighting
    times: np.ndarray  # when each assignment was made (s)
    # Each arm's mean reward over the times of the requests whose rewards arrived: what IPW estimates
    # (under drift, a request's reward depends on when it was made; delayed rewards of late requests
    # have not arrived when the run stops, for every arm alike).
    truth: dict[str, float]


def simulate(true_means: dict[str, float], *, rewards_wanted: int = 3000, rate: float = 10.0,
             update_seconds: float = 60.0, delay: tuple[float, float] = (0.0, 0.0), burn_in: int = 100,
             min_share: float = 0.01, seed: int = 0, draws: int = 2000,
             drift: Callable[[float], float] | None = None) -> SimResult:
    """``drift(t)``: added to every arm's mean reward at time t (a time-of-day effect)."""
    rng = np.random.default_rng(seed)
    names = list(true_means)
    policy = ThompsonPolicy(names, RewardKind.BINARY, burn_in=burn_in, min_share=min_share, draws=draws,
                            seed=seed + 1)
    segments = policy.start()
    starts, owners, prob = _table(segments)
    pending: list[tuple[float, int]] = []  # (arrival time, assignment index)
    arms: list[str] = []
    propensity: list[float] = []
    outcome: list[float] = []
    got: dict[str, ArmRewards] = {n: ArmRewards() for n in names}
    arrived: list[int] = []
    times: list[float] = []
    weights_log: list[dict[str, float]] = []
    next_update, now, n_rewards = update_seconds, 0.0, 0
    while n_rewards < rewards_wanted:
        now += 1.0 / rate
        while pending and pending[0][0] <= now:
            _, i = heapq.heappop(pending)
            got[arms[i]] = got[arms[i]].add(outcome[i])
            arrived.append(i)
            n_rewards += 1
        if now >= next_update:
            step = policy.reweigh(got, segments)
            segments = step.segments
            starts, owners, prob = _table(segments)
            weights_log.append(step.weights)
            next_update += update_seconds
        b = int(rng.integers(allocation.BUCKETS))
        arm = owners[bisect.bisect_right(starts, b) - 1]
        arms.append(arm)
        propensity.append(prob[arm])
        times.append(now)
        outcome.append(float(rng.random() < true_means[arm] + (drift(now) if drift else 0.0)))
        heapq.heappush(pending, (now + float(rng.uniform(*delay)), len(arms) - 1))
    received = np.full(len(arms), np.nan)
    received[arrived] = np.asarray(outcome)[arrived]
    mean_drift = float(np.mean([drift(times[i]) for i in arrived])) if drift else 0.0
    return SimResult(np.asarray(arms), np.asarray(propensity), received, weights_log, np.asarray(times),
                     {a: m + mean_drift for a, m in true_means.items()})


def _table(segments: tuple[tuple[str, int, int], ...]) -> tuple[list[int], list[str], dict[str, float]]:
    starts = [lo for _, lo, _ in segments]
    owners = [arm for arm, _, _ in segments]
    share = allocation.shares(segments)
    return starts, owners, {a: n / allocation.BUCKETS for a, n in share.items()}
