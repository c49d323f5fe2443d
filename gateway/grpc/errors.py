"""The gRPC status code of each HTTP status the domain's errors carry (gateway/domain/errors.py):
one table of errors, two transports. Bad input is never UNKNOWN."""

from __future__ import annotations

import grpc

from gateway.domain.errors import status_for

CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,  # a request id reused for other rows
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_for(exc: BaseException) -> tuple[grpc.StatusCode, int]:
    """The gRPC code and the HTTP status (for the metrics) an exception answers with."""
    status = status_for(exc)
    return CODES.get(status, grpc.StatusCode.INTERNAL), status
