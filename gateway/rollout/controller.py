"""The rollout controller: it moves the candidate's weight step by step, rolls back on a guardrail
breach, and promotes after the last step. Framework-free.

Every worker process runs a ``RolloutRunner`` thread: it tells its observer which rollout to count
for, writes its counts to the shared state, and, in the one worker that holds the controller's file
lock, takes the decisions. If that worker dies the lock is released and another takes over at its
next look; the rollout's state is in the shared file, so nothing is lost and a restart resumes it.
Decisions read only local counts: they go on while MLflow is down (only the champion alias and the
change-log run need MLflow, and both are tried in the background).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.domain.contract import utc_iso
from gateway.domain.errors import InvalidRollout, NoRollout, RolloutConflict
from gateway.domain.messages import first_line
from gateway.domain.workers import PeriodicWorker
from gateway.rollout.counts import RolloutCounts
from gateway.rollout.guardrails import ACCURACY, SRM, GuardrailResult, Verdict, evaluate
from gateway.rollout.observations import Following, RolloutObserver
from gateway.rollout.record import RolloutRecord, RolloutRecords
from gateway.rollout.spec import Decision, Require, RolloutSection, RolloutSpec, RolloutState
from gateway.routing.table import RoutingTable
from gateway.spool.leader import LeaderLock

log = logging.getLogger("gateway.rollout")


class RolloutController:
    def __init__(self, store: RolloutRecords, routing: RoutingTable, observer: RolloutObserver,
                 move_champion: Callable[[str], dict[str, Any]],
                 counts: Callable[[str], tuple[RolloutCounts, int]] | None = None,
                 pending: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        """``counts`` sums the replicas' counts for a rollout id (default: the store's, which every
        worker of this gateway writes to; the standalone controller reads Prometheus). ``pending``
        lists what MLflow has not been told yet (the outbox), shown by GET /rollout."""
        self.store = store
        self.counts = counts or store.counts
        self.routing = routing
        self.observer = observer
        self.move_champion = move_champion
        self.pending = pending or list

    # -- commands (admin API, config) -------------------------------------------------------------

    def start(self, spec: RolloutSpec, by: str) -> RolloutRecord:
        try:
            spec.check_variants(self.routing.names)
        except ValueError as exc:
            raise InvalidRollout(str(exc)) from None

        def begin(current: RolloutRecord | None) -> RolloutRecord:
            if current is not None and current.state.active:
                raise RolloutConflict(f"rollout: {current.rollout_id} is {current.state} ({current.spec.candidate} "
                                      f"against {current.spec.control}); abort it or let it finish first",
                                      rollout_id=current.rollout_id)
            now = time.time()
            record = RolloutRecord(uuid.uuid4().hex[:12], spec, RolloutState.RUNNING, 0, now, now)
            return record.with_decision({"decision": str(Decision.START), "step": 1, "weight": spec.steps[0],
                                         "by": by, "reason": "started"})

        record = self.store.update(begin)
        assert record is not None
        self._route(record, Decision.START, "started", {})
        return record

    def pause(self, by: str) -> RolloutRecord:
        return self._command(Decision.PAUSE, by, {RolloutState.RUNNING}, RolloutState.PAUSED)

    def resume(self, by: str) -> RolloutRecord:
        """Take decisions again; an inconclusive step gets another ``max_samples`` from here."""
        return self._command(Decision.RESUME, by, {RolloutState.PAUSED}, RolloutState.RUNNING)

    def abort(self, by: str) -> RolloutRecord:
        """Stop the rollout and send the candidate's traffic back to the control."""
        record = self._command(Decision.ABORT, by, {RolloutState.RUNNING, RolloutState.PAUSED}, RolloutState.ABORTED)
        self._route(record, Decision.ABORT, f"aborted by {by}", {})
        return record

    def _command(self, decision: Decision, by: str, allowed: set[RolloutState], to: RolloutState) -> RolloutRecord:
        def apply(current: RolloutRecord | None) -> RolloutRecord:
            if current is None:
                raise NoRollout("no rollout has been started on this gateway")
            if current.state not in allowed:
                raise RolloutConflict(f"rollout: {current.rollout_id} is {current.state}; {decision} applies only "
                                      f"to a rollout that is {' or '.join(sorted(str(s) for s in allowed))}",
                                      rollout_id=current.rollout_id, state=str(current.state))
            entry = {"decision": str(decision), "step": current.step + 1, "weight": current.weight, "by": by,
                     "reason": str(decision)}
            if decision is Decision.RESUME:  # where the step's sample budget starts again
                entry["candidate_samples"] = int((current.evaluation.get("step_samples") or {}).get("candidate", 0))
            return current.with_decision(entry, state=to)

        record = self.store.update(apply)
        assert record is not None
        log.info("rollout %s: %s by %s", record.rollout_id, decision, by)
        return record

    def start_from_config(self, section: RolloutSection) -> None:
        """``[rollout] enabled``: start it, unless this same rollout was already started (a restart
        resumes it, or it has finished) or another one is active."""
        spec = RolloutSpec.model_validate(section.model_dump(exclude={"enabled", "interval_seconds"}))
        current = self.store.load()
        if current is not None and (current.spec == spec or current.state.active):
            if current.spec != spec:
                log.warning("[rollout] in the config not started: rollout %s is %s", current.rollout_id,
                            current.state)
            return
        with contextlib.suppress(RolloutConflict):  # another worker started it a moment ago
            self.start(spec, "config file")

    # -- looks (the controller's worker only) -------------------------------------------------------

    def decide(self) -> RolloutRecord | None:
        """Evaluate the guardrails once and decide on their verdict: roll back (one breached), pause
        (suspect counts; or not cleared within the sample budget), advance, promote, or wait."""
        record = self.store.load()
        if record is None or record.state is not RolloutState.RUNNING:
            return record
        counts, workers = self.counts(record.rollout_id)
        tag = self.routing.router.weights_tag  # the step's weights, as requests are tagged with them
        found = evaluate(record.spec, counts, tag, record.weight, record.evaluation.get("minima", {}))
        results = found.results
        guardrails = {name: r.as_dict() for name, r in results.items()}
        spec = record.spec
        step_split = counts.steps.get(tag, {})
        samples = {"control": step_split.get(spec.control, 0), "candidate": step_split.get(spec.candidate, 0)}
        evaluation = {"at": time.time(), "guardrails": guardrails, "minima": found.minima, "step_samples": samples,
                      "workers_reporting": workers}
        if found.verdict is Verdict.BREACHED:
            reason = "guardrail breached: " + ", ".join(
                f"{n} (estimate {guardrails[n]['estimate']}, interval {guardrails[n]['interval']}, "
                f"p {guardrails[n]['p_value']})" for n in found.named(Verdict.BREACHED))
            return self._apply(record, Decision.ROLLBACK, RolloutState.ROLLED_BACK, record.step, reason, evaluation)
        if found.verdict is Verdict.SUSPECT:
            # A split unlike the weights says the counts are suspect (crafted user ids, bots, a routing
            # bug), not that the candidate is worse: pause for a person to look, never roll back on it.
            g = guardrails[SRM]
            reason = (f"results suspect: sample ratio mismatch (candidate share {g['estimate']} against weight "
                      f"{record.weight:g}, p {g['p_value']}, {g['n']}); paused, not rolled back: look for crafted "
                      "sticky ids, bots or a routing fault, then resume or abort")
            return self._apply(record, Decision.SUSPECT, RolloutState.PAUSED, record.step, reason, evaluation)
        uncleared = found.named(Verdict.UNCLEARED)
        evaluation["waiting_for"] = {name: _not_cleared(results[name]) for name in uncleared}
        n = samples["candidate"]
        if n >= spec.min_samples and not uncleared:
            cleared = [name for name, r in results.items() if r.enabled and r.require == Require.CLEARED]
            shown = ", ".join(f"{c} (interval {guardrails[c]['interval']})" for c in cleared)
            evidence = f"; cleared: {shown}" if cleared else ""
            if record.step + 1 < len(spec.steps):
                reason = (f"step {record.step + 1} held {n} candidate requests (min {spec.min_samples}) with no "
                          f"guardrail breached{evidence}")
                return self._apply(record, Decision.ADVANCE, RolloutState.RUNNING, record.step + 1, reason,
                                    evaluation)
            reason = f"the last step held {n} candidate requests with no guardrail breached{evidence}"
            return self._apply(record, Decision.PROMOTE, RolloutState.PROMOTED, record.step, reason, evaluation)
        budget = spec.max_samples + _resumed_at(record)
        if n >= budget and uncleared:
            reason = (f"step {record.step + 1} reached {n} candidate requests (max_samples {spec.max_samples}) with "
                      "no guardrail breached, but not cleared: "
                      + "; ".join(f"{name}: {why}" for name, why in evaluation["waiting_for"].items())
                      + ". Paused: resume for as many samples again, abort, or promote by hand")
            return self._apply(record, Decision.INCONCLUSIVE, RolloutState.PAUSED, record.step, reason, evaluation)
        return self.store.update(lambda cur: replace(cur, evaluation=evaluation)
                                 if cur is not None and cur.rollout_id == record.rollout_id and cur.state is
                                 RolloutState.RUNNING and cur.step == record.step else None)

    def _apply(self, record: RolloutRecord, decision: Decision, state: RolloutState, step: int, reason: str,
                evaluation: dict[str, Any]) -> RolloutRecord | None:
        compact = {n: {k: g[k] for k in ("estimate", "interval", "p_value", "breached", "n")}
                   for n, g in evaluation["guardrails"].items() if g["enabled"]}
        weight = replace(record, state=state, step=step).weight

        applied: list[RolloutRecord] = []

        def apply(current: RolloutRecord | None) -> RolloutRecord | None:
            # Still the rollout and step looked at: a pause or abort meanwhile wins.
            if (current is None or current.rollout_id != record.rollout_id or current.state is not
                    RolloutState.RUNNING or current.step != record.step):
                return None
            applied.append(current.with_decision({"decision": str(decision), "step": step + 1, "weight": weight,
                                                  "by": "controller", "reason": reason, "guardrails": compact},
                                                 state=state, step=step, evaluation=evaluation))
            return applied[0]

        current = self.store.update(apply)
        if not applied:
            return current
        new = applied[0]
        log.info("rollout %s: %s -> candidate %s at %.0f%%: %s", new.rollout_id, decision, new.spec.candidate,
                 weight * 100, reason)
        self._route(new, decision, reason, compact)
        if decision is Decision.PROMOTE:
            threading.Thread(target=self._champion, args=(new,), name="rollout-champion", daemon=True).start()
        return new

    def _champion(self, record: RolloutRecord) -> None:
        alias = self.move_champion(record.spec.candidate)
        with contextlib.suppress(Exception):
            self.store.update(lambda cur: replace(cur, history=[*cur.history, {
                "at": time.time(), "decision": "champion_alias", "by": "controller", **alias}])
                if cur is not None and cur.rollout_id == record.rollout_id else None)

    def _route(self, record: RolloutRecord, decision: Decision, reason: str, guardrails: dict[str, Any]) -> None:
        """The weights for the record's state: the candidate at the step's weight and the control at the
        rest (other variants at 0), the candidate's shadow scoring while the disagreement guardrail
        needs it."""
        spec = record.spec
        w = record.weight
        weights = {name: 0.0 for name in self.routing.names}
        weights[spec.control], weights[spec.candidate] = 1.0 - w, w
        guard = spec.guardrails.disagreement
        mirror = guard.enabled and record.state.active and w < 1.0
        shadow = {"primary": spec.control, "candidate": spec.candidate, "sample_rate": guard.shadow_sample_rate} \
            if mirror else None
        self.routing.change(mode="weighted", weights=weights, shadow=shadow, mirror=mirror, retry=True,
                            source=f"rollout {record.rollout_id}: {decision} (step {record.step + 1}, "
                                   f"{spec.candidate} at {w:.0%})",
                            details={"rollout_id": record.rollout_id, "decision": str(decision),
                                     "state": str(record.state), "step": record.step + 1, "candidate_weight": w,
                                     "control": spec.control, "candidate": spec.candidate, "reason": reason,
                                     "guardrails": guardrails})

    # -- what GET /rollout shows ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        record = self.store.load()
        if record is None:
            raise NoRollout("no rollout has been started on this gateway; POST /admin/rollout starts one")
        return {**describe(record), "pending_in_mlflow": self.pending()}

    def active(self) -> RolloutRecord | None:
        record = self.store.load()
        return record if record is not None and record.state.active else None


