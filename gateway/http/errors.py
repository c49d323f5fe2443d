"""The one place where domain errors become HTTP statuses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.errors import (
    GatewayError,
    InvalidFeatures,
    InvalidFeedback,
    MalformedBody,
    NotReady,
    SpoolUnavailable,
    UnknownRequest,
    UnknownVariant,
)
from gateway.service import ConflictingRequest, InvalidRoutingChange

log = logging.getLogger("gateway.http")

STATUS_BY_ERROR: dict[type[Exception], int] = {
    InvalidFeatures: 422,
    InvalidFeedback: 422,
    UnknownRequest: 404,
    MalformedBody: 400,
    UnknownVariant: 400,
    ConflictingRequest: 409,
    InvalidRoutingChange: 422,
    NotReady: 503,
    SpoolUnavailable: 503,
}


def _status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = _status_for(exc)
    body: dict[str, object] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, GatewayError):
        body.update(exc.detail)
    headers = {"Retry-After": "1"} if status == 503 else None
    _count_failed_predict(request, status)
    return JSONResponse(body, status_code=status, headers=headers)


def _count_failed_predict(request: Request, status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and request.url.path == "/predict":
        metrics.on_response(None, None, status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
              for e in exc.errors()]
    return JSONResponse({"error": "InvalidRequest", "message": "invalid request", "errors": errors},
                        status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    _count_failed_predict(request, 500)
    return JSONResponse({"error": "InternalError", "message": "internal error; see the gateway log"},
                        status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    for cls in STATUS_BY_ERROR:
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
