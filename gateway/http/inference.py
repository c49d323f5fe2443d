"""What every prediction protocol shares: headers in, route + score + record, headers out, shadow after.

A protocol module decodes its body into rows and encodes the outcome; this module does the rest,
so that /predict, /invocations and /v2/.../infer are routed, logged and counted the same way.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from gateway.domain.errors import MalformedBody, NotReady
from gateway.domain.records import REQUEST_ID_PATTERN
from gateway.protocols.limits import LARGE_BODY_BYTES, RequestShape
from gateway.serving.outcome import PredictionOutcome, ScoredRequest
from gateway.serving.services import GatewayServices

T = TypeVar("T")
SAGEMAKER_VARIANT_HEADER = "x-amzn-sagemaker-target-variant"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)


def services(request: Request) -> GatewayServices:
    return request.app.state.services  # type: ignore[no-any-return]


def header_utf8(request: Request, name: str) -> str | None:
    """A header's value decoded as UTF-8 (ASGI servers hand over raw bytes; Starlette reads them as
    Latin-1), so that a non-ASCII user id hashes to the bucket GrowthBook's SDKs give that string."""
    key = name.lower().encode("latin-1")
    for k, v in request.scope["headers"]:
        if k == key:
            try:
                return v.decode("utf-8")  # type: ignore[no-any-return]
            except UnicodeDecodeError:
                return v.decode("latin-1")  # type: ignore[no-any-return]
    return None


def request_id_of(request: Request, given: Any = None) -> str | None:
    """The protocol's own id (OIP ``id``) or the X-Request-ID header; None lets the gateway make one."""
    source = "the request's id" if given is not None else "X-Request-ID"
    value = given if given is not None else request.headers.get("x-request-id")
    if value is None:
        return None
    if not isinstance(value, str) or not _REQUEST_ID.match(value):
        raise MalformedBody(f"{source} must be 1-128 characters from A-Z a-z 0-9 . _ : -")
    return value


def request_shape(request: Request) -> RequestShape:
    """What a request to these models may hold; NotReady (503) while they load."""
    svc = services(request)
    schema = svc.variants.schema
    if schema is None or not svc.variants.ready.is_set():
        raise NotReady(svc.variants.load_error or "models are still loading")
    return RequestShape(tuple(schema.names), svc.settings.model.max_rows)


async def decoded(body: bytes, decode: Callable[..., T], *args: Any) -> T:
    """``decode(body, *args)``: inline for a small body (a thread hop costs more than the parse), on
    a worker thread for a large one, so that the event loop keeps answering (/healthz) meanwhile."""
    if len(body) <= LARGE_BODY_BYTES:
        return decode(body, *args)
    return await run_in_threadpool(decode, body, *args)


@dataclass(frozen=True, slots=True)
class Answered:
    scored: ScoredRequest
    outcome: PredictionOutcome

    @property
    def labels(self) -> list[Any]:
        return [p.label for p in self.outcome.predictions]

    @property
    def probabilities(self) -> list[dict[str, float]] | None:
        probs = [p.probabilities for p in self.outcome.predictions]
        return None if any(p is None for p in probs) else probs  # type: ignore[return-value]


async def answer(request: Request, rows: Sequence[Any], *, probabilities: bool = False,
                 forced: str | None = None, request_id: str | None = None,
                 params: dict[str, Any] | None = None) -> Answered:
    """Route, then wait: the variant's batcher thread validates and predicts, and the spool's writer
    thread commits the records, before this answers. The event loop does none of that work."""
    svc = services(request)
    routing = svc.settings.routing
    forced = forced or request.headers.get(routing.variant_header) or request.headers.get(SAGEMAKER_VARIANT_HEADER)
    user_key = header_utf8(request, routing.sticky_header) or None
    scorer = svc.scorer
    scored, write_error = await asyncio.wrap_future(scorer.submit(
        rows, forced=forced or None, user_key=user_key, request_id=request_id or request_id_of(request),
        probabilities=probabilities, params=params or None))
    outcome = scorer.finish(scored, write_error)
    request.app.state.metrics.on_response(outcome.model_version, outcome.reason, 200)
    return Answered(scored, outcome)


def answer_headers(request: Request, answered: Answered) -> dict[str, str]:
    outcome = answered.outcome
    headers = {"X-Model-Version": outcome.model_version, "X-Request-ID": outcome.request_id,
               "X-Routing-Reason": outcome.reason}
    if outcome.replayed:
        headers["X-Idempotent-Replay"] = "true"
    if not outcome.logged and services(request).scorer.logging_enabled:
        headers["X-Prediction-Logged"] = "false"
    return headers


def shadow_task(request: Request, answered: Answered) -> BackgroundTask | None:
    """The candidate's scoring, queued after the response has been sent."""
    if answered.outcome.shadow is None:
        return None
    scorer = services(request).scorer

    async def _shadow() -> None:
        scorer.submit_shadow(answered.outcome, answered.scored)

    return BackgroundTask(_shadow)
