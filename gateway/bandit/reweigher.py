"""The bandit's loop: every ``update_seconds`` the rewards are read and, in the one process that
decides, the weights moved (RoutingTable.change: every worker, every replica and the change log see
it). One gateway: the worker that holds the lock next to the spool decides, from the spool's labels.
Replicas (state in MLflow): the rollout controller's process decides, from the labels in MLflow, and
each replica only follows. Every process keeps the posterior it last computed, for GET /bandit and
/metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.bandit.policy import Reweighting, ThompsonPolicy
from gateway.bandit.spec import BanditSection
from gateway.bandit.thompson import ArmRewards
from gateway.domain.contract import utc_iso
from gateway.domain.messages import first_line
from gateway.domain.workers import PeriodicWorker
from gateway.routing.spec import RoutingMode
from gateway.routing.table import RoutingTable
from gateway.spool.leader import LeaderLock

log = logging.getLogger("gateway.bandit")
SOURCE = "bandit"


class BanditRunner(PeriodicWorker):
    """The bandit's thread: every ``[bandit] update_seconds``, the posterior from the labels, and new
    weights when this worker leads."""

    def __init__(self, section: BanditSection, table: RoutingTable, rewards: Callable[[], dict[str, ArmRewards]],
                 lock_path: Path | None, seed: int | None = None, decides: bool = True) -> None:
        """``lock_path``: the file whose lock makes one worker the one that reweighs (None: this
        process always does). ``decides`` False: never reweighs (a replica; the controller does)."""
        # The first round at once: GET /bandit and /metrics show the posterior from the start (they only
        # read what this thread computed; the rewards reader is not safe to share between threads).
        super().__init__("bandit", section.update_seconds)
        self.section = section
        self.table = table
        self.rewards = rewards
        self.lock_path = lock_path
        self.decides = decides
        self.policy = ThompsonPolicy(table.names, section.reward.kind, burn_in=section.burn_in,
                                     min_share=section.min_share, draws=section.draws, seed=seed)
        self.last: Reweighting | None = None
        self.last_at: float | None = None
        self.reweighings = 0
        self.last_error: str | None = None
        self._lock = LeaderLock(lock_path) if lock_path is not None else None

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._lock is not None:
            self._lock.release()

    @property
    def leader(self) -> bool:
        return self.decides and (self._lock is None or self._lock.held)

    def _try_lead(self) -> bool:
        if self.leader or not self.decides:
            return self.leader
        assert self._lock is not None
        if not self._lock.try_acquire():
            return False
        log.info("this worker now reweighs the bandit every %gs", self.section.update_seconds)
        return True

    def step(self) -> Reweighting:
        """Read the rewards, compute the next weights, and install them when this worker leads and they
        differ from the weights in force."""
        self.table.sync()
        segments = self.table.config.allocation or self.policy.start()
        result = self.policy.reweigh(self.rewards(), segments)
        self.last, self.last_at = result, time.time()
        if self.table.config.mode == RoutingMode.BANDIT and result.segments != tuple(segments) and self._try_lead():
            self.table.change(weights=result.weights, allocation=result.segments, source=SOURCE,
                              details=result.details(), retry=True)
            self.reweighings += 1
        return result

    def round(self) -> bool:
        try:
            self.step()
            self.last_error = None
        except Exception as exc:  # a locked spool, a state conflict: try again next round
            self.last_error = first_line(exc, 300)
            log.warning("bandit reweighting failed: %s", self.last_error)
        return False

    def describe(self) -> dict[str, Any]:
        """GET /bandit: the weights in force, and each arm's posterior and labels as the loop last
        computed them (nothing is read or drawn here: /variants and /metrics call it too)."""
        router = self.table.router
        last = self.last
        arms = {}
        for name in router.names:
            post = (last.posteriors.get(name) if last else None) or {}
            arms[name] = {"weight": router.weights.get(name, 0.0),
                          "posterior_mean": post.get("mean"), "posterior_low": post.get("low"),
                          "posterior_high": post.get("high"),
                          "labelled": (last.labelled.get(name, 0) if last else 0),
                          "probability_best": (last.probability_best.get(name) if last else None)}
        s = self.section
        return {"mode": self.table.config.mode, "reward": s.reward.value, "phase": str(last.phase) if last else None,
                "update_seconds": s.update_seconds, "burn_in": s.burn_in, "min_share": s.min_share,
                "weights_version": router.version, "arms": arms,
                "last_computed": utc_iso(self.last_at) if self.last_at else None,
                "reweighings_here": self.reweighings, "reweighs_here": self.leader, "last_error": self.last_error,
                "rewards_from": "the labels in MLflow" if self.decides and self.lock_path is None else
                "this gateway's spool" if self.decides else
                "the labels this replica received (the controller reweighs from MLflow's)"}
