"""Scoring: validate a request's rows, route them, predict in one model call, record them durably,
and score the shadow after the response. Framework-free.

The HTTP layer calls ``score`` from a worker thread (validation and the model are CPU-bound),
``record`` before it answers, and ``submit_shadow`` after the response has been sent.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gateway.errors import (
    ConflictingRequest,
    ModelFailure,
    NotReady,
    SchemaMismatch,
    SpoolUnavailable,
    TooManyRows,
)
from gateway.exceptions import first_line
from gateway.model_output import ModelKind, Prediction
from gateway.model_schema import Bounds, ModelSchema
from gateway.records import PredictionRecord, Role
from gateway.routing import Decision, Router, RoutingReason
from gateway.routing_table import RoutingTable
from gateway.settings import Settings
from gateway.spool import DuplicateRequest, PredictionSpool, SpoolWriteError
from gateway.variants import LoadedVariant, ModelLoader

log = logging.getLogger("gateway.scoring")


class ServiceCounters:
    """Request counters shown in /stats (served, rejected_unlogged, replayed, shadow_*, feedback)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str, by: int = 1) -> None:
        with self._lock:
            self._counts[key] += by

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True, slots=True)
class ScoredRequest:
    request_id: str
    decision: Decision
    rows: list[dict[str, Any]]
    records: list[PredictionRecord]
    predictions: list[Prediction]
    router: Router
    params: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PredictionOutcome:
    request_id: str
    model_version: str
    reason: str
    predictions: list[Prediction]
    inference_time_ms: float
    logged: bool
    replayed: bool = False
    shadow: str | None = None


