"""The gateway's services as the HTTP layer receives them, built once by gateway/wiring/build.py and
frozen: the routing table, the variants, the request pipeline, feedback, the rollout, the bandit, the
champion alias; and what /variants says of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.bandit.reweigher import BanditRunner
from gateway.config.settings import Settings, StateBackend
from gateway.domain.errors import InvalidRollout, NotReady, RolloutConflict
from gateway.protocols.limits import RequestShape
from gateway.rollout.controller import RolloutController
from gateway.rollout.controller import describe as describe_rollout
from gateway.rollout.observations import RolloutObserver
from gateway.routing.sender import Champion
from gateway.routing.spec import RoutingMode
from gateway.routing.table import RoutingTable
from gateway.security.gate import FeedbackGate
from gateway.security.receipts import ReceiptSigner
from gateway.serving import answering
from gateway.serving.feedback import FeedbackRecorder
from gateway.serving.metrics import GatewayMetrics
from gateway.serving.observers import Observers
from gateway.serving.outcome import ServiceCounters
from gateway.serving.pipeline import Scorer
from gateway.spool.sqlite import SqliteFile
from gateway.variants.variant_set import VariantSet

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class GatewayServices:
    settings: Settings
    routing: RoutingTable
    variants: VariantSet
    observers: Observers
    scorer: Scorer
    feedback: FeedbackRecorder
    gate: FeedbackGate
    receipts: ReceiptSigner | None  # None: [feedback] receipts = false
    counts: ServiceCounters
    champion: Champion  # moves the registry's champion alias (through the outbox when there is one)
    metrics: GatewayMetrics
    shared: SqliteFile | None = None  # the local state file ([state] backend = "local")
    rollout: RolloutController | None = None  # None: no state to keep a rollout in
    observer: RolloutObserver | None = None
    bandit: BanditRunner | None = None  # routing.mode = "bandit" with a working spool

    @property
    def decides_rollouts(self) -> bool:
        """With the state in MLflow the rollout's decisions are taken by one process for every replica
        (python -m gateway.rollout); with a local file, by one worker of this gateway."""
        return self.settings.state.backend == StateBackend.LOCAL

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
        return self.champion.move(variant, self.variants.registered(variant))

    def pending_in_mlflow(self) -> list[dict[str, Any]]:
        """What the outbox still owes MLflow (champion alias moves, change-log runs)."""
        outbox = self.champion.outbox
        return [] if outbox is None else outbox.pending()

    def request_shape(self) -> RequestShape:
        """What a request to these models may hold (their columns, [model] max_rows); NotReady while
        they load."""
        schema = self.variants.schema
        if schema is None or not self.variants.ready.is_set():
            raise NotReady(self.variants.load_error or "models are still loading")
        return RequestShape(tuple(schema.names), self.settings.model.max_rows)

    def notes(self, answered: answering.Answered) -> answering.Notes:
        """What the answer tells its client beside the predictions, by this gateway's settings (the
        version shown or not, the receipt): one rule for every transport."""
        return answering.notes(answered, reveal_version=self.settings.routing.reveal_version,
                               logging_enabled=self.scorer.logging_enabled, receipts=self.receipts)

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
            "shadow": cfg.shadow.model_dump() if cfg.mode == RoutingMode.SHADOW else None,
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


def _examples(variants: Any) -> dict[str, Any]:
    """The first variant's logged input example rows, and their true labels when its metadata has
    them (None otherwise): what experiments.traffic samples and, with --feedback, labels."""
    for v in variants:
        if v.input_examples:
            return {"examples": v.input_examples, "example_labels": v.example_labels}
    return {"examples": [], "example_labels": None}
