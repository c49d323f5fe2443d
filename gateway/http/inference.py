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

import orjson
from fastapi import Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from gateway.domain.errors import ClientGone, MalformedBody, NotReady, RequestTimeout
from gateway.domain.records import REQUEST_ID_PATTERN
from gateway.protocols.limits import LARGE_BODY_BYTES, RequestShape
from gateway.serving.outcome import Committed, PredictionOutcome, ScoredRequest
from gateway.serving.pipeline import Pending
from gateway.wiring.services import GatewayServices

T = TypeVar("T")
SAGEMAKER_VARIANT_HEADER = "x-amzn-sagemaker-target-variant"
# A request still waiting after this long starts watching its connection and its deadline (one task);
# the many that are answered sooner cost one timer.
WATCH_AFTER_S = 0.2
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


def logged_headers(request: Request, names: list[str]) -> str:
    """The ``[routing] log_headers`` the request sent, as JSON text for its records ("" when none). A
    header sent more than once is one value, its lines joined with ", " (RFC 9110, 5.3); bytes that are
    not UTF-8 are kept visible as \\xNN escapes, not read as Latin-1."""
    if not names:
        return ""
    wanted = {name.encode("latin-1"): name for name in names}
    found: dict[str, list[str]] = {}
    for key, value in request.scope["headers"]:
        name = wanted.get(key)
        if name is not None:
            found.setdefault(name, []).append(value.decode("utf-8", errors="backslashreplace"))
    return orjson.dumps({name: ", ".join(values)[:256] for name, values in found.items()}).decode() if found else ""


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
        return self.outcome.predictions.labels

    @property
    def probabilities(self) -> list[dict[str, float]] | None:
        return self.outcome.predictions.probabilities


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
    pending = scorer.submit(rows, forced=forced or None, user_key=user_key,
                            request_id=request_id or request_id_of(request), probabilities=probabilities,
                            params=params or None, headers=logged_headers(request, routing.log_headers))
    scored, write_error = await _committed(request, pending, svc.settings.model.request_timeout_ms)
    outcome = scorer.finish(scored, write_error)
    request.app.state.metrics.on_response(outcome.model_version, outcome.reason, 200)
    return Answered(scored, outcome)


class _Watch:
    """Cancels a pending request when its client disconnects or its deadline passes."""

    def __init__(self, request: Request, future: asyncio.Future[Committed], deadline: float | None) -> None:
        self.request, self.future, self.deadline = request, future, deadline
        self.verdict: str | None = None  # "gone" or "timeout", once it cancelled the request
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        gone = asyncio.ensure_future(_disconnect(self.request))
        timeout = None if self.deadline is None else max(0.0, self.deadline - asyncio.get_running_loop().time())
        try:
            done, _ = await asyncio.wait((gone, self.future), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not self.future.done():
            self.verdict = "gone" if gone in done else "timeout"
            self.future.cancel()


async def _disconnect(request: Request) -> None:
    """Returns when the client has closed the connection (the body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _committed(request: Request, pending: Pending, timeout_ms: float) -> Committed:
    """The scored request once its records are committed; RequestTimeout past ``timeout_ms`` (0: none),
    ClientGone when the client disconnects first. Either cancels it: queued work is dropped, unlogged."""
    loop = asyncio.get_running_loop()
    future = asyncio.wrap_future(pending)
    watch = _Watch(request, future, loop.time() + timeout_ms / 1000.0 if timeout_ms else None)
    handle = loop.call_later(min(WATCH_AFTER_S, timeout_ms / 1000.0) if timeout_ms else WATCH_AFTER_S, watch.start)
    try:
        return await future
    except asyncio.CancelledError:
        if watch.verdict is None:
            raise  # the task itself was cancelled (shutdown)
        if watch.verdict == "gone":
            raise ClientGone(f"the client closed the connection before request {pending.request_id} was "
                             "answered; it was cancelled and not logged") from None
        raise RequestTimeout(pending.variant, pending.request_id, timeout_ms) from None
    finally:
        handle.cancel()
        if watch.task is not None:
            watch.task.cancel()


def shown_version(request: Request, answered: Answered) -> str | None:
    """The version that answered, as the answer may show it: None under ``[routing] reveal_version =
    false`` (a blind test: a client cannot tell the versions apart, nor sort user ids by version)."""
    return answered.outcome.model_version if services(request).settings.routing.reveal_version else None


def answer_headers(request: Request, answered: Answered) -> dict[str, str]:
    outcome = answered.outcome
    svc = services(request)
    headers = {"X-Request-ID": outcome.request_id, "X-Routing-Reason": outcome.reason}
    version = shown_version(request, answered)
    if version is not None:
        headers["X-Model-Version"] = version
    if outcome.replayed:
        headers["X-Idempotent-Replay"] = "true"
    if not outcome.logged and svc.scorer.logging_enabled:
        headers["X-Prediction-Logged"] = "false"
    if outcome.logged and svc.receipts is not None:  # lets this client label its own rows (POST /feedback)
        headers["X-Feedback-Receipt"] = svc.receipts.issue(outcome.request_id, len(outcome.predictions))
    return headers


def shadow_task(request: Request, answered: Answered) -> BackgroundTask | None:
    """The candidate's scoring, queued after the response has been sent."""
    if answered.outcome.shadow is None:
        return None
    scorer = services(request).scorer

    async def _shadow() -> None:
        scorer.submit_shadow(answered.outcome, answered.scored)

    return BackgroundTask(_shadow)
