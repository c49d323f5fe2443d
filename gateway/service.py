"""The prediction use case: route, predict, record durably, and score the shadow afterwards.

Framework-free. The HTTP layer calls ``score`` from a worker thread (it is CPU-bound), ``record``
before it answers, and ``submit_shadow`` after the response has been sent.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gateway.errors import (
    GatewayError,
    InvalidFeedback,
    ModelLoadError,
    NotReady,
    SpoolUnavailable,
    UnknownRequest,
    UnknownVariant,
)
from gateway.features import CLASS_NAMES, IrisFeatures
from gateway.routing import Decision, Router, RoutingReason
from gateway.settings import RoutingConfig, Settings, ShadowSection, VariantSpec, validate_routing
from gateway.spool import DuplicateRequest, PredictionRecord, PredictionSpool, SpoolWriteError
from gateway.variants import LoadedVariant, ModelLoader

log = logging.getLogger("gateway.service")


class InvalidRoutingChange(GatewayError):
    """A live routing change that the start-up config would have refused too."""


class ConflictingRequest(Exception):
    """The request id was used before for different features."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request id {request_id!r} was already used for a different prediction")
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class ScoredRequest:
    record: PredictionRecord
    decision: Decision


@dataclass(frozen=True, slots=True)
class PredictionOutcome:
    request_id: str
    model_version: str
    class_index: int
    reason: str
    inference_time_ms: float
    logged: bool
    replayed: bool = False
    shadow: str | None = None

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_index]


