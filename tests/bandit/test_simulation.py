"""Seeded simulations of the real policy and allocation: who gets the traffic, and whether the
inverse-propensity estimates from the logged probabilities hold where the plain means do not."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.stats.ipw import arm_estimates
from tests.harness.bandit_sim import simulate

TRUE = {"best": 0.9, "middle": 0.7, "worst": 0.3}
MIN_SHARE = 0.01
DELAYED = (30.0, 300.0)  # labels arriving 30 s to 5 min late


@pytest.mark.parametrize("delay", [(0.0, 0.0), DELAYED], ids=["prompt", "delayed"])
def test_the_best_arm_takes_the_traffic_and_the_worst_keeps_its_floor(delay: tuple[float, float]) -> None:
    for seed in range(5):
        run = simulate(TRUE, rewards_wanted=3000, delay=delay, min_share=MIN_SHARE, seed=seed)
        last = run.arms[-1000:]
        assert (last == "best").mean() >= 0.80, seed
        assert (last == "worst").mean() <= MIN_SHARE + 0.02, seed


def _coverage(runs: int, **kwargs: object) -> tuple[dict[str, int], dict[str, list[float]], dict[str, list[float]]]:
    covered = dict.fromkeys(TRUE, 0)
    naive: dict[str, list[float]] = {a: [] for a in TRUE}
    ipw: dict[str, list[float]] = {a: [] for a in TRUE}
    for seed in range(runs):
        run = simulate(TRUE, seed=seed, **kwargs)  # type: ignore[arg-type]
        for arm, e in arm_estimates(run.arms, run.rewards, run.propensity).items():
            covered[arm] += e.ipw_low <= run.truth[arm] <= e.ipw_high
            naive[arm].append(e.naive_mean - run.truth[arm])
            ipw[arm].append(e.ipw_mean - run.truth[arm])
    return covered, naive, ipw


@pytest.mark.parametrize("delay", [(0.0, 0.0), DELAYED], ids=["prompt", "delayed"])
def test_ipw_intervals_cover_the_true_means(delay: tuple[float, float]) -> None:
    covered, _, ipw = _coverage(200, delay=delay)
    for arm in TRUE:
        assert covered[arm] >= 0.93 * 200, (arm, covered)
        assert abs(np.mean(ipw[arm])) < 0.02, arm


@pytest.mark.parametrize("delay", [(0.0, 0.0), DELAYED], ids=["prompt", "delayed"])
def test_under_drift_the_naive_means_are_biased_and_ipw_is_not(delay: tuple[float, float]) -> None:
    """Every arm's reward is 0.2 lower in the first two minutes (a time-of-day effect): the arms the
    bandit starves afterwards were mostly served then, so their plain means are biased low. Weighting by
    the logged probabilities recovers the mean over the whole period."""
    _, naive, ipw = _coverage(200, delay=delay, drift=lambda t: -0.2 if t < 120 else 0.0)
    for arm in ("middle", "worst"):
        bias, se = np.mean(naive[arm]), np.std(naive[arm]) / np.sqrt(200)
        assert bias < -0.04 and bias < -10 * se, (arm, bias, se)
        ipw_bias, ipw_se = np.mean(ipw[arm]), np.std(ipw[arm]) / np.sqrt(200)
        assert abs(ipw_bias) < 0.015 and abs(ipw_bias) < 3 * ipw_se, (arm, ipw_bias, ipw_se)