def _not_cleared(result: GuardrailResult) -> str:
    low, high = result.interval
    side = "above" if result.name == ACCURACY else "below"
    bound = f"-{result.threshold:g}" if result.name == ACCURACY else f"{result.threshold:g}"
    if result.estimate is None:
        return f"no data yet (n {result.n})"
    return (f"estimate {result.estimate}, interval [{low}, {high}] does not lie wholly {side} {bound} yet "
            f"(n {result.n})")


def _resumed_at(record: RolloutRecord) -> int:
    """The candidate samples of this step when it was last resumed (0 if never): its budget restarts there."""
    return max((int(h.get("candidate_samples", 0)) for h in record.history
                if h.get("decision") == str(Decision.RESUME) and h.get("step") == record.step + 1), default=0)


def describe(record: RolloutRecord) -> dict[str, Any]:
    spec = record.spec
    ev = record.evaluation
    return {"rollout_id": record.rollout_id, "state": str(record.state), "control": spec.control,
            "candidate": spec.candidate, "step": record.step + 1, "steps": spec.steps,
            "candidate_weight": record.weight, "min_samples": spec.min_samples,
            "step_samples": ev.get("step_samples"), "started_at": utc_iso(record.started_at),
            "updated_at": utc_iso(record.updated_at), "evaluated_at": utc_iso(ev["at"]) if ev.get("at") else None,
            "workers_reporting": ev.get("workers_reporting"), "guardrails": ev.get("guardrails", {}),
            "waiting_for": ev.get("waiting_for", {}), "max_samples": spec.max_samples,
            "inconclusive": next((h["reason"] for h in reversed(record.history)
                                  if h.get("decision") == str(Decision.INCONCLUSIVE)), None)
            if record.state is RolloutState.PAUSED else None,
            "history": [{**h, "at": utc_iso(h["at"])} for h in record.history], "spec": spec.model_dump()}


