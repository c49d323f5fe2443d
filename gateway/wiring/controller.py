"""The standalone rollout controller (python -m gateway.rollout), built and run: the shared state in
MLflow, the routing it follows, its own outbox for decisions' change-log runs and the champion alias,
the replicas' counts from Prometheus, accuracy from MLflow, and the bandit for every replica."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from gateway.bandit.reweigher import BanditRunner
from gateway.bandit.thompson import ArmRewards
from gateway.config.settings import Settings
from gateway.domain.errors import StateConflict, StateUnavailable
from gateway.domain.messages import first_line
from gateway.mlflow.ledger import MlflowLedger
from gateway.rollout.controller import RolloutController, describe
from gateway.rollout.counts import RolloutCounts
from gateway.rollout.mlflow_feedback import MlflowAccuracy, apply_accuracy
from gateway.rollout.observations import RolloutObserver
from gateway.rollout.prometheus import PrometheusCounts, PrometheusUnavailable
from gateway.rollout.spec import RolloutState
from gateway.routing.change_log import RoutingChangeRecorder
from gateway.routing.sender import Champion
from gateway.routing.spec import RoutingMode
from gateway.routing.table import RoutingTable
from gateway.state.mlflow_rollout import MlflowRolloutStore
from gateway.state.mlflow_routing import MlflowRoutingStateStore
from gateway.wiring.build import model_loader, open_outbox

log = logging.getLogger("gateway.rollout")


class StandaloneController:
    """The controller's loop: read the shared state, look, write decisions; never serves traffic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        tracking_uri = settings.mlflow.tracking_uri
        self.ledger = MlflowLedger(tracking_uri, settings.state.registered_model, settings.state.timeout_seconds)
        # Its own outbox (in [spool] dir): a decision's change-log run and the champion alias land once
        # MLflow answers, even if it was down when the decision was taken.
        self.outbox, self.sender = open_outbox(settings.spool.dir, tracking_uri, settings.mlflow.retry_max_seconds)
        self.champion = Champion(self.outbox, self.sender, tracking_uri)
        recorder = RoutingChangeRecorder(tracking_uri, settings.mlflow.routing_changes, self.outbox,
                                         self.sender and self.sender.poke)
        self.routing = RoutingTable(settings.routing_config(), MlflowRoutingStateStore(self.ledger), adopt_file=False,
                                    listeners=[recorder])
        self.prometheus = PrometheusCounts(settings.controller.prometheus_url,
                                           settings.controller.query_timeout_seconds)
        self.accuracy = MlflowAccuracy(tracking_uri, settings.mlflow.experiment,
                                       settings.controller.accuracy_refresh_seconds, settings.mlflow.window_seconds)
        self.controller = RolloutController(MlflowRolloutStore(self.ledger), self.routing, RolloutObserver(),
                                            self._move_champion, counts=self._counts,
                                            pending=self.outbox.pending if self.outbox is not None else None)
        self.bandit: BanditRunner | None = None
        if settings.routing.mode == RoutingMode.BANDIT:  # this process reweighs for every replica
            self.bandit = BanditRunner(settings.bandit, self.routing, self._bandit_rewards, lock_path=None)
        self.looks = 0
        self.last_look_at: float | None = None
        self.last_problem: str | None = None
        self._started_config = False
        self._stop = threading.Event()

    def _counts(self, rollout_id: str) -> tuple[RolloutCounts, int]:
        """The replicas' counts summed in Prometheus, with accuracy from the ground truth in MLflow
        (any replica may have received a label; see mlflow_feedback.py). Until MLflow has been read
        once, the replicas' own /feedback counts stand."""
        counts, replicas = self.prometheus(rollout_id)
        record = self.controller.store.load()
        if record is not None and record.rollout_id == rollout_id and record.spec.guardrails.accuracy.enabled:
            accuracy = self.accuracy(int(record.started_at * 1000))
            if accuracy is not None:
                apply_accuracy(counts, accuracy, (record.spec.control, record.spec.candidate))
        return counts, replicas

    def _bandit_rewards(self) -> dict[str, ArmRewards]:
        """Each arm's labelled and correct predictions in MLflow (any replica may have received a label),
        as 0/1 rewards; none until MLflow has been read once (the burn-in's equal weights stand)."""
        accuracy = self.accuracy(0) or {}
        return {v: ArmRewards(a.labelled, float(a.correct), float(a.correct)) for v, a in accuracy.items()}

    def _move_champion(self, variant: str) -> dict[str, Any]:
        spec = next((v for v in self.routing.config.variants if v.name == variant), None)
        registered = None
        if spec is not None:
            try:
                name, version, *_ = model_loader(self.settings).resolve(spec)
                registered = (name, version) if name and version else None
            except Exception as exc:
                log.error("promote %s: cannot resolve %s in the registry: %s", variant, spec.model_uri,
                          first_line(exc, 200))
        return self.champion.move(variant, registered)

    def step(self) -> None:
        """One look: follow the state, start the configured rollout once, decide."""
        self.routing.sync()
        if self.settings.rollout.enabled and not self._started_config:
            self.controller.start_from_config(self.settings.rollout)
            self._started_config = True
        record = self.controller.store.load()
        if record is not None and record.state is RolloutState.RUNNING:
            self.controller.decide()
            self.looks += 1
            self.last_look_at = time.time()
        self.last_problem = None

    def run(self) -> None:
        interval = self.settings.rollout.interval_seconds
        if self.bandit is not None:
            log.info("bandit: reweighing every replica's routing every %.3g s from the labels in MLflow",
                     self.settings.bandit.update_seconds)
            self.bandit.start()
        log.info("rollout controller: state %s, counts from Prometheus %s, a look every %.3g s",
                 self.ledger.location, self.prometheus.url, interval)
        while not self._stop.is_set():
            try:
                self.step()
            except (StateUnavailable, PrometheusUnavailable, StateConflict) as exc:
                problem = first_line(exc, 300)
                if problem != self.last_problem:
                    log.warning("rollout look skipped: %s (trying again every %.3g s)", problem, interval)
                self.last_problem = problem
            except Exception:
                log.exception("rollout look failed")
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        if self.bandit is not None:
            self.bandit.stop()
        if self.sender is not None:
            self.sender.stop()

    def describe(self) -> dict[str, Any] | None:
        record = self.controller.store.load()
        return None if record is None else describe(record)


def serve_metrics(controller: StandaloneController, host: str, port: int) -> None:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    from gateway.serving.metrics import RolloutCollector, SharedStateCollector

    class LoopCollector(Collector):
        def collect(self) -> Any:
            yield CounterMetricFamily("gateway_rollout_controller_looks", "Looks taken at a running rollout.",
                                      value=float(controller.looks))
            yield GaugeMetricFamily("gateway_rollout_controller_last_look_timestamp_seconds",
                                    "When the controller last looked (Unix time).",
                                    value=float(controller.last_look_at or 0))
            yield GaugeMetricFamily("gateway_rollout_controller_healthy", "0 while looks are skipped (MLflow or "
                                    "Prometheus unreachable).", value=0.0 if controller.last_problem else 1.0)

    registry = CollectorRegistry()
    for collector in (RolloutCollector(controller.describe), SharedStateCollector(controller.routing.state_status),
                      LoopCollector()):
        registry.register(collector)
    start_http_server(port, addr=host, registry=registry)
    log.info("rollout controller metrics on http://%s:%d/metrics", host, port)
