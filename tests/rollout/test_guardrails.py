"""Promotion on evidence: a guardrail with ``require = "cleared"`` holds its step until its always-valid
interval lies on the safe side of the threshold, and a step that reaches ``max_samples`` without that
is inconclusive (paused, naming the guardrail). Seeded simulations through the real controller."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.rollout.spec import RolloutSpec, RolloutState
from tests.rollout.test_controller import Worker, until_decided

LATENCY_ONLY = {"accuracy": {"enabled": False}, "latency_p95": {"max_ratio": 1.1, "require": "cleared"}}


def _latency_spec(**kw: object) -> RolloutSpec:
    return RolloutSpec.model_validate({"control": "v0.0", "candidate": "v1.0", "steps": [0.5, 1.0],
                                       "min_samples": 500, "max_samples": 20_000, "tuning_samples": 2000,
                                       "guardrails": LATENCY_ONLY, **kw})


@pytest.mark.parametrize("seed", range(5))
def test_a_candidate_15_percent_slower_at_p95_is_never_promoted(tmp_path: Path, seed: int) -> None:
    w = Worker(tmp_path)
    w.controller.start(_latency_spec(), "test")
    record = until_decided(w, 120, 500, rng=random.Random(seed), latency={"v0.0": 20.0, "v1.0": 23.0})
    assert record.state in (RolloutState.ROLLED_BACK, RolloutState.PAUSED), record.history[-1]
    decisions = [h["decision"] for h in record.history]
    assert "promote" not in decisions and "advance" not in decisions, decisions
    print(f"seed {seed}: {decisions[-1]} after {record.evaluation['step_samples']} samples:",
          record.history[-1]["reason"][:160])


def test_an_equal_candidate_is_promoted_once_its_interval_clears(tmp_path: Path) -> None:
    w = Worker(tmp_path)
    w.controller.start(_latency_spec(), "test")
    record = until_decided(w, 200, 500, rng=random.Random(11), latency={"v0.0": 20.0, "v1.0": 20.0})
    decisions = [h for h in record.history if h["decision"] in ("advance", "promote")]
    assert record.state is RolloutState.PROMOTED, record.history[-1]
    for h in decisions:
        assert "cleared: latency_p95" in h["reason"]
        high = h["guardrails"]["latency_p95"]["interval"][1]
        assert high is not None and high < 1.1
    print("equal candidate: samples per step at each decision:",
          [(h["decision"], h["reason"].split(" candidate requests")[0].split()[-1]) for h in decisions])


def test_a_step_that_never_clears_is_inconclusive_and_resume_gives_it_more(tmp_path: Path) -> None:
    w = Worker(tmp_path)
    # Accuracy is required to clear, but no ground truth ever arrives.
    w.controller.start(RolloutSpec.model_validate({
        "control": "v0.0", "candidate": "v1.0", "steps": [0.5, 1.0], "min_samples": 100, "max_samples": 600,
        "guardrails": {"latency_p95": {"require": "not_breached"}}}), "test")
    record = until_decided(w, 40, 200, rng=random.Random(5))
    assert record.state is RolloutState.PAUSED and record.history[-1]["decision"] == "inconclusive"
    reason = record.history[-1]["reason"]
    assert "accuracy: no data yet" in reason and "max_samples 600" in reason, reason
    described = w.controller.describe()
    assert described["inconclusive"] == reason and "accuracy" in described["waiting_for"]
    resumed = w.controller.resume("test")
    assert resumed.history[-1]["candidate_samples"] >= 600
    w.runner.step()  # the step's budget starts again from there: not inconclusive at once
    assert w.controller.store.load().state is RolloutState.RUNNING


def test_sticky_users_are_the_unit_of_the_sample_ratio_guardrail() -> None:
    """50 sticky users with heavy-tailed request counts, assigned 50/50 fairly: counting users the SRM
    guardrail stays quiet; counting their requests it would roll back healthy candidates."""
    import numpy as np

    from gateway.rollout.counts import RolloutCounts
    from gateway.rollout.guardrails import SRM, evaluate

    rng = np.random.default_rng(19)
    spec = RolloutSpec.model_validate({"control": "v0.0", "candidate": "v1.0", "steps": [0.5, 1.0]})
    runs, by_users, by_requests = 200, 0, 0
    for _ in range(runs):
        counts = RolloutCounts()
        for _ in range(50):
            variant = "v0.0" if rng.random() < 0.5 else "v1.0"
            counts.count_user("w", variant)
            for _ in range(int(min(400, 1 + rng.pareto(1.2) * 5))):
                counts.count_split("w", variant)
        by_users += evaluate(spec, counts, "w", 0.5, {})[SRM].breached
        counts.user_steps = {}
        by_requests += evaluate(spec, counts, "w", 0.5, {})[SRM].breached
    print(f"SRM guardrail, 50 sticky users, fair split, {runs} steps: breached counting users {by_users / runs:.1%}, "
          f"counting requests {by_requests / runs:.1%}")
    assert by_users / runs <= 0.01 and by_requests > by_users
