"""The controller's decisions on live counts, with the real shared state file, routing table and
observer (no HTTP, no MLflow): advance on enough clean samples, roll back on a significant breach,
promote after the last step; commands are refused where they do not apply."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.domain.errors import InvalidRollout, NoRollout, RolloutConflict
from gateway.domain.records import PredictionRecord
from gateway.rollout.controller import RolloutController, RolloutRunner
from gateway.rollout.observations import RolloutObserver
from gateway.rollout.spec import Guardrails, RolloutSpec, RolloutState
from gateway.routing.table import RoutingTable
from gateway.spool.sqlite import SqliteFile
from gateway.state.local import RoutingStateStore
from gateway.state.local_rollout import RolloutStore
from tests.harness.strategies import routing_config


class Worker:
    """One worker process's share of the machinery, on a shared state file."""

    def __init__(self, path: Path) -> None:
        shared = SqliteFile(path / "routing.db")
        self.routing = RoutingTable(routing_config([0.5, 0.5]), RoutingStateStore(shared))
        self.observer = RolloutObserver()
        self.champions: list[str] = []
        self.controller = RolloutController(RolloutStore(shared), self.routing, self.observer,
                                            lambda v: self.champions.append(v) or {"moved": True})
        self.runner = RolloutRunner(self.controller, path / "rollout.lock", interval_s=60)

    def serve(self, n: int, *, rng: random.Random, latency: dict[str, float] | None = None,
              wrong: dict[str, float] | None = None) -> None:
        """n weighted requests through this worker's router, observed as the scorer would."""
        self.routing.sync()
        router = self.routing.router
        names, weights = list(router.weights), list(router.weights.values())
        for i in range(n):
            # Weighted routing drawn from the test's seeded generator (the router's own is not seeded), so
            # that each test's traffic, and so its decisions, are the same on every run.
            variant = rng.choices(names, weights)[0]
            ms = (latency or {}).get(variant, 1.0) * rng.lognormvariate(0, 0.2)
            rec = PredictionRecord(request_id=f"r{i}", role="primary", model_version=variant, features={},
                                   prediction="a", class_index=0, inference_time_ms=ms, ts_ms=0,
                                   routing="weighted", config_hash=router.config_hash,
                                   weights=router.weights_tag, request_time_ms=ms)
            self.observer.on_records([rec])
            if wrong is not None:
                self.observer.on_feedback(variant, "weighted", rng.random() >= wrong.get(variant, 0.0),
                                          int(time.time() * 1000), f"request:r{i}")


def until_decided(w: Worker, rounds: int, n: int, **serve: Any) -> Any:
    """Looks and traffic in turn until the rollout leaves ``running``; the stored rollout."""
    for _ in range(rounds):
        w.runner.step()
        w.serve(n, **serve)
        if w.controller.store.load().state is not RolloutState.RUNNING:
            break
    return w.controller.store.load()


# The step mechanics on no-evidence-of-harm rules (require = "not_breached"), so that a few hundred
# samples a step suffice; clearance has its own tests below.
NOT_BREACHED = {"accuracy": {"require": "not_breached"}, "latency_p95": {"require": "not_breached"}}


def spec(**kw: Any) -> RolloutSpec:
    return RolloutSpec.model_validate({"control": "v0.0", "candidate": "v1.0", "steps": [0.2, 0.5, 1.0],
                                       "min_samples": 200, "tuning_samples": 500, "guardrails": NOT_BREACHED,
                                       **kw})


def test_a_healthy_candidate_advances_step_by_step_and_is_promoted(tmp_path: Path) -> None:
    rng = random.Random(1)
    a, b = Worker(tmp_path), Worker(tmp_path)
    a.controller.start(spec(), "test")
    weights = []
    for _ in range(40):
        for w in (a, b):
            w.runner.step()  # follow, publish counts; the first to lock decides
            w.serve(150, rng=rng, wrong={"v0.0": 0.05, "v1.0": 0.05})
        record = a.controller.store.load()
        weights.append(record.weight)
        if record.state is not RolloutState.RUNNING:
            break
    assert record.state is RolloutState.PROMOTED
    decisions = [h["decision"] for h in record.history if h["decision"] != "champion_alias"]
    assert decisions == ["start", "advance", "advance", "promote"]
    assert sorted(set(weights)) == [0.2, 0.5, 1.0]
    b.routing.sync()
    assert b.routing.router.weights == {"v0.0": 0.0, "v1.0": 1.0}
    assert a.runner.leader != b.runner.leader  # exactly one of them decided
    leader = a if a.runner.leader else b
    for _ in range(50):
        if leader.champions:
            break
        time.sleep(0.02)
    assert leader.champions == ["v1.0"]


def test_an_inaccurate_candidate_is_rolled_back_at_once(tmp_path: Path) -> None:
    rng = random.Random(2)
    w = Worker(tmp_path)
    w.controller.start(spec(min_samples=100_000, max_samples=100_000), "test")
    record = until_decided(w, 60, 200, rng=rng, wrong={"v0.0": 0.05, "v1.0": 0.5})
    assert record.state is RolloutState.ROLLED_BACK and record.weight == 0.0
    last = record.history[-1]
    assert last["decision"] == "rollback" and "accuracy" in last["reason"]
    assert last["guardrails"]["accuracy"]["breached"] and last["guardrails"]["accuracy"]["p_value"] <= 0.05
    assert w.routing.router.weights == {"v0.0": 1.0, "v1.0": 0.0}