class RolloutRunner(PeriodicWorker):
    """The per-worker thread: counts out, decisions in (by the lock holder only)."""

    def __init__(self, controller: RolloutController, lock_path: Path, interval_s: float, decides: bool = True) -> None:
        super().__init__("rollout-runner", interval_s, wait_first=True)
        self.controller = controller
        self.decides = decides  # False: the decisions are another process's (python -m gateway.rollout)
        self.lock_path = lock_path
        self.worker = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._lock = LeaderLock(lock_path)

    @property
    def leader(self) -> bool:
        return self._lock.held

    def _try_lead(self) -> bool:
        if self._lock.held:
            return True
        if not self._lock.try_acquire():
            return False
        log.info("worker %s now takes the rollout's decisions", self.worker)
        return True

    def step(self) -> None:
        """One round: follow the stored rollout, publish this worker's counts, decide if leading."""
        c = self.controller
        record = c.store.load()
        c.observer.follow(Following(record.rollout_id, record.spec.control, record.spec.candidate,
                                    int(record.started_at * 1000))
                          if record is not None and record.state.active else None)
        snapshot = c.observer.take_snapshot()
        if snapshot is not None:
            c.store.put_counts(snapshot[0], self.worker, snapshot[1])
        if self.decides and record is not None and record.state is RolloutState.RUNNING and self._try_lead():
            c.decide()

    def round(self) -> bool:
        try:
            self.step()
        except Exception as exc:  # a locked state file: try again at the next look
            log.warning("rollout look failed: %s", first_line(exc, 300))
        return False

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        with contextlib.suppress(Exception):
            self.step()  # the last counts out
        self._lock.release()
