"""What every prediction protocol shares: headers in, route + score + record, headers out, shadow after.

A protocol module decodes its body into rows and encodes the outcome; this module does the rest,
so that /predict, /invocations and /v2/.../infer are routed, logged and counted the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from gateway.protocols.body import logged_values
from gateway.protocols.body import request_id as checked_request_id
from gateway.protocols.limits import LARGE_BODY_BYTES, RequestShape
from gateway.serving import answering
from gateway.serving.answering import Answered, Ask
from gateway.wiring.services import GatewayServices

T = TypeVar("T")
SAGEMAKER_VARIANT_HEADER = "x-amzn-sagemaker-target-variant"


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
    """The ``[routing] log_headers`` the request sent, as JSON text for its records ("" when none);
    bytes that are not UTF-8 are kept visible as \\xNN escapes, not read as Latin-1."""
    if not names:
        return ""
    wanted = {name.encode("latin-1"): name for name in names}
    found: dict[str, list[str]] = {}
    for key, value in request.scope["headers"]:
        name = wanted.get(key)
        if name is not None:
            found.setdefault(name, []).append(value.decode("utf-8", errors="backslashreplace"))
    return logged_values(found)


def request_id_of(request: Request, given: Any = None) -> str | None:
    """The protocol's own id (OIP ``id``) or the X-Request-ID header; None lets the gateway make one."""
    if given is not None:
        return checked_request_id(given, "the request's id")
    return checked_request_id(request.headers.get("x-request-id"), "X-Request-ID")


def request_shape(request: Request) -> RequestShape:
    """What a request to these models may hold; NotReady (503) while they load."""
    return services(request).request_shape()


async def decoded(body: bytes, decode: Callable[..., T], *args: Any) -> T:
    """``decode(body, *args)``: inline for a small body (a thread hop costs more than the parse), on
    a worker thread for a large one, so that the event loop keeps answering (/healthz) meanwhile."""
    if len(body) <= LARGE_BODY_BYTES:
        return decode(body, *args)
    return await run_in_threadpool(decode, body, *args)


async def answer(request: Request, rows: Sequence[Any], *, probabilities: bool = False,
                 forced: str | None = None, request_id: str | None = None,
                 params: dict[str, Any] | None = None) -> Answered:
    """The request through the pipeline (gateway/serving/answering.py): the forced version from the
    path or the routing header, the sticky key from its header, cancelled if the client disconnects."""
    svc = services(request)
    routing = svc.settings.routing
    forced = forced or request.headers.get(routing.variant_header) or request.headers.get(SAGEMAKER_VARIANT_HEADER)
    ask = Ask(forced=forced or None, user_key=header_utf8(request, routing.sticky_header) or None,
              request_id=request_id or request_id_of(request), probabilities=probabilities, params=params,
              headers=logged_headers(request, routing.log_headers))
    return await answering.answer(svc.scorer, rows, ask, timeout_ms=svc.settings.model.request_timeout_ms,
                                  gone=lambda: _disconnect(request), on_response=request.app.state.metrics.on_response)


async def _disconnect(request: Request) -> None:
    """Returns when the client has closed the connection (the body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def answer_headers(notes: answering.Notes) -> dict[str, str]:
    """The answer's notes as HTTP headers (X-Model-Version only when the version is shown)."""
    headers = {"X-Request-ID": notes.request_id,
               **notes.named("X-Routing-Reason", "X-Idempotent-Replay", "X-Prediction-Logged", "X-Feedback-Receipt")}
    if notes.version is not None:
        headers["X-Model-Version"] = notes.version
    return headers


def shadow_task(request: Request, answered: Answered) -> BackgroundTask | None:
    """The candidate's scoring, queued after the response has been sent."""
    if answered.outcome.shadow is None:
        return None
    scorer = services(request).scorer

    async def _shadow() -> None:
        scorer.submit_shadow(answered.outcome, answered.scored)

    return BackgroundTask(_shadow)
