"""Every status a domain error carries has its gRPC code: bad input is INVALID_ARGUMENT (or
RESOURCE_EXHAUSTED for size), never UNKNOWN, and only the gateway's own faults are INTERNAL."""

from __future__ import annotations

import inspect

import grpc

from gateway.domain import errors
from gateway.grpc.errors import CODES, code_for


def test_every_domain_error_has_a_code_and_client_errors_are_never_internal_or_unknown() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.GatewayError)]
    assert len(classes) > 15
    for cls in classes:
        assert cls.status in CODES, cls
        if cls.status < 500:
            assert CODES[cls.status] not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), cls


def test_the_codes_follow_the_statuses() -> None:
    assert code_for(errors.MalformedBody("x")) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert code_for(errors.UnknownModel("x", model="m")) == (grpc.StatusCode.NOT_FOUND, 404)
    assert code_for(RecursionError()) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert code_for(ValueError("a bug")) == (grpc.StatusCode.INTERNAL, 500)
    assert CODES[503] is grpc.StatusCode.UNAVAILABLE and CODES[504] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert CODES[413] is grpc.StatusCode.RESOURCE_EXHAUSTED
