"""The one place that builds the gateway's services, in order, and hands them down built.

Order: the spool and its writer, the secrets, the MLflow outbox; then the shared state's stores, the
routing table (its change log listening from the start), the variants, the observers, the request
pipeline, feedback, the rollout controller, the bandit, the metrics; last ``GatewayServices``, frozen.
Nothing below this module builds another service, and no service is changed once it is handed on.
``Gateway`` (gateway/wiring/gateway.py) starts their threads; the exporter is built by
gateway/wiring/exporter.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.bandit.rewards import SpoolRewards
from gateway.bandit.reweigher import BanditRunner
from gateway.config.settings import RoutingSection, Settings, StateBackend
from gateway.domain.messages import first_line
from gateway.mlflow.ledger import MlflowLedger
from gateway.rollout.controller import RolloutController
from gateway.rollout.observations import RolloutObserver
from gateway.rollout.record import RolloutRecords
from gateway.routing.change_log import RoutingChangeRecorder
from gateway.routing.sender import Champion, OutboxSender
from gateway.routing.spec import RoutingMode
from gateway.routing.store import RoutingStore
from gateway.routing.table import RoutingTable
from gateway.security.gate import FeedbackGate
from gateway.security.keys import Secrets, load_secrets
from gateway.serving.feedback import FeedbackRecorder
from gateway.serving.metrics import GatewayMetrics
from gateway.serving.observers import Observers
from gateway.serving.outcome import ServiceCounters
from gateway.serving.pipeline import Scorer
from gateway.spool.outbox import Outbox
from gateway.spool.sqlite import SqliteFile
from gateway.spool.store import PredictionSpool
from gateway.spool.writer import SpoolWriter
from gateway.state.local import FILE_NAME, RoutingStateStore
from gateway.state.local_rollout import RolloutStore
from gateway.state.mlflow_rollout import MlflowRolloutStore
from gateway.state.mlflow_routing import MlflowRoutingStateStore
from gateway.variants.model_loader import ModelLoader
from gateway.variants.variant_set import VariantSet
from gateway.wiring.services import GatewayServices

log = logging.getLogger("gateway")

LEDGER_COPY = "shared-state.json"  # the shared state last read from MLflow, for a start during an outage


@dataclass(frozen=True)
class Storage:
    """What lives on the spool's disk: the spool and its writer (None when off or unopenable), the MLflow
    outbox and its sender (None when the directory cannot hold it)."""

    spool: PredictionSpool | None
    writer: SpoolWriter | None
    outbox: Outbox | None
    sender: OutboxSender | None


def open_storage(settings: Settings) -> Storage:
    spool = open_spool(settings)
    writer = None
    if spool is not None:
        writer = SpoolWriter(spool, lock_wait_ms=settings.spool.write_timeout_ms,
                             queue_wait_ms=settings.spool.write_timeout_ms)
        problem = writer.probe_now()
        if problem is not None:
            log.error("the prediction spool takes no records: %s (spool.min_free_mb, spool.max_size_mb); "
                      "on_log_failure = %s applies until it does", problem, settings.spool.on_log_failure)
    outbox, sender = open_outbox(settings.spool.dir, settings.mlflow.tracking_uri, settings.mlflow.retry_max_seconds)
    return Storage(spool, writer, outbox, sender)


def open_outbox(directory: Path, tracking_uri: str, retry_max_s: float = 30.0
                ) -> tuple[Outbox | None, OutboxSender | None]:
    """The outbox next to the spool and its sender, started; (None, None) when the directory cannot
    hold it (then each MLflow write gets one direct try, and a failure is only logged)."""
    try:
        outbox = Outbox(directory)
    except Exception as exc:
        log.error("cannot open the MLflow outbox in %s (%s): champion alias moves and change-log runs get one "
                  "try each, not retried", directory, first_line(exc, 200))
        return None, None
    sender = OutboxSender(outbox, tracking_uri, retry_max_s=retry_max_s)
    sender.start()
    return outbox, sender


def model_loader(settings: Settings) -> ModelLoader:
    """What loads the variants' models: from the registry, through the local cache."""
    return ModelLoader(settings.mlflow.tracking_uri, settings.mlflow.model_cache_dir, settings.model)