class PredictionService:
    def __init__(self, settings: Settings, spool: PredictionSpool | None, *, shadow_queue: int = 1000) -> None:
        self.settings = settings
        self.spool = spool
        self.logging_enabled = settings.spool.enabled
        self.on_log_failure = settings.spool.on_log_failure
        self._router = Router(settings.routing_config())
        self._routing_lock = threading.Lock()
        self.variants: dict[str, LoadedVariant] = {}
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")
        self._shadow_slots = threading.BoundedSemaphore(shadow_queue)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.listeners: list[Any] = []  # observers with on_prediction(record, logged) (metrics)
        self.change_listeners: list[Any] = []  # callables taking a routing-change dict
        self._in_flight: set[str] = set()  # request ids being scored right now

    # -- configuration -----------------------------------------------------------------------

    @property
    def routing(self) -> RoutingConfig:
        return self._router.config

    @property
    def router(self) -> Router:
        return self._router

    def load_variants(self, loader: ModelLoader) -> None:
        """Load every configured variant; on success the service is ready."""
        loaded = {}
        for spec in self._router.config.variants:
            variant = loader.load(spec)
            log.info("variant %s loaded from %s (%s, registry version %s) in %.2fs", spec.name,
                     spec.model_uri, variant.source, variant.registry_version, variant.load_seconds)
            loaded[spec.name] = variant
        self.variants = loaded
        self.ready.set()

    def fail_loading(self, error: ModelLoadError | Exception) -> None:
        self.load_error = str(error)

    # -- live routing changes ----------------------------------------------------------------

    def change_routing(self, *, mode: str | None = None, weights: dict[str, float] | None = None,
                       shadow: dict[str, Any] | None = None, salt: str | None = None,
                       source: str = "") -> dict[str, Any]:
        """Validate like the start-up config, then swap the router in one assignment: every request
        sees either the old config or the new one, never a mix."""
        from pydantic import ValidationError

        with self._routing_lock:
            old = self._router.config
            names = [v.name for v in old.variants]
            unknown = sorted(set(weights or {}) - set(names))
            if unknown:
                raise InvalidRoutingChange(f"weights: unknown variant(s) {unknown}; configured: {names}")
            try:
                variants = tuple(VariantSpec.model_validate({**v.model_dump(), "weight": (weights or {}).get(
                    v.name, v.weight)}) for v in old.variants)
                new_shadow = ShadowSection.model_validate({**old.shadow.model_dump(), **(shadow or {})})
                new = RoutingConfig(mode=mode or old.mode, variants=variants, shadow=new_shadow,  # type: ignore[arg-type]
                                    salt=old.salt if salt is None else salt)
                validate_routing(new.mode, new.variants, new.shadow)
            except ValidationError as exc:
                err = exc.errors()[0]
                key = ".".join(str(p) for p in err["loc"])
                raise InvalidRoutingChange(f"{key}: {err['msg']}") from None
            except ValueError as exc:
                raise InvalidRoutingChange(str(exc)) from None
            self._router = Router(new)
        change = {"source": source, "old_config_hash": old.config_hash, "config_hash": new.config_hash,
                  "mode": new.mode, "weights": self._router.weights,
                  "shadow": new.shadow.model_dump() if new.mode == "shadow" else None}
        log.info("routing changed by %s: config %s -> %s, mode %s, weights %s", source or "?",
                 old.config_hash, new.config_hash, new.mode, self._router.weights_tag)
        for on_change in self.change_listeners:
            on_change(change)
        return change

    def promote(self, variant: str) -> dict[str, Any]:
        """All traffic to one variant, and the registry's champion alias to its model version."""
        names = [v.name for v in self._router.config.variants]
        if variant not in names:
            raise UnknownVariant(variant, names)
        change = self.change_routing(mode="weighted", weights={n: 1.0 if n == variant else 0.0 for n in names},
                                     source=f"POST /admin/promote {variant}")
        loaded = self.variants.get(variant)
        alias: dict[str, Any] = {"alias": "champion", "moved": False}
        if loaded is None or not loaded.registered_name or not loaded.registry_version:
            alias["reason"] = "the variant's model is not a registry model version"
        else:
            try:
                from mlflow import MlflowClient

                client = MlflowClient(tracking_uri=self.settings.mlflow.tracking_uri,
                                      registry_uri=self.settings.mlflow.tracking_uri)
                client.set_registered_model_alias(loaded.registered_name, "champion", loaded.registry_version)
                alias.update(moved=True, model=loaded.registered_name, version=loaded.registry_version)
                log.info("champion alias of %s moved to version %s (%s)", loaded.registered_name,
                         loaded.registry_version, variant)
            except Exception as exc:
                alias["reason"] = f"MLflow refused or is unreachable: {str(exc).splitlines()[0][:200]}"
                log.error("promote %s: routing changed but the champion alias was not moved: %s", variant,
                          alias["reason"])
        return {"routing": change, "registry": alias}

    # -- the request path --------------------------------------------------------------------

    def score(self, features: IrisFeatures, *, forced: str | None = None, user_key: str | None = None,
              request_id: str | None = None) -> ScoredRequest:
        """Route and predict (CPU-bound: call it from a worker thread, not the event loop)."""
        if not self.ready.is_set():
            raise NotReady(self.load_error or "models are still loading")
        router = self._router  # one consistent config for the whole request
        decision: Decision = router.decide(forced=forced, user_key=user_key)
        request_id = request_id or uuid.uuid4().hex
        variant = self.variants[decision.variant]
        self._in_flight.add(request_id)
        try:
            class_index, elapsed_ms = variant.predict(features.as_row())
        except BaseException:
            self._in_flight.discard(request_id)
            raise
        record = PredictionRecord(
            request_id=request_id, role="primary", model_version=decision.variant,
            sepal_length=features.sepal_length, sepal_width=features.sepal_width,
            petal_length=features.petal_length, petal_width=features.petal_width,
            class_index=class_index, class_name=CLASS_NAMES[class_index],
            inference_time_ms=elapsed_ms, ts_ms=int(time.time() * 1000), routing=str(decision.reason),
            config_hash=router.config.config_hash, weights=router.weights_tag,
        )
        return ScoredRequest(record, decision)

    def record(self, scored: ScoredRequest) -> PredictionOutcome:
        """Commit the prediction to the spool before anyone sees the answer (one short local write)."""
        record, decision = scored.record, scored.decision
        try:
            return self._record(record, decision)
        finally:
            self._in_flight.discard(record.request_id)

    def _record(self, record: PredictionRecord, decision: Decision) -> PredictionOutcome:
        logged = False
        if self.logging_enabled:
            try:
                if self.spool is None:
                    raise SpoolWriteError("the prediction spool could not be opened at start-up")
                self.spool.append(record)
                logged = True
            except DuplicateRequest as dup:
                return self._replay(dup.existing, record)
            except SpoolWriteError as exc:
                if self.on_log_failure == "reject":
                    self._count("rejected_unlogged")
                    raise SpoolUnavailable(
                        f"prediction not served: it could not be logged ({exc}); on_log_failure = reject"
                    ) from None
                self._count("served_unlogged")
                log.error("serving unlogged prediction %s: %s", record.request_id, exc)
        self._count("served")
        for listener in self.listeners:
            listener.on_prediction(record, logged)
        return PredictionOutcome(record.request_id, decision.variant, record.class_index, str(decision.reason),
                                 record.inference_time_ms, logged, shadow=decision.shadow)

    def _replay(self, existing: PredictionRecord, attempted: PredictionRecord) -> PredictionOutcome:
        """A retried request id: answer what was recorded, provided it is the same question."""
        if existing.features() != attempted.features():
            raise ConflictingRequest(existing.request_id)
        self._count("replayed")
        return PredictionOutcome(existing.request_id, existing.model_version, existing.class_index,
                                 existing.routing, existing.inference_time_ms, logged=True, replayed=True)

    # -- ground truth --------------------------------------------------------------------------

    def record_feedback(self, request_id: str, true_label: str | int) -> dict[str, Any]:
        """Store a true label durably; the exporter joins it to the prediction's MLflow run."""
        label = _class_name(true_label)
        if self.spool is None:
            raise SpoolUnavailable("feedback needs the prediction spool, which is disabled or could not be opened")
        predicted = self.spool.find(request_id, "primary")
        deadline = time.monotonic() + 2.0
        while predicted is None and request_id in self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)  # its prediction is being answered right now: it lands in a moment
            predicted = self.spool.find(request_id, "primary")
        if predicted is None:
            raise UnknownRequest(f"no answered prediction with request_id {request_id!r} in the spool "
                                 f"(unknown, or older than the spool's retention)", request_id=request_id)
        correct = predicted.class_name == label
        try:
            self.spool.append_feedback(request_id, label, correct)
        except SpoolWriteError as exc:
            raise SpoolUnavailable(f"feedback not stored: {exc}") from None
        self._count("feedback")
        return {"request_id": request_id, "true_label": label, "prediction": predicted.class_name,
                "model_version": predicted.model_version, "correct": correct}

    # -- shadow scoring, after the response --------------------------------------------------

    def submit_shadow(self, outcome: PredictionOutcome, features: IrisFeatures) -> bool:
        """Queue the candidate's scoring; never blocks. Returns False when the queue is full."""
        if outcome.shadow is None or outcome.replayed:
            return False
        if not self._shadow_slots.acquire(blocking=False):
            self._count("shadow_dropped")
            return False
        try:
            self._shadow_pool.submit(self._score_shadow, outcome, features, self._router)
        except RuntimeError:  # shutting down
            self._shadow_slots.release()
            return False
        return True

    def _score_shadow(self, outcome: PredictionOutcome, features: IrisFeatures, router: Router) -> None:
        try:
            candidate = self.variants[outcome.shadow]  # type: ignore[index]
            class_index, elapsed_ms = candidate.predict(features.as_row())
            record = PredictionRecord(
                request_id=outcome.request_id, role="shadow", model_version=candidate.name,
                sepal_length=features.sepal_length, sepal_width=features.sepal_width,
                petal_length=features.petal_length, petal_width=features.petal_width,
                class_index=class_index, class_name=CLASS_NAMES[class_index], inference_time_ms=elapsed_ms,
                ts_ms=int(time.time() * 1000), routing=str(RoutingReason.SHADOW),
                config_hash=router.config.config_hash, weights=router.weights_tag,
            )
            logged = False
            if self.logging_enabled and self.spool is not None:
                self.spool.append(record)
                logged = True
            self._count("shadow_scored")
            if class_index == outcome.class_index:
                self._count("shadow_agree")
            for listener in self.listeners:
                listener.on_prediction(record, logged, primary_class=outcome.class_index)
        except DuplicateRequest:
            self._count("shadow_scored")
        except Exception as exc:  # a failing candidate must never touch the primary
            self._count("shadow_failed")
            log.warning("shadow scoring of %s by %s failed: %s", outcome.request_id, outcome.shadow, exc)
        finally:
            self._shadow_slots.release()

    # -- state -------------------------------------------------------------------------------

    def _count(self, key: str, by: int = 1) -> None:
        with self._lock:
            self.counts[key] += by

    def shutdown(self) -> None:
        """Finish queued shadow scoring (it is fast) so its records reach the spool."""
        self._shadow_pool.shutdown(wait=True, cancel_futures=False)

    def describe(self) -> dict[str, Any]:
        cfg = self._router.config
        return {
            "mode": cfg.mode,
            "config_hash": cfg.config_hash,
            "ready": self.ready.is_set(),
            "weights": {name: round(w, 6) for name, w in self._router.weights.items()},
            "shadow": cfg.shadow.model_dump() if cfg.mode == "shadow" else None,
            "variants": [
                self.variants[v.name].describe() if v.name in self.variants
                else {"name": v.name, "model_uri": v.model_uri, "weight": v.weight, "loaded": False}
                for v in cfg.variants
            ],
        }


def _class_name(label: str | int) -> str:
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(CLASS_NAMES):
        return CLASS_NAMES[label]
    if isinstance(label, str):
        for name in CLASS_NAMES:
            if label.strip().lower() == name.lower():
                return name
    raise InvalidFeedback(f"true_label must be one of {list(CLASS_NAMES)} or 0-2, got {label!r}",
                          errors=[{"field": "true_label", "message": f"unknown label {label!r}"}])
