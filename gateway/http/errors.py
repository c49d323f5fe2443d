"""The one place where domain errors become HTTP statuses, with the body shaped per protocol:
MLflow's ``{"error_code", "message"}`` on /invocations, ``{"error": ...}`` on the Open Inference
Protocol's /v2, and ``{"error", "message", ...details}`` everywhere else."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.domain.errors import FOREIGN_STATUS, AdminDenied, GatewayError, status_for
from gateway.domain.messages import error_location, redacted, without_credentials
from gateway.http.limits import BodyTimeout, BodyTooLarge
from gateway.protocols import mlflow_scoring, oip

log = logging.getLogger("gateway.http")

# Each domain error carries its status (gateway/domain/errors.py), and so do the foreign errors a
# client can cause (FOREIGN_STATUS there).
_MESSAGES: dict[type[Exception], str] = {
    RecursionError: "the body is nested too deeply",
    UnicodeEncodeError: "the body holds text that is not valid Unicode (a lone surrogate)",
}


class ErrorBody(BaseModel):
    """The gateway's error body (``/predict`` and the operations endpoints)."""

    error: str = Field(description="the error's name, e.g. InvalidFeatures")
    message: str
    errors: list[dict[str, Any]] | None = Field(None, description="per row and column: row, field, message")


class MlflowErrorBody(BaseModel):
    """MLflow's scoring-protocol error body (``/invocations``)."""

    error_code: str = Field(description="e.g. INVALID_PARAMETER_VALUE, BAD_REQUEST")
    message: str


class OipErrorBody(BaseModel):
    """The Open Inference Protocol's error body (``/v2``)."""

    error: str


_DESCRIPTIONS = {400: "malformed body, unsupported content type, unknown forced version",
                 401: "no credential (bearer token, or a feedback receipt)",
                 403: "wrong bearer token, or a receipt that does not cover this row",
                 404: "unknown model (OIP) or request id (feedback)", 408: "the body stalled",
                 409: "request id reused for other rows, or a second, different label",
                 413: "too many rows or too large a body", 422: "a row does not fit the model's signature",
                 429: "past the credential's rate ([feedback]); Retry-After says when",
                 431: "headers too large", 500: "the model raised on valid rows",
                 503: "models loading, the variant's queue full, or the prediction could not be logged",
                 504: "the variant did not answer within [model] request_timeout_ms"}


def responses(body: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: each status it can answer, with its error body."""
    return {status: {"model": body, "description": _DESCRIPTIONS[status]} for status in statuses}


PREDICTION_STATUSES = (400, 408, 409, 413, 422, 431, 500, 503, 504)


class ErrorResponse(JSONResponse):
    """Error bodies are ASCII JSON: whatever a client sent (lone surrogates included) can be echoed."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"),
                          default=str).encode("ascii")

_PREDICTION_PATHS = ("/predict", "/invocations")


def _is_prediction(request: Request) -> bool:
    path = request.url.path
    return path in _PREDICTION_PATHS or (path.startswith("/v2/models/") and path.endswith("/infer"))


def error_response(request: Request, status: int, name: str, message: str,
                   detail: dict[str, object] | None = None, retry_after_s: int | None = None) -> JSONResponse:
    message, detail = without_credentials(message), redacted(detail or {})
    path = request.url.path
    headers = {"Retry-After": str(retry_after_s or 1)} if status == 503 else None
    if path == "/invocations":
        response = ErrorResponse(mlflow_scoring.error_body(status, message, **detail), status_code=status)
    elif path.startswith("/v2"):
        response = ErrorResponse(oip.error_body(message, **detail), status_code=status)
    else:
        response = ErrorResponse({"error": name, "message": message, **detail}, status_code=status)
    if headers:
        response.headers.update(headers)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and _is_prediction(request):
        metrics.on_response(None, None, status)
    return response


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    detail = dict(exc.detail) if isinstance(exc, GatewayError) else {}
    message = _MESSAGES.get(type(exc), str(exc))
    name = type(exc).__name__ if isinstance(exc, GatewayError) else "MalformedBody"
    if isinstance(exc, AdminDenied):
        name = {401: "Unauthorized", 403: "Forbidden"}.get(exc.status, "NotFound")
    response = error_response(request, status_for(exc), name, message, detail,
                              exc.retry_after_s if isinstance(exc, GatewayError) else None)
    if isinstance(exc, BodyTimeout | BodyTooLarge):
        # The rest of the body was never read: the connection cannot carry another request.
        response.headers["connection"] = "close"
    return response


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (404 no such path, 405 wrong method, ...) in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    name = HTTPStatus(exc.status_code).phrase.replace(" ", "") if exc.status_code in HTTPStatus._value2member_map_ \
        else "HTTPError"
    response = error_response(request, exc.status_code, name, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": error_location(e["loc"], skip=("body",)) or "body", "message": e["msg"]}
              for e in exc.errors()]
    return error_response(request, 422, "InvalidRequest", "invalid request", {"errors": errors})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "InternalError", "internal error; see the gateway log")


def install_error_handlers(app: FastAPI) -> None:
    for cls in (GatewayError, *FOREIGN_STATUS):
        app.add_exception_handler(cls, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
