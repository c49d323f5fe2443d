"""Promotion on evidence: a guardrail with ``require = "cleared"`` holds its step until its always-valid
interval lies on the safe side of the threshold, and a step that reaches ``max_samples`` without that
is inconclusive (paused, naming the guardrail). Seeded simulations through the real controller."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rollout.counts import RolloutCounts
from gateway.rollout.guardrails import GUARDRAILS, SRM, Look, Verdict, error_rate, evaluate, judge
from gateway.rollout.spec import RolloutSpec, RolloutState
from gateway.stats.sequential import histogram_bin
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
        by_users += evaluate(spec, counts, "w", 0.5, {}).results[SRM].breached
        counts.user_steps = {}
        by_requests += evaluate(spec, counts, "w", 0.5, {}).results[SRM].breached
    print(f"SRM guardrail, 50 sticky users, fair split, {runs} steps: breached counting users {by_users / runs:.1%}, "
          f"counting requests {by_requests / runs:.1%}")
    assert by_users / runs <= 0.01 and by_requests > by_users


# -- the unit under sticky routing -------------------------------------------------------------------

def _sticky_aa(seed: int, users: int = 50, looks: int = 10) -> dict[str, tuple[bool, bool]]:
    """One A/A rollout step under sticky routing: 50 users with heavy-tailed request counts, each with
    an accuracy and a request-time level of its own, split 50/50 by user. Whether each guardrail was
    ever breached at any of the looks, (counting users, counting requests as independent)."""
    from gateway.rollout.counts import RolloutCounts
    from gateway.rollout.guardrails import evaluate
    from gateway.stats.sequential import histogram_bin

    spec = RolloutSpec.model_validate({
        "control": "c", "candidate": "x", "steps": [0.5, 1.0], "min_samples": 100,
        "guardrails": {"accuracy": {"max_drop": 0.0, "require": "not_breached"},
                       "latency_p95": {"max_ratio": 1.0, "require": "not_breached"}}})
    rng = np.random.default_rng(seed)
    per_user = np.minimum((rng.pareto(1.2, users) + 1) * 10, 2000).astype(int)
    accuracy, slowness = rng.beta(2, 1, users), rng.lognormal(0, 0.6, users)
    candidate = rng.random(users) < 0.5
    arrivals = np.repeat(np.arange(users), per_user)
    rng.shuffle(arrivals)
    tag = "c=0.5,x=0.5"
    counts = RolloutCounts(user_steps={tag: {"c": int((~candidate).sum()), "x": int(candidate.sum())}})
    ever = {"accuracy": [False, False], "latency_p95": [False, False]}
    minima: list[dict[str, float]] = [{}, {}]
    every = max(1, len(arrivals) // looks)
    for i, u in enumerate(arrivals):
        arm, unit = counts.arm("x" if candidate[u] else "c"), f"user:{u}"
        arm.count("requests", unit)
        arm.count_time(histogram_bin(20 * slowness[u] * rng.lognormal(0, 0.1)), unit)
        arm.count("labelled", unit)
        arm.count("correct", unit, int(rng.random() < accuracy[u]))
        if (i + 1) % every:
            continue
        for k, by_request in enumerate((False, True)):
            look = counts.copy()
            if by_request:
                for a in look.arms.values():
                    a.buckets = {}
            evaluation = evaluate(spec, look, tag, 0.5, minima[k])
            results, minima[k] = evaluation.results, evaluation.minima
            for name, flags in ever.items():
                flags[k] |= results[name].breached
                assert results[name].unit == "user"
    return {name: (flags[0], flags[1]) for name, flags in ever.items()}


def test_sticky_users_are_the_unit_of_the_accuracy_and_latency_guardrails() -> None:
    runs = 200
    outcomes = [_sticky_aa(seed) for seed in range(runs)]
    for name in ("accuracy", "latency_p95"):
        by_user = sum(o[name][0] for o in outcomes) / runs
        by_request = sum(o[name][1] for o in outcomes) / runs
        print(f"{name}: A/A rolled back in {by_user:.1%} of {runs} rollouts counting users, "
              f"{by_request:.1%} counting requests as independent")
        assert by_user <= 0.05 + 0.02, name
    assert sum(o["accuracy"][1] for o in outcomes) / runs > 0.15  # what the unit fixes


# -- one pure function per guardrail ------------------------------------------------------------------

ARM = st.fixed_dictionaries({"requests": st.integers(0, 400), "errors": st.integers(0, 60),
                             "labelled": st.integers(0, 300), "wrong": st.integers(0, 300),
                             "slow": st.integers(0, 300)})


def _counts(control: dict[str, int], candidate: dict[str, int], split: tuple[int, int]) -> RolloutCounts:
    counts = RolloutCounts(steps={"w": {"c": split[0], "x": split[1]}})
    for name, arm in (("c", control), ("x", candidate)):
        a = counts.arm(name)
        for i in range(arm["requests"]):
            a.count("requests", f"r{name}{i}")
            a.count_time(histogram_bin(40.0 if i < arm["slow"] else 20.0), f"r{name}{i}")
        for i in range(arm["errors"]):
            a.count("errors", f"e{name}{i}")
        for i in range(arm["labelled"]):
            a.count("labelled", f"l{name}{i}")
            a.count("correct", f"l{name}{i}", int(i >= arm["wrong"]))
    return counts


@settings(max_examples=60, deadline=None)
@given(ARM, ARM, st.tuples(st.integers(0, 500), st.integers(0, 500)),
       st.dictionaries(st.sampled_from(["error_rate", "latency_p95", "accuracy", "srm@w"]),
                       st.floats(0.0, 1.0), max_size=4))
def test_the_verdict_is_the_worst_guardrail_and_the_minima_come_back_new(
        control: dict[str, int], candidate: dict[str, int], split: tuple[int, int], minima: dict[str, float]) -> None:
    spec = RolloutSpec.model_validate({"control": "c", "candidate": "x", "steps": [0.5, 1.0],
                                       "guardrails": {"latency_p95": {"require": "cleared"}}})
    before = dict(minima)
    found = evaluate(spec, _counts(control, candidate, split), "w", 0.5, minima)
    assert minima == before  # not changed in place
    assert found.verdict == max(r.verdict for r in found.results.values())
    assert set(found.results) == {fn(Look(spec, RolloutCounts(), "w", 0.5)).name for fn in GUARDRAILS}
    for key, p in found.minima.items():  # a running minimum only ever falls
        assert p <= before.get(key, 1.0)
    for name, result in found.results.items():
        if result.breached:
            assert result.verdict is (Verdict.SUSPECT if name == SRM else Verdict.BREACHED)
            assert not result.cleared
        assert result.p_value <= before.get(name if name != SRM else f"{SRM}@w", 1.0) + 1e-6  # shown to 6 places


def test_a_guardrail_is_a_pure_function_of_the_look() -> None:
    spec = RolloutSpec.model_validate({"control": "c", "candidate": "x", "steps": [0.5, 1.0]})
    look = Look(spec, _counts({"requests": 200, "errors": 40, "labelled": 0, "wrong": 0, "slow": 0},
                              {"requests": 200, "errors": 0, "labelled": 0, "wrong": 0, "slow": 0}, (240, 200)),
                "w", 0.5)
    first, again = error_rate(look), error_rate(look)
    assert first == again and first.name == "error_rate" and not first.worse  # the candidate errs less
    result, minimum = judge(first, spec.alpha, 1.0)
    assert minimum is None and not result.breached  # the safe side: the running minimum is not touched