def test_a_slow_candidate_is_rolled_back_by_the_latency_guardrail(tmp_path: Path) -> None:
    rng = random.Random(3)
    w = Worker(tmp_path)
    w.controller.start(spec(min_samples=100_000, max_samples=100_000, guardrails=Guardrails.model_validate(
        {"latency_p95": {"max_ratio": 1.2}, "accuracy": {"enabled": False}})), "test")
    record = until_decided(w, 60, 300, rng=rng, latency={"v0.0": 1.0, "v1.0": 2.0})
    assert record.state is RolloutState.ROLLED_BACK
    assert "latency_p95" in record.history[-1]["reason"]


def test_an_aa_rollout_is_not_rolled_back(tmp_path: Path) -> None:
    rng = random.Random(4)
    w = Worker(tmp_path)
    w.controller.start(spec(), "test")
    assert until_decided(w, 80, 100, rng=rng, wrong={"v0.0": 0.1, "v1.0": 0.1}).state is RolloutState.PROMOTED


def test_commands_and_refusals(tmp_path: Path) -> None:
    w = Worker(tmp_path)
    with pytest.raises(NoRollout):
        w.controller.pause("test")
    with pytest.raises(InvalidRollout, match="candidate: unknown variant 'v9'"):
        w.controller.start(RolloutSpec(control="v0.0", candidate="v9"), "test")
    assert w.controller.store.load() is None and w.routing.origin.version == 1  # nothing changed
    first = w.controller.start(spec(), "test")
    with pytest.raises(RolloutConflict, match=r"rollout: .* is running"):
        w.controller.start(spec(), "test")
    with pytest.raises(RolloutConflict, match="resume applies only"):
        w.controller.resume("test")
    assert w.controller.pause("test").state is RolloutState.PAUSED
    assert w.controller.decide().state is RolloutState.PAUSED  # no decisions while paused
    assert w.controller.resume("test").state is RolloutState.RUNNING
    aborted = w.controller.abort("test")
    assert aborted.state is RolloutState.ABORTED and aborted.rollout_id == first.rollout_id
    assert w.routing.router.weights == {"v0.0": 1.0, "v1.0": 0.0}
    assert [h["decision"] for h in aborted.history] == ["start", "pause", "resume", "abort"]
    assert w.controller.start(spec(), "test").rollout_id != first.rollout_id  # a new one may start now


class RolloutCommands(RuleBasedStateMachine):
    """Any sequence of commands: each is accepted exactly when the model says so, the stored state
    follows the model, and the routing in force always gives the candidate the rollout's weight."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp())
        self.worker = Worker(self.dir)
        self.state: RolloutState | None = None

    def _try(self, command: str, allowed: set[RolloutState | None], to: RolloutState) -> None:
        c = self.worker.controller
        try:
            getattr(c, command)(spec(), "test") if command == "start" else getattr(c, command)("test")
        except (RolloutConflict, NoRollout):
            assert self.state not in allowed
            return
        assert self.state in allowed
        self.state = to

    @rule()
    def start(self) -> None:
        self._try("start", {None, RolloutState.ABORTED}, RolloutState.RUNNING)

    @rule()
    def pause(self) -> None:
        self._try("pause", {RolloutState.RUNNING}, RolloutState.PAUSED)

    @rule()
    def resume(self) -> None:
        self._try("resume", {RolloutState.PAUSED}, RolloutState.RUNNING)

    @rule()
    def abort(self) -> None:
        self._try("abort", {RolloutState.RUNNING, RolloutState.PAUSED}, RolloutState.ABORTED)

    @rule()
    def look(self) -> None:
        self.worker.controller.decide()  # no traffic: never a decision

    @invariant()
    def stored_state_and_routing_agree(self) -> None:
        record = self.worker.controller.store.load()
        assert (record.state if record else None) == self.state
        if record is not None:
            assert self.worker.routing.router.weights["v1.0"] == pytest.approx(record.weight)


TestRolloutCommands = RolloutCommands.TestCase
TestRolloutCommands.settings = settings(max_examples=25, stateful_step_count=12, deadline=None)


def test_a_sample_ratio_mismatch_pauses_as_suspect_and_never_rolls_back(tmp_path: Path) -> None:
    """Sticky ids chosen offline to land on the candidate (the attack on the SRM guardrail): the split is
    far from the weights, so the results are suspect. The rollout pauses at its step's weight, saying
    so; it does not roll back, and resuming goes on from there."""
    rng = random.Random(4)
    w = Worker(tmp_path)
    w.controller.start(spec(min_samples=100_000, max_samples=100_000), "test")
    w.runner.step()
    w.serve(300, rng=rng, wrong={"v0.0": 0.05, "v1.0": 0.05})
    router = w.routing.router
    for i in range(200):  # crafted users, every one of them on the candidate
        w.observer.on_records([PredictionRecord(
            request_id=f"crafted{i}", role="primary", model_version="v1.0", features={}, prediction="a",
            class_index=0, inference_time_ms=1.0, ts_ms=0, routing="sticky", config_hash=router.config_hash,
            weights=router.weights_tag, request_time_ms=1.0, user=f"u{i}")])
    record = until_decided(w, 10, 50, rng=rng, wrong={"v0.0": 0.05, "v1.0": 0.05})
    assert record.state is RolloutState.PAUSED and record.weight == 0.2
    last = record.history[-1]
    assert last["decision"] == "suspect" and "results suspect" in last["reason"] and "not rolled back" in last["reason"]
    assert w.routing.router.weights == {"v0.0": 0.8, "v1.0": 0.2}
    assert w.controller.resume("test").state is RolloutState.RUNNING
