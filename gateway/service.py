"""The gateway's domain services, wired together: the routing table, the scorer, feedback."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InvalidRollout, RolloutConflict
from gateway.exceptions import first_line
from gateway.feedback import FeedbackRecorder
from gateway.mlflow_state import MlflowLedger, MlflowRolloutStore, MlflowRoutingStateStore
from gateway.rollout.controller import RolloutController
from gateway.rollout.controller import describe as describe_rollout
from gateway.rollout.observations import RolloutObserver
from gateway.rollout.store import RolloutStore
from gateway.routing_state import FILE_NAME, RoutingStateStore, RoutingStore, SharedStateFile
from gateway.routing_table import RoutingTable, move_champion
from gateway.scoring import Scorer, ServiceCounters
from gateway.settings import Settings
from gateway.spool_writer import SpoolWriter

log = logging.getLogger("gateway")


@dataclass
class GatewayServices:
    settings: Settings
    routing: RoutingTable
    scorer: Scorer
    feedback: FeedbackRecorder
    counts: ServiceCounters = field(default_factory=ServiceCounters)
    shared: SharedStateFile | None = None
    rollout: RolloutController | None = None
    observer: RolloutObserver | None = None

    @property
    def decides_rollouts(self) -> bool:
        """With the state in MLflow the rollout's decisions are taken by one process for every replica
        (python -m gateway.rollout); with a local file, by one worker of this gateway."""
        return self.settings.state.backend == "local"

    @classmethod
    def build(cls, settings: Settings, writer: SpoolWriter | None) -> GatewayServices:
        counts = ServiceCounters()
        shared: SharedStateFile | None = None
        routing_store: RoutingStore | None = None
        rollout_store: RolloutStore | MlflowRolloutStore | None = None
        if settings.state.backend == "mlflow":
            ledger = open_ledger(settings)
            routing_store = MlflowRoutingStateStore(ledger, settings.state.poll_seconds)
            rollout_store = MlflowRolloutStore(ledger)
        else:
            shared = open_shared_state(settings)
            if shared is not None:
                routing_store, rollout_store = RoutingStateStore(shared), RolloutStore(shared)
        routing = RoutingTable(settings.routing_config(), routing_store)
        scorer = Scorer(settings, writer, routing, counts)
        feedback = FeedbackRecorder(scorer, counts, accept_remote=settings.state.backend == "mlflow")
        services = cls(settings, routing, scorer, feedback, counts, shared)
        if rollout_store is not None:
            observer = RolloutObserver()
            scorer.listeners.append(observer)
            services.feedback.listeners.append(observer)
            services.observer = observer
            services.rollout = RolloutController(rollout_store, routing, observer, services.move_champion)
        return services

    def rollout_controller(self) -> RolloutController:
        if self.rollout is None:
            raise InvalidRollout("rollouts need the shared state file next to the spool, which could not be "
                                 "opened (see the gateway's log)")
        return self.rollout

    def describe_rollout(self) -> dict[str, Any] | None:
        """GET /rollout's body, or None when no rollout was ever started."""
        if self.rollout is None:
            return None
        record = self.rollout.store.load()
        return None if record is None else describe_rollout(record)

    def refuse_if_rollout_active(self, what: str) -> None:
        """While a rollout runs or is paused it owns the weights: a hand-made change would be undone or
        would skew the rollout's statistics."""
        active = self.rollout.active() if self.rollout is not None else None
        if active is not None:
            raise RolloutConflict(f"{what}: rollout {active.rollout_id} is {active.state} and owns the weights; "
                                  "abort it first (POST /admin/rollout/abort)", rollout_id=active.rollout_id)

    def registered(self, variant: str) -> tuple[str, str] | None:
        """(registered model name, version) of a variant served from the registry, else None."""
        loaded = self.scorer.variants.get(variant)
        return ((loaded.registered_name, loaded.registry_version)
                if loaded is not None and loaded.registered_name and loaded.registry_version else None)

    def promote(self, variant: str) -> dict[str, Any]:
        return self.routing.promote(variant, self.registered(variant), self.settings.mlflow.tracking_uri)

    def move_champion(self, variant: str) -> dict[str, Any]:
        return move_champion(variant, self.registered(variant), self.settings.mlflow.tracking_uri)

    def model_name(self) -> str:
        """The name clients use in the Open Inference Protocol: ``[model] name``, else the variants'
        registered model name when they share one, else ``model``."""
        if self.settings.model.name:
            return self.settings.model.name
        names = {v.registered_name for v in self.scorer.variants.values()}
        if len(names) == 1 and None not in names:
            return str(names.pop())
        return "model"

    def describe(self) -> dict[str, Any]:
        router = self.routing.router
        cfg = router.config
        scorer = self.scorer
        schema = scorer.schema
        return {
            "mode": cfg.mode,
            "config_hash": cfg.config_hash,
            "ready": scorer.ready.is_set(),
            "weights": {name: round(w, 6) for name, w in router.weights.items()},
            "routing_state": self.routing.describe_origin(),
            "shadow": cfg.shadow.model_dump() if cfg.mode == "shadow" else None,
            "model": None if schema is None else {
                "name": self.model_name(), "kind": str(scorer.kind), "labels": scorer.labels,
                "max_rows": scorer.max_rows,
                "examples": next((v.input_examples for v in scorer.variants.values() if v.input_examples), []),
                "inputs": [{"name": c.name, "type": c.type, "required": c.required,
                            "bounds": c.bounds.describe() if c.bounds else None} for c in schema.columns]},
            "variants": [
                {**scorer.variants[v.name].describe(), "weight": v.weight} if v.name in scorer.variants
                else {"name": v.name, "model_uri": v.model_uri, "weight": v.weight, "loaded": False}
                for v in cfg.variants  # the weights in force, not those of start-up
            ],
        }


def open_ledger(settings: Settings) -> MlflowLedger:
    return MlflowLedger(settings.mlflow.tracking_uri, settings.state.registered_model, settings.state.timeout_seconds)


def open_shared_state(settings: Settings) -> SharedStateFile | None:
    """The routing state every worker of this gateway shares, next to the spool. Without it (a
    read-only or broken directory) each process keeps its own routing, and /variants says so."""
    path = settings.spool.dir / FILE_NAME
    try:
        return SharedStateFile(path)
    except Exception as exc:
        log.error("cannot open the shared routing state %s: %s; routing changes will reach this process "
                  "only", path, first_line(exc, 200))
        return None
