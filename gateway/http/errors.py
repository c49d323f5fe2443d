"""The one place where domain errors become HTTP statuses, with the body shaped per protocol:
MLflow's ``{"error_code", "message"}`` on /invocations, ``{"error": ...}`` on the Open Inference
Protocol's /v2, and ``{"error", "message", ...details}`` everywhere else."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.errors import (
    ConflictingRequest,
    GatewayError,
    InvalidFeatures,
    InvalidFeedback,
    InvalidRoutingChange,
    MalformedBody,
    ModelFailure,
    NotReady,
    SpoolUnavailable,
    TooManyRows,
    UnknownModel,
    UnknownRequest,
    UnknownVariant,
)
from gateway.exceptions import error_location

log = logging.getLogger("gateway.http")

STATUS_BY_ERROR: dict[type[Exception], int] = {
    InvalidFeatures: 422,
    InvalidFeedback: 422,
    UnknownRequest: 404,
    UnknownModel: 404,
    MalformedBody: 400,
    UnknownVariant: 400,
    ConflictingRequest: 409,
    TooManyRows: 413,
    InvalidRoutingChange: 422,
    ModelFailure: 500,
    NotReady: 503,
    SpoolUnavailable: 503,
}

_PREDICTION_PATHS = ("/predict", "/invocations")


def _status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _is_prediction(request: Request) -> bool:
    path = request.url.path
    return path in _PREDICTION_PATHS or (path.startswith("/v2/models/") and path.endswith("/infer"))


def error_response(request: Request, status: int, name: str, message: str,
                   detail: dict[str, object] | None = None) -> JSONResponse:
    detail = detail or {}
    path = request.url.path
    headers = {"Retry-After": "1"} if status == 503 else None
    if path == "/invocations":
        from gateway.http.mlflow_scoring import error_body

        response = error_body(status, message, detail)
    elif path.startswith("/v2"):
        response = JSONResponse({"error": message, **detail}, status_code=status)
    else:
        response = JSONResponse({"error": name, "message": message, **detail}, status_code=status)
    if headers:
        response.headers.update(headers)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and _is_prediction(request):
        metrics.on_response(None, None, status)
    return response


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    detail = dict(exc.detail) if isinstance(exc, GatewayError) else {}
    return error_response(request, _status_for(exc), type(exc).__name__, str(exc), detail)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": error_location(e["loc"], skip=("body",)), "message": e["msg"]} for e in exc.errors()]
    return error_response(request, 422, "InvalidRequest", "invalid request", {"errors": errors})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "InternalError", "internal error; see the gateway log")


def install_error_handlers(app: FastAPI) -> None:
    for cls in STATUS_BY_ERROR:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
