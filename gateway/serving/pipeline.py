"""Scoring: validate a request's rows, route them, predict, record them durably, and score the
shadow after the response. Framework-free.

The request path is two calls, and the caller's thread (the event loop) does no work in between:

1. ``submit`` routes the request (cheap) and queues its raw rows on the chosen variant's
   micro-batcher, whose worker validates them and scores them, with any requests that arrived
   meanwhile, in one model call; the worker then hands the records to the spool's writer thread
   (group commit). The future resolves once they are durable (or the write failed), with the
   ``ScoredRequest`` and the write's error, if any.
2. ``finish`` turns that into the answer: served and logged, a replay of a recorded request, or the
   ``on_log_failure`` policy. The response is sent only after this.

``submit_shadow`` queues the candidate's scoring on its own batcher after the response was sent.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from functools import partial
from typing import Any

from gateway.config.settings import Settings
from gateway.domain.errors import (
    ConflictingRequest,
    MalformedBody,
    ModelFailure,
    NotReady,
    SpoolUnavailable,
    TooManyRows,
    VariantSaturated,
)
from gateway.domain.messages import first_line
from gateway.domain.records import PredictionRecord, RecordBatch, Role, SharedFields, randomisation_unit
from gateway.routing.router import Decision, Router, RoutingReason
from gateway.routing.table import RoutingTable
from gateway.security.pseudonyms import Pseudonyms
from gateway.serving.batching import BatcherClosed, JobResult, MicroBatcher, QueueFull
from gateway.serving.observers import Observers
from gateway.serving.outcome import Committed, PredictionOutcome, ScoredRequest, ServiceCounters
from gateway.serving.shadow import ShadowBook
from gateway.spool.store import DuplicateRequest, SpoolWriteError
from gateway.spool.writer import SpoolWriter
from gateway.variants import columns
from gateway.variants.model_loader import BatchResult, LoadedVariant
from gateway.variants.output import Predictions
from gateway.variants.threads import limit_this_thread
from gateway.variants.variant_set import VariantSet

log = logging.getLogger("gateway.scoring")


class Pending(Future[Committed]):
    """A submitted request's future, naming the variant it was routed to. Cancelling it (its client went
    away, or its deadline passed) drops the work if it is still queued; either way nothing is logged."""

    def __init__(self, variant: str, request_id: str) -> None:
        super().__init__()
        self.variant = variant
        self.request_id = request_id


@dataclass(slots=True)
class _Ticket:
    """What finishing one queued scoring needs once its model call is done (primary or shadow)."""

    request_id: str
    role: Role
    variant: LoadedVariant
    routing: str
    router: Router
    params: dict[str, Any] | None
    decision: Decision | None = None  # primary
    future: Pending | None = None  # primary
    user: str | None = None  # the sticky key's pseudonym
    headers: str = ""  # [routing] log_headers' values, as JSON text
    outcome: PredictionOutcome | None = None  # shadow: the primary's answer


class Scorer:
    """The request path over a set of variants: admission, routing, one micro-batcher per variant,
    the records, the spool write and the ``on_log_failure`` policy; shadows after the response."""

    def __init__(self, settings: Settings, writer: SpoolWriter | None, routing: RoutingTable,
                 counts: ServiceCounters, variants: VariantSet, observers: Observers, pseudonyms: Pseudonyms, *,
                 shadow_queue: int = 1000) -> None:
        self.settings = settings
        self.pseudonyms = pseudonyms
        self.writer = writer
        self.routing = routing
        self.counts = counts
        self.variants = variants
        self.observers = observers
        self.logging_enabled = settings.spool.enabled
        self.on_log_failure = settings.spool.on_log_failure
        self.max_rows = settings.model.max_rows
        self.batchers: dict[str, MicroBatcher] = {}
        self.shadows = ShadowBook(counts, observers, shadow_queue)
        self._in_flight: set[str] = set()  # request ids being scored right now

    def start(self) -> None:
        """One micro-batcher per loaded variant; called once the variants are loaded."""
        schema = self.variants.schema
        assert schema is not None
        batching = self.settings.batching
        self.batchers = {
            name: MicroBatcher(name, partial(self._predict, variant), prepare=partial(columns.prepare, schema),
                               max_batch_size=batching.max_batch_size,
                               max_delay_s=batching.max_batch_delay_ms / 1000.0,
                               max_queue_rows=batching.max_queue_rows, deliver=self._deliver,
                               on_start=partial(limit_this_thread, self.settings.model.threads))
            for name, variant in self.variants.items()}

    # -- the request path ----------------------------------------------------------------------

    def submit(self, raw_rows: Sequence[Any], *, forced: str | None = None, user_key: str | None = None,
               request_id: str | None = None, probabilities: bool = False,
               params: dict[str, Any] | None = None, headers: str = "") -> Pending:
        """Route the request and queue it on its variant's batcher. Raises NotReady, TooManyRows,
        UnknownVariant or VariantSaturated at once; invalid rows and model errors come through the
        future, which gives (the scored request, the spool write's error or None) once its records are
        committed. Cancel the future to abandon the request: it is not logged."""
        if not self.variants.ready.is_set() or not self.batchers:
            raise NotReady(self.variants.load_error or "models are still loading")
        if len(raw_rows) > self.max_rows:
            raise TooManyRows(len(raw_rows), self.max_rows)
        if not raw_rows:  # a client's mistake, not the model's: never a model call, never a 500
            raise MalformedBody("the request has no rows to predict")
        router = self.routing.router  # one consistent config for the whole request
        decision = router.decide(forced=forced, user_key=user_key)
        request_id = request_id or uuid.uuid4().hex
        variant = self.variants[decision.variant]
        if probabilities:
            variant.check_probabilities()
        pending = Pending(variant.name, request_id)
        ticket = _Ticket(request_id, Role.PRIMARY, variant, str(decision.reason), router, params or None,
                         decision=decision, future=pending,
                         user=self.pseudonyms.of(user_key) if user_key else None, headers=headers)
        self._in_flight.add(request_id)
        try:
            job = self.batchers[variant.name].submit(raw_rows, probabilities=probabilities,
                                                     params=params or None, ticket=ticket)
        except BatcherClosed:
            self._in_flight.discard(request_id)
            raise NotReady("the gateway is shutting down") from None
        except QueueFull as full:
            self._in_flight.discard(request_id)
            self.counts.add("refused_saturated")
            raise VariantSaturated(variant.name, full.queued, full.limit, full.wait_s) from None
        pending.add_done_callback(lambda done: self._abandoned(request_id, job) if done.cancelled() else None)
        return pending

    def _abandoned(self, request_id: str, job: Future[Any]) -> None:
        """The caller cancelled: a queued job is dropped by its batcher; a running one is not logged."""
        job.cancel()
        self._in_flight.discard(request_id)
        self.counts.add("cancelled")

    # -- after each model call, on the batcher's thread ------------------------------------------

    def _deliver(self, settled: list[tuple[_Ticket, JobResult | BaseException]]) -> None:
        """Every request of one model call: records built, committed in one transaction (the spool
        writer's, or right here when it is idle), then each request's future resolved."""
        scored: list[tuple[_Ticket, JobResult, list[PredictionRecord]]] = []
        for ticket, result in settled:
            if ticket.future is not None and ticket.future.cancelled():
                continue  # its client went away while the model ran: answered to nobody, so not logged
            if isinstance(result, BaseException):
                self._fail(ticket, result)
                continue
            try:
                records = self._records(ticket.request_id, ticket.role, ticket.variant, result, ticket.routing,
                                        ticket.router, ticket.user, ticket.headers)
            except Exception as exc:  # the request fails, the others and the worker go on
                self._fail(ticket, exc)
                continue
            scored.append((ticket, result, records))
        if not scored:
            return
        if not self.logging_enabled or self.writer is None:
            error = None if not self.logging_enabled else SpoolWriteError(
                "the prediction spool could not be opened at start-up")
            for ticket, result, records in scored:
                self._settle(ticket, result, records, error)
            return
        written = self.writer.write_many([records for _, _, records in scored])
        for (ticket, result, records), future in zip(scored, written, strict=True):
            future.add_done_callback(lambda done, t=ticket, r=result, recs=records: self._settle(
                t, r, recs, done.exception()))

    def _settle(self, ticket: _Ticket, result: JobResult, records: list[PredictionRecord],
                write_error: BaseException | None) -> None:
        if ticket.role is Role.SHADOW:
            self.shadows.settled(ticket.outcome, records, write_error)  # type: ignore[arg-type]
            return
        assert ticket.future is not None and ticket.decision is not None
        request = ScoredRequest(ticket.request_id, ticket.decision, result.rows, records,
                                result.predictions, ticket.router, ticket.params)
        try:
            ticket.future.set_result((request, write_error))
        except InvalidStateError:  # its caller went away (cancelled): nobody will finish it
            self._in_flight.discard(ticket.request_id)

    def _fail(self, ticket: _Ticket, error: BaseException) -> None:
        if ticket.role is Role.SHADOW:
            self.shadows.failed(ticket.outcome, error)  # type: ignore[arg-type]
            return
        if isinstance(error, ModelFailure):
            self.observers.model_error(ticket.variant.name, ticket.routing, ticket.router.weights_tag,
                                       randomisation_unit(ticket.routing, ticket.user, ticket.request_id))
            # The client learns which variant failed and under which request id; the model's own
            # message (paths, data) goes to the log only.
            log.error("request %s: variant %s failed to predict: %s", ticket.request_id, ticket.variant.name,
                      getattr(error, "cause", ""))
            error = ModelFailure(f"variant {ticket.variant.name} failed to predict request {ticket.request_id}; "
                                 "the gateway's log has the model's error", variant=ticket.variant.name,
                                 request_id=ticket.request_id)
        self._in_flight.discard(ticket.request_id)
        with contextlib.suppress(InvalidStateError):
            ticket.future.set_exception(error)  # type: ignore[union-attr]

    @staticmethod
    def _predict(variant: LoadedVariant, rows: list[dict[str, Any]], probabilities: bool,
                 params: dict[str, Any] | None) -> BatchResult:
        try:
            return variant.predict(rows, probabilities, params)
        except Exception as exc:
            log.exception("variant %s failed to predict %d row(s)", variant.name, len(rows))
            failure = ModelFailure(f"variant {variant.name} failed to predict", variant=variant.name)
            failure.cause = first_line(exc)  # type: ignore[attr-defined]  # for the log, never the client
            raise failure from None

    @staticmethod
    def _records(request_id: str, role: Role, variant: LoadedVariant, result: JobResult, routing: str,
                 router: Router, user: str | None = None, headers: str = "") -> RecordBatch:
        """The request's records in columns: no record object per row (the spool packs the columns)."""
        shared = SharedFields(
            request_id=request_id, role=str(role), model_version=variant.name, inference_time_ms=result.elapsed_ms,
            ts_ms=int(time.time() * 1000), routing=routing, config_hash=router.config_hash,
            weights=router.weights_tag, kind=str(variant.kind), batch_rows=result.batch_rows,
            request_time_ms=result.request_time_ms, user=user, headers=headers, model_uri=variant.spec.model_uri,
            model=variant.model_identity, weights_version=router.version, model_id=variant.model_id or "",
            assignment_probability=router.assignment_probability(variant.name, routing) if role == Role.PRIMARY
            else None)
        predictions = result.predictions
        if len(result.rows) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(result.rows)} rows")
        return RecordBatch(shared, result.rows, predictions.labels, predictions.class_indexes)

    def finish(self, scored: ScoredRequest, error: BaseException | None = None) -> PredictionOutcome:
        """The answer, once the records are committed (``error`` None) or their write failed. Raises SpoolUnavailable
        (on_log_failure = reject) or ConflictingRequest (a request id reused for other rows)."""
        try:
            return self._finish(scored, error)
        finally:
            self._in_flight.discard(scored.request_id)

    def _finish(self, scored: ScoredRequest, error: BaseException | None) -> PredictionOutcome:
        logged = self.logging_enabled and error is None
        if isinstance(error, DuplicateRequest):
            return self._replay(error.existing, scored)
        if isinstance(error, SpoolWriteError):
            if self.on_log_failure == "reject":
                self.counts.add("rejected_unlogged")
                raise SpoolUnavailable(
                    f"prediction not served: it could not be logged ({error}); on_log_failure = reject"
                ) from None
            self.counts.add("served_unlogged")
            log.error("serving unlogged prediction %s: %s", scored.request_id, error)
        elif error is not None:
            raise error
        self.counts.add("served")
        self.counts.add("rows_served", len(scored.records))
        self.observers.records(scored.records)
        first = scored.records[0]
        return PredictionOutcome(scored.request_id, first.model_version, str(scored.decision.reason),
                                 scored.predictions, first.inference_time_ms, logged, shadow=scored.decision.shadow)

    def _replay(self, existing: list[PredictionRecord], attempted: ScoredRequest) -> PredictionOutcome:
        """A retried request id: answer what was recorded, provided it is the same question."""
        if [r.features for r in existing] != list(attempted.rows):
            raise ConflictingRequest(existing[0].request_id)
        self.counts.add("replayed")
        first = existing[0]
        predictions = Predictions([r.prediction for r in existing], [r.class_index for r in existing])
        return PredictionOutcome(first.request_id, first.model_version, first.routing, predictions,
                                 first.inference_time_ms, logged=True, replayed=True)

    # -- shadow scoring, after the response ----------------------------------------------------

    def submit_shadow(self, outcome: PredictionOutcome, scored: ScoredRequest) -> bool:
        """Queue the candidate's scoring; never blocks. Returns False when the queue is full."""
        if outcome.shadow is None or outcome.replayed:
            return False
        if not self.shadows.reserve():
            return False
        candidate = self.variants[outcome.shadow]
        ticket = _Ticket(outcome.request_id, Role.SHADOW, candidate, str(RoutingReason.SHADOW), scored.router,
                         scored.params, outcome=outcome, user=scored.records[0].user if scored.records else None,
                         headers=scored.records[0].headers if scored.records else "")
        try:
            self.batchers[candidate.name].submit(scored.rows, prepared=True, params=scored.params, ticket=ticket)
        except BatcherClosed:
            self.shadows.release()
            return False
        return True

    def in_flight(self, request_id: str) -> bool:
        return request_id in self._in_flight

    def shutdown(self) -> None:
        """Score what is queued (shadows included) so that its records reach the spool's writer."""
        for batcher in self.batchers.values():
            batcher.close()
