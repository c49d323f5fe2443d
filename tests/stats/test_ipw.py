from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.stats.ipw import arm_estimates, regret


def test_fixed_equal_weights_give_the_plain_mean() -> None:
    arms = np.array(["a", "a", "b", "b", "b", "a"])
    rewards = np.array([1.0, 0.0, 1.0, 1.0, np.nan, 1.0])
    est = arm_estimates(arms, rewards, np.full(6, 0.5))
    assert est["a"].ipw_mean == pytest.approx(2 / 3) == est["a"].naive_mean
    assert est["b"].labelled == 2 and est["b"].n == 3 and est["b"].share == 0.5


def test_weights_undo_a_skewed_allocation() -> None:
    # Arm a's rewards: 0 while it was assigned with probability 0.9, 1 while with 0.1. Over the period
    # half of a's would-be requests fell in each phase: IPW says 0.5, the plain mean 0.1.
    arms = np.array(["a"] * 10)
    rewards = np.array([0.0] * 9 + [1.0])
    propensity = np.array([0.9] * 9 + [0.1])
    est = arm_estimates(arms, rewards, propensity)["a"]
    assert est.naive_mean == pytest.approx(0.1)
    assert est.ipw_mean == pytest.approx(0.5)
    assert est.ipw_low < 0.5 < est.ipw_high


def test_continuous_rewards_get_a_t_interval() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(-1.0, 0.3, 200)
    est = arm_estimates(np.array(["a"] * 200), values, np.full(200, 0.25))["a"]
    assert est.ipw_mean == pytest.approx(values.mean())
    assert est.ipw_high - est.ipw_low == pytest.approx(2 * 1.972 * values.std(ddof=1) / math.sqrt(200), rel=0.01)


def test_regret_against_the_best_arm() -> None:
    arms = np.array(["a"] * 8 + ["b"] * 2)
    est = arm_estimates(arms, np.array([1.0] * 6 + [0.0] * 2 + [0.0, 0.0]), np.full(10, 0.5))
    out = regret(arms, est)
    assert out["best"] == "a"
    assert out["total"] == pytest.approx(2 * 0.75)
    assert out["per_request"] == pytest.approx(0.15)


def test_rows_without_a_probability_are_left_out_of_ipw() -> None:
    est = arm_estimates(np.array(["a", "a"]), np.array([1.0, 0.0]), np.array([np.nan, 0.5]))["a"]
    assert est.ipw_mean == 0.0 and est.naive_mean == 0.5