class Scorer:
    def __init__(self, settings: Settings, spool: PredictionSpool | None, routing: RoutingTable,
                 counts: ServiceCounters, *, shadow_queue: int = 1000) -> None:
        self.settings = settings
        self.spool = spool
        self.routing = routing
        self.counts = counts
        self.logging_enabled = settings.spool.enabled
        self.on_log_failure = settings.spool.on_log_failure
        self.max_rows = settings.model.max_rows
        self.variants: dict[str, LoadedVariant] = {}
        self.schema: ModelSchema | None = None
        self.kind: ModelKind | None = None
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.listeners: list[Any] = []  # observers with on_prediction(record, logged, primary=None) (metrics)
        self._shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")
        self._shadow_slots = threading.BoundedSemaphore(shadow_queue)
        self._in_flight: set[str] = set()  # request ids being scored right now

    # -- start-up ------------------------------------------------------------------------------

    def load_variants(self, loader: ModelLoader) -> None:
        """Load every configured variant, check that they take the same input; then ready."""
        loaded: dict[str, LoadedVariant] = {}
        for spec in self.routing.config.variants:
            variant = loader.load(spec)
            log.info("variant %s loaded from %s (%s, %s %s, registry version %s) in %.2fs", spec.name,
                     spec.model_uri, variant.source, variant.flavor, variant.kind, variant.registry_version,
                     variant.load_seconds)
            loaded[spec.name] = variant
        first, *others = loaded.values()
        for other in others:
            diff = first.schema.difference(other.schema)
            if diff is not None:
                raise SchemaMismatch(f"variants {first.name} ({first.spec.model_uri}) and {other.name} "
                                     f"({other.spec.model_uri}) take different inputs: {diff}")
            if other.kind is not first.kind:
                raise SchemaMismatch(f"variant {first.name} is a {first.kind} but {other.name} is a {other.kind}; "
                                     "set [model] kind if one of them was detected wrongly")
        bounds = {name: Bounds(**b.model_dump()) for name, b in self.settings.model.bounds.items()}
        self.schema = first.schema.with_bounds(bounds)
        self.kind = first.kind
        self.variants = loaded
        self.ready.set()

    def fail_loading(self, error: Exception) -> None:
        self.load_error = str(error)

    @property
    def labels(self) -> list[str | int] | None:
        """The classes a classifier answers with, when its variants know them."""
        for v in self.variants.values():
            if v.decoder.labels:
                return v.decoder.labels
        return None

    # -- the request path ----------------------------------------------------------------------

    def score(self, raw_rows: Sequence[Any], *, forced: str | None = None, user_key: str | None = None,
              request_id: str | None = None, probabilities: bool = False,
              params: dict[str, Any] | None = None) -> ScoredRequest:
        """Validate, route and predict one request's rows in one model call (CPU-bound: call it
        from a worker thread, not the event loop)."""
        if not self.ready.is_set() or self.schema is None:
            raise NotReady(self.load_error or "models are still loading")
        if len(raw_rows) > self.max_rows:
            raise TooManyRows(len(raw_rows), self.max_rows)
        rows = self.schema.validate_rows(raw_rows)
        router = self.routing.router  # one consistent config for the whole request
        decision = router.decide(forced=forced, user_key=user_key)
        request_id = request_id or uuid.uuid4().hex
        variant = self.variants[decision.variant]
        self._in_flight.add(request_id)
        try:
            result = self._predict(variant, rows, probabilities, params)
        except BaseException:
            self._in_flight.discard(request_id)
            raise
        records = self._records(request_id, Role.PRIMARY, variant, rows, result.predictions, result.elapsed_ms,
                                str(decision.reason), router)
        return ScoredRequest(request_id, decision, rows, records, result.predictions, router, params)

    @staticmethod
    def _predict(variant: LoadedVariant, rows: list[dict[str, Any]], probabilities: bool,
                 params: dict[str, Any] | None) -> Any:
        try:
            return variant.predict(rows, probabilities, params)
        except Exception as exc:
            log.exception("variant %s failed to predict %d row(s)", variant.name, len(rows))
            raise ModelFailure(f"variant {variant.name} ({variant.spec.model_uri}) failed to predict: "
                               f"{first_line(exc)}", variant=variant.name) from None

    def _records(self, request_id: str, role: Role, variant: LoadedVariant, rows: list[dict[str, Any]],
                 predictions: list[Prediction], elapsed_ms: float, routing: str,
                 router: Router) -> list[PredictionRecord]:
        ts_ms = int(time.time() * 1000)
        return [PredictionRecord(request_id=request_id, role=str(role), model_version=variant.name, features=row,
                                 prediction=p.label, class_index=p.class_index, inference_time_ms=elapsed_ms,
                                 ts_ms=ts_ms, routing=routing, config_hash=router.config.config_hash,
                                 weights=router.weights_tag, row_index=i, kind=str(variant.kind))
                for i, (row, p) in enumerate(zip(rows, predictions, strict=True))]

    def record(self, scored: ScoredRequest) -> PredictionOutcome:
        """Commit the request's records to the spool before anyone sees the answer (one local write)."""
        try:
            return self._record(scored)
        finally:
            self._in_flight.discard(scored.request_id)

    def _record(self, scored: ScoredRequest) -> PredictionOutcome:
        logged = False
        if self.logging_enabled:
            try:
                if self.spool is None:
                    raise SpoolWriteError("the prediction spool could not be opened at start-up")
                self.spool.append_many(scored.records)
                logged = True
            except DuplicateRequest as dup:
                return self._replay(dup.existing, scored)
            except SpoolWriteError as exc:
                if self.on_log_failure == "reject":
                    self.counts.add("rejected_unlogged")
                    raise SpoolUnavailable(
                        f"prediction not served: it could not be logged ({exc}); on_log_failure = reject"
                    ) from None
                self.counts.add("served_unlogged")
                log.error("serving unlogged prediction %s: %s", scored.request_id, exc)
        self.counts.add("served")
        self.counts.add("rows_served", len(scored.records))
        for listener in self.listeners:
            for rec in scored.records:
                listener.on_prediction(rec, logged)
        first = scored.records[0]
        return PredictionOutcome(scored.request_id, first.model_version, str(scored.decision.reason),
                                 scored.predictions, first.inference_time_ms, logged, shadow=scored.decision.shadow)

    def _replay(self, existing: list[PredictionRecord], attempted: ScoredRequest) -> PredictionOutcome:
        """A retried request id: answer what was recorded, provided it is the same question."""
        if [r.features for r in existing] != attempted.rows:
            raise ConflictingRequest(existing[0].request_id)
        self.counts.add("replayed")
        first = existing[0]
        predictions = [Prediction(r.prediction, r.class_index) for r in existing]
        return PredictionOutcome(first.request_id, first.model_version, first.routing, predictions,
                                 first.inference_time_ms, logged=True, replayed=True)

    # -- shadow scoring, after the response ----------------------------------------------------

    def submit_shadow(self, outcome: PredictionOutcome, scored: ScoredRequest) -> bool:
        """Queue the candidate's scoring; never blocks. Returns False when the queue is full."""
        if outcome.shadow is None or outcome.replayed:
            return False
        if not self._shadow_slots.acquire(blocking=False):
            self.counts.add("shadow_dropped")
            return False
        try:
            self._shadow_pool.submit(self._score_shadow, outcome, scored)
        except RuntimeError:  # shutting down
            self._shadow_slots.release()
            return False
        return True

    def _score_shadow(self, outcome: PredictionOutcome, scored: ScoredRequest) -> None:
        try:
            candidate = self.variants[outcome.shadow]  # type: ignore[index]
            result = candidate.predict(scored.rows, params=scored.params)
            records = self._records(outcome.request_id, Role.SHADOW, candidate, scored.rows, result.predictions,
                                    result.elapsed_ms, str(RoutingReason.SHADOW), scored.router)
            logged = False
            if self.logging_enabled and self.spool is not None:
                self.spool.append_many(records)
                logged = True
            self.counts.add("shadow_scored")
            agree = sum(r.prediction == p.label for r, p in zip(records, outcome.predictions, strict=True))
            self.counts.add("shadow_agree", agree)
            for listener in self.listeners:
                for rec, primary in zip(records, outcome.predictions, strict=True):
                    listener.on_prediction(rec, logged, primary=primary.label)
        except DuplicateRequest:
            self.counts.add("shadow_scored")
        except Exception as exc:  # a failing candidate must never touch the primary
            self.counts.add("shadow_failed")
            log.warning("shadow scoring of %s by %s failed: %s", outcome.request_id, outcome.shadow, first_line(exc))
        finally:
            self._shadow_slots.release()

    def in_flight(self, request_id: str) -> bool:
        return request_id in self._in_flight

    def shutdown(self) -> None:
        """Finish queued shadow scoring (it is fast) so its records reach the spool."""
        self._shadow_pool.shutdown(wait=True, cancel_futures=False)
