"""Operations endpoints and ground-truth feedback. Prediction protocols live in their own modules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, BeforeValidator, Field
from starlette.concurrency import run_in_threadpool

from gateway.config.settings import StateBackend
from gateway.domain.errors import NoBandit
from gateway.domain.messages import redacted, without_credentials, without_private
from gateway.domain.records import REQUEST_ID_PATTERN
from gateway.domain.validation import reject_bool
from gateway.http.admin import is_admin
from gateway.http.errors import ErrorBody, responses
from gateway.http.inference import services

router = APIRouter()



class FeedbackBody(BaseModel):
    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="the prediction's request id")
    true_label: Annotated[str | int | float, BeforeValidator(reject_bool)]
    row_index: int = Field(0, ge=0, le=1_000_000, description="the row of a batch request (0 for a single row)")
    reward: Annotated[float | None, BeforeValidator(reject_bool)] = Field(
        None, allow_inf_nan=False, description="a numeric reward, for a bandit with reward = \"feedback\"; "
                                               "within [bandit] reward_range")
    receipt: str | None = Field(None, max_length=256, description="the answer's X-Feedback-Receipt: lets the "
                                "client that got the answer label its rows (else Authorization: Bearer <token>)")


@router.post("/feedback", status_code=202, summary="Ground truth for an answered prediction",
             responses=responses(ErrorBody, 400, 401, 403, 404, 409, 413, 422, 429, 503))
async def feedback(request: Request, body: FeedbackBody) -> dict[str, Any]:
    """Stored durably in the spool, then taken to MLflow (metric ``correct`` and tag ``true_label`` on
    the prediction's run; ``abs_error`` for regressors). A label needs a credential: the label
    pipelines' bearer token (GATEWAY_FEEDBACK_TOKEN), or the answer's own receipt (401 without either,
    403 for a wrong one, 429 past the credential's rate; docs/feedback.md). 404 for an unknown request
    id or row, 422 for a label that is not one of the model's classes."""
    svc = services(request)  # its rate was checked before the body was read (http/limits.py: FeedbackRate)
    trust = svc.gate.admit(request.headers.get("authorization"), body.receipt, body.request_id, body.row_index)
    client = request.client.host if request.client is not None else ""
    return await run_in_threadpool(svc.feedback.record, body.request_id, body.true_label, body.row_index,
                                   body.reward, trust, client)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: 503 until every variant is loaded, and while a variant's queue is "
                               "saturated or the spool cannot be written")
async def readyz(request: Request) -> JSONResponse:
    svc = services(request)
    variants = svc.variants
    details = {"export": await run_in_threadpool(_export_details, request),
               "shared_state": svc.routing.state_status()}
    gateway = request.app.state.gateway
    spool, writer = gateway.spool, gateway.writer
    problem = spool.check_file() if spool is not None else None
    if problem is not None:
        return JSONResponse(_shown(request, {"ready": False, "reason": "the prediction spool's file was deleted or "
                                      "replaced; restart the gateway", **details}), status_code=503)
    unwritable = None
    if svc.settings.spool.enabled and writer is None:
        unwritable = "the prediction spool could not be opened at start-up (see the gateway's log)"
    elif writer is not None and writer.failing_since is not None:
        unwritable = await run_in_threadpool(writer.unwritable)  # a probe write: off the event loop
    if unwritable is not None:
        details["spool_writable"] = False
        if svc.settings.spool.on_log_failure == "reject":  # every prediction would get 503: send them elsewhere
            return JSONResponse(_shown(request, {"ready": False, "reason": f"{unwritable}; predictions are refused "
                                          "until it takes records (on_log_failure = reject)", **details}),
                                status_code=503)
    shared = details["shared_state"]
    if (svc.settings.state.backend == StateBackend.MLFLOW and svc.settings.state.start_without_mlflow == "unready"
            and not shared.get("read_since_start")):
        reason = "the shared routing state has not been read from MLflow since start-up ([state] " \
                 "start_without_mlflow = unready)"
        return JSONResponse(_shown(request, {"ready": False, "reason": reason, **details}), status_code=503)
    saturated = {name: {"queued_rows": b.queued_rows, "max_queue_rows": b.max_queue_rows}
                 for name, b in svc.scorer.batchers.items() if b.saturated()}
    if saturated:
        reason = f"variant(s) {', '.join(sorted(saturated))} saturated: requests are refused until their queue " \
                 "drains ([batching] max_queue_rows)"
        return JSONResponse(_shown(request, {"ready": False, "reason": reason, "saturated": saturated, **details}),
                            status_code=503)
    if variants.ready.is_set():
        return JSONResponse(_shown(request, {"ready": True, "variants": sorted(variants), **details}))
    return JSONResponse(_shown(request, {"ready": False, "reason": variants.load_error or "loading models", **details}),
                        status_code=503)


def _export_details(request: Request) -> dict[str, Any] | None:
    """The prediction log's health, for humans and probes: readiness itself is about serving."""
    try:
        stats = request.app.state.stats()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: cannot read the spool's state"}
    exporter, spool = stats.get("exporter") or {}, stats.get("spool") or {}
    return {"alive": exporter.get("alive"), "workers": exporter.get("workers"),
            "stalled": bool(exporter.get("stalled")), "falling_behind": bool(exporter.get("falling_behind")),
            "in_rows_per_s": exporter.get("in_rows_per_s"), "out_rows_per_s": exporter.get("out_rows_per_s"),
            "backlog": spool.get("backlog"),
            "lag_seconds": spool.get("export_lag_seconds"), "last_error": exporter.get("last_error"),
            "last_error_at": exporter.get("last_error_at")}


@router.get("/variants", summary="Routing mode, weights, the model's schema, model URIs and registry versions")
async def variants(request: Request) -> dict[str, Any]:
    return _shown(request, services(request).describe())  # type: ignore[no-any-return]


@router.get("/bandit", summary="Bandit mode: the weights in force, each arm's posterior and labels counted",
            responses=responses(ErrorBody, 404))
async def bandit(request: Request) -> dict[str, Any]:
    runner = services(request).bandit
    if runner is None:
        raise NoBandit(f"routing.mode is {services(request).routing.config.mode!r}, not \"bandit\"")
    return await run_in_threadpool(runner.describe)  # type: ignore[no-any-return]


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(without_credentials(body.decode()), media_type=CONTENT_TYPE_LATEST)


@router.get("/stats", summary="Prediction log state: backlog, export lag, exported/failed counts")
async def stats(request: Request) -> dict[str, Any]:
    return _shown(request, await run_in_threadpool(request.app.state.stats))  # type: ignore[no-any-return]


def _shown(request: Request, body: Any) -> Any:
    """An operations body as this caller may see it: never a URL's credentials; file paths and process
    ids only with the admin token (Authorization: Bearer <GATEWAY_ADMIN_TOKEN>)."""
    body = redacted(body)
    return body if is_admin(request) else without_private(body)