def open_secrets(settings: Settings) -> Secrets:
    secrets = load_secrets(settings.spool.dir if settings.spool.enabled else None,
                           replicas=settings.state.backend == StateBackend.MLFLOW, receipts=settings.feedback.receipts,
                           receipt_ttl_seconds=settings.feedback.receipt_ttl_seconds)
    for note in secrets.notes:
        log.info("%s", note)
    shipped_salt = RoutingSection.model_fields["salt"].default
    if settings.routing.salt == shipped_salt and settings.routing.mode != RoutingMode.SHADOW:
        log.warning("routing.salt is the shipped default %r: anyone can work out which version a sticky user id "
                    "lands on (and pick ids that skew a test); set a secret one in GATEWAY_ROUTING__SALT",
                    settings.routing.salt)
    return secrets


def build_services(settings: Settings, storage: Storage, secrets: Secrets,
                   stats: Callable[[], dict[str, Any]]) -> GatewayServices:
    """Every service of one gateway process; ``stats`` is GET /stats's body, for the metrics."""
    shared, routing_store, rollout_store = open_state(settings)
    tracking_uri = settings.mlflow.tracking_uri
    recorder = RoutingChangeRecorder(tracking_uri, settings.mlflow.routing_changes, storage.outbox,
                                     storage.sender and storage.sender.poke)
    routing = RoutingTable(settings.routing_config(), routing_store, listeners=[recorder])
    variants, observers, counts = VariantSet(), Observers(), ServiceCounters()
    champion = Champion(storage.outbox, storage.sender, tracking_uri)
    scorer = Scorer(settings, storage.writer, routing, counts, variants, observers, secrets.pseudonyms)
    feedback = FeedbackRecorder(scorer, counts, observers, accept_remote=settings.state.backend == StateBackend.MLFLOW)
    observer = rollout = None
    if rollout_store is not None:
        observer = RolloutObserver()
        observers.add(observer)
        rollout = RolloutController(rollout_store, routing, observer,
                                    lambda variant: champion.move(variant, variants.registered(variant)),
                                    pending=storage.outbox.pending if storage.outbox is not None else None)
    bandit = build_bandit(settings, routing, storage.spool)
    services: GatewayServices | None = None

    def described_variants() -> Any:
        return services.describe()["variants"] if services is not None else []

    def described_rollout() -> Any:
        return services.describe_rollout() if services is not None else None

    metrics = GatewayMetrics(stats, described_variants, rollout=described_rollout,
                             shared_state=routing.state_status,
                             rollout_counts=observer.current if observer is not None else None,
                             bandit=bandit.describe if bandit is not None else None)
    observers.add(metrics)
    services = GatewayServices(settings, routing, variants, observers, scorer, feedback,
                               FeedbackGate(settings.feedback, secrets), secrets.receipts, counts, champion, metrics,
                               shared=shared, rollout=rollout, observer=observer, bandit=bandit)
    return services


def build_bandit(settings: Settings, routing: RoutingTable, spool: PredictionSpool | None) -> BanditRunner | None:
    """Bandit mode's reweigher, reading the labels in the spool (one worker leads by a lock file)."""
    if settings.routing.mode != RoutingMode.BANDIT:
        return None
    if spool is None:
        log.error("routing.mode \"bandit\": the spool could not be opened, so no labels can be read; the "
                  "weights stay as they are until the gateway restarts with a working spool")
        return None
    return BanditRunner(settings.bandit, routing, SpoolRewards(spool.db, settings.bandit).read,
                        settings.spool.dir / "bandit.lock", decides=settings.state.backend == StateBackend.LOCAL)


def open_state(settings: Settings) -> tuple[SqliteFile | None, RoutingStore | None,
                                            RolloutRecords | None]:
    """(the local state file, the routing store, the rollout store): in MLflow's registry for
    replicas, else in a file next to the spool; Nones when that file cannot be opened."""
    if settings.state.backend == StateBackend.MLFLOW:
        ledger = open_ledger(settings)
        return None, MlflowRoutingStateStore(ledger, settings.state.poll_seconds), MlflowRolloutStore(ledger)
    shared = open_shared_state(settings)
    if shared is None:
        return None, None, None
    return shared, RoutingStateStore(shared), RolloutStore(shared)


def open_spool(settings: Settings) -> PredictionSpool | None:
    if not settings.spool.enabled:
        return None
    max_bytes = int(settings.spool.max_size_mb * 1024 * 1024) if settings.spool.max_size_mb else None
    try:
        return PredictionSpool(settings.spool.dir, fsync=settings.spool.fsync, max_bytes=max_bytes,
                               min_free_bytes=int(settings.spool.min_free_mb * 1024 * 1024))
    except Exception as exc:
        log.error("cannot open the prediction spool in %s: %s (on_log_failure = %s)",
                  settings.spool.dir, exc, settings.spool.on_log_failure)
        return None


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
