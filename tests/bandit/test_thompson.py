from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.bandit.policy import Phase, ThompsonPolicy
from gateway.bandit.thompson import ArmRewards, Posterior, RewardKind, probability_best, with_floor


def rewards(n: int, mean: float) -> ArmRewards:
    ones = round(n * mean)
    return ArmRewards(n, float(ones), float(ones))


def test_beta_posterior_of_binary_rewards() -> None:
    summary = Posterior(RewardKind.BINARY, rewards(100, 0.8)).summary()
    assert summary["mean"] == pytest.approx(81 / 102)  # Beta(1 + 80, 1 + 20)
    assert summary["low"] < 0.8 < summary["high"]


def test_normal_posterior_of_continuous_rewards_centres_on_the_mean() -> None:
    values = np.random.default_rng(0).normal(-2.0, 0.5, 400)
    r = ArmRewards(len(values), float(values.sum()), float((values ** 2).sum()))
    summary = Posterior(RewardKind.CONTINUOUS, r).summary()
    assert summary["mean"] == pytest.approx(values.mean())
    assert summary["high"] - summary["low"] == pytest.approx(2 * 1.966 * values.std(ddof=1) / 20, rel=0.01)


def test_probability_best_favours_the_better_arm_and_sums_to_one() -> None:
    rng = np.random.default_rng(1)
    p = probability_best({"a": Posterior(RewardKind.BINARY, rewards(500, 0.9)),
                          "b": Posterior(RewardKind.BINARY, rewards(500, 0.7)),
                          "c": Posterior(RewardKind.BINARY, rewards(50, 0.5))}, 20_000, rng)
    assert sum(p.values()) == pytest.approx(1.0)
    assert p["a"] > 0.99


@given(st.lists(st.floats(0, 1), min_size=2, max_size=8), st.floats(0, 0.1))
def test_the_floor_keeps_every_arm_in_and_the_weights_sum_to_one(probs: list[float], floor: float) -> None:
    weights = with_floor({str(i): p for i, p in enumerate(probs)}, floor / len(probs))
    assert sum(weights.values()) == pytest.approx(1.0)
    assert min(weights.values()) >= floor / len(probs) - 1e-12


def test_a_floor_over_all_traffic_is_refused() -> None:
    with pytest.raises(ValueError, match="more than all of the traffic"):
        with_floor({"a": 0.5, "b": 0.5, "c": 0.0}, 0.4)


def test_equal_weights_until_every_arm_has_its_burn_in() -> None:
    policy = ThompsonPolicy(["a", "b"], RewardKind.BINARY, burn_in=100, seed=0)
    step = policy.reweigh({"a": rewards(500, 1.0), "b": rewards(99, 0.0)}, policy.start())
    assert step.phase is Phase.BURN_IN and step.weights == {"a": 0.5, "b": 0.5}
    step = policy.reweigh({"a": rewards(500, 1.0), "b": rewards(100, 0.0)}, step.segments)
    assert step.phase is Phase.THOMPSON and step.weights == {"a": 0.99, "b": 0.01}
    assert step.moved_share == pytest.approx(0.49)


@settings(max_examples=200, deadline=None)
@given(low=st.floats(-1e12, 1e12), width=st.floats(1e-6, 1e12),
       shares=st.lists(st.lists(st.floats(0, 1), max_size=60), min_size=2, max_size=3))
def test_rewards_within_a_range_never_break_a_reweighting(low: float, width: float, shares: list[list[float]]) -> None:
    """[bandit] reward_range bounds what a reward can be; within any range it accepts, a reweighting
    gives finite weights (one reward of 1e308 once froze the weights for good)."""
    from gateway.bandit.spec import BanditSection

    high = low + width
    assume(high > low and high - low <= 1e12)
    BanditSection(reward_range=(low, high))  # a range the config accepts
    rewards = {}
    for i, arm in enumerate(shares):
        total = ArmRewards()
        for s in arm:
            total = total.add(min(high, low + s * width))
        rewards[f"arm{i}"] = total
    policy = ThompsonPolicy(list(rewards), RewardKind.CONTINUOUS, burn_in=1, min_share=0.01, draws=200, seed=0)
    result = policy.reweigh(rewards, policy.start())
    assert all(math.isfinite(w) for w in result.weights.values())
    assert math.isclose(sum(result.weights.values()), 1.0, abs_tol=1e-9)
