"""The gateway's domain services, wired together: the routing table, the variants, the request
pipeline, feedback, the rollout; and what /variants says of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.bandit.reweigher import BanditRunner
from gateway.config.settings import Settings
from gateway.domain.errors import InvalidRollout, RolloutConflict
from gateway.domain.messages import first_line
from gateway.mlflow.ledger import MlflowLedger
from gateway.rollout.controller import RolloutController
from gateway.rollout.controller import describe as describe_rollout
from gateway.rollout.observations import RolloutObserver
from gateway.routing.sender import Champion
from gateway.routing.store import RoutingStore
from gateway.routing.table import RoutingTable
from gateway.security.gate import FeedbackGate
from gateway.security.keys import Secrets
from gateway.security.receipts import ReceiptSigner
from gateway.serving.feedback import FeedbackRecorder
from gateway.serving.observers import Observers
from gateway.serving.outcome import ServiceCounters
from gateway.serving.pipeline import Scorer
from gateway.spool.sqlite import SqliteFile
from gateway.spool.writer import SpoolWriter
from gateway.state.local import FILE_NAME, RoutingStateStore
from gateway.state.local_rollout import RolloutStore
from gateway.state.mlflow_rollout import MlflowRolloutStore
from gateway.state.mlflow_routing import MlflowRoutingStateStore
from gateway.variants.loaded import VariantSet

log = logging.getLogger("gateway")

LEDGER_COPY = "shared-state.json"  # the shared state last read from MLflow, for a start during an outage


@dataclass
class GatewayServices:
    settings: Settings
    routing: RoutingTable
    variants: VariantSet
    observers: Observers
    scorer: Scorer
    feedback: FeedbackRecorder
    gate: FeedbackGate
    receipts: ReceiptSigner | None  # None: [feedback] receipts = false
    counts: ServiceCounters = field(default_factory=ServiceCounters)
    shared: SqliteFile | None = None
    rollout: RolloutController | None = None
    observer: RolloutObserver | None = None
    champion: Champion | None = None  # set by the runtime, with the outbox (the alias moves through it)
    bandit: BanditRunner | None = None  # routing.mode = "bandit": set by the runtime, with the spool

    @property
    def decides_rollouts(self) -> bool:
        """With the state in MLflow the rollout's decisions are taken by one process for every replica
        (python -m gateway.rollout); with a local file, by one worker of this gateway."""
        return self.settings.state.backend == "local"

    @classmethod
    def build(cls, settings: Settings, writer: SpoolWriter | None, secrets: Secrets) -> GatewayServices:
        counts = ServiceCounters()
        shared: SqliteFile | None = None
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
        variants, observers = VariantSet(), Observers()
        scorer = Scorer(settings, writer, routing, counts, variants, observers, secrets.pseudonyms)
        feedback = FeedbackRecorder(scorer, counts, observers, accept_remote=settings.state.backend == "mlflow")
        gate = FeedbackGate(settings.feedback, secrets)
        services = cls(settings, routing, variants, observers, scorer, feedback, gate, secrets.receipts, counts, shared)
        if rollout_store is not None:
            observer = RolloutObserver()
            observers.add(observer)
            services.observer = observer
            services.rollout = RolloutController(rollout_store, routing, observer, services.move_champion,
                                                 pending=services.pending_in_mlflow)
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

    def promote(self, variant: str) -> dict[str, Any]:
        return self.routing.promote(variant, self.move_champion)

    def move_champion(self, variant: str) -> dict[str, Any]:
        champion = self.champion or Champion(None, None, self.settings.mlflow.tracking_uri)
        return champion.move(variant, self.variants.registered(variant))

    def pending_in_mlflow(self) -> list[dict[str, Any]]:
        """What the outbox still owes MLflow (champion alias moves, change-log runs)."""
        champion = self.champion
        return [] if champion is None or champion.outbox is None else champion.outbox.pending()

    def model_name(self) -> str:
        """The name clients use in the Open Inference Protocol: ``[model] name``, else the variants'
        registered model name when they share one, else ``model``."""
        if self.settings.model.name:
            return self.settings.model.name
        names = {v.registered_name for v in self.variants.values()}
        if len(names) == 1 and None not in names:
            return str(names.pop())
        return "model"

    def describe(self) -> dict[str, Any]:
        router = self.routing.router
        cfg = router.config
        variants = self.variants
        schema = variants.schema
        return {
            "mode": cfg.mode,
            "config_hash": cfg.config_hash,
            "ready": variants.ready.is_set(),
            "weights": {name: round(w, 6) for name, w in router.weights.items()},
            "routing_state": self.routing.describe_origin(),
            "shadow": cfg.shadow.model_dump() if cfg.mode == "shadow" else None,
            "bandit": self.bandit.describe() if self.bandit is not None else None,
            "model": None if schema is None else {
                "name": self.model_name(), "kind": str(variants.kind), "labels": variants.labels,
                "max_rows": self.settings.model.max_rows,
                **_examples(variants.values()),
                "inputs": [{"name": c.name, "type": c.type, "required": c.required,
                            "bounds": c.bounds.describe() if c.bounds else None} for c in schema.columns]},
            "variants": [
                {**variants[v.name].describe(), "weight": v.weight} if v.name in variants
                else {"name": v.name, "model_uri": v.model_uri, "weight": v.weight, "loaded": False}
                for v in cfg.variants  # the weights in force, not those of start-up
            ],
        }


def open_ledger(settings: Settings) -> MlflowLedger:
    copy = settings.spool.dir / LEDGER_COPY if settings.state.start_without_mlflow == "last_read" else None
    if copy is not None:
        try:
            copy.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            copy = None
    return MlflowLedger(settings.mlflow.tracking_uri, settings.state.registered_model, settings.state.timeout_seconds,
                        local_copy=copy)


def open_shared_state(settings: Settings) -> SqliteFile | None:
    """The routing state every worker of this gateway shares, next to the spool. Without it (a
    read-only or broken directory) each process keeps its own routing, and /variants says so."""
    path = settings.spool.dir / FILE_NAME
    try:
        return SqliteFile(path)
    except Exception as exc:
        log.error("cannot open the shared routing state %s: %s; routing changes will reach this process "
                  "only", path, first_line(exc, 200))
        return None


def _examples(variants: Any) -> dict[str, Any]:
    """The first variant's logged input example rows, and their true labels when its metadata has
    them (None otherwise): what experiments.traffic samples and, with --feedback, labels."""
    for v in variants:
        if v.input_examples:
            return {"examples": v.input_examples, "example_labels": v.example_labels}
    return {"examples": [], "example_labels": None}
