"""What the wire formats share: JSON bodies and plain values."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from gateway.domain.errors import MalformedBody
from gateway.domain.messages import first_line
from gateway.domain.records import REQUEST_ID_PATTERN

_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
LOGGED_VALUE_CHARS = 256  # a logged header's (or gRPC metadata's) value is cut here


def plain(value: Any) -> Any:
    """A JSON-like Python value: numpy scalars unwrapped, pandas' missing values (NaN) as None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def loads_body(body: bytes | str) -> Any:
    """A JSON body, or MalformedBody saying why not (including nesting past Python's recursion limit).
    orjson parses it (several times faster on large bodies); what orjson refuses and the standard
    parser takes (NaN and Infinity literals, lone surrogates, integers past 64 bits) is parsed again by
    the standard parser, so that the validator, not the parser, names such a value."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedBody("malformed JSON body: it is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"malformed JSON body: {first_line(exc)}") from None


def json_object(value: Any, where: str) -> dict[str, Any]:
    """An optional JSON object (``params``, ``parameters``): absent is empty, anything else is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedBody(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def request_id(value: Any, source: str) -> str | None:
    """A client's request id (``source`` names where it came from), or None when it sent none."""
    if value is None:
        return None
    if not isinstance(value, str) or not _REQUEST_ID.match(value):
        raise MalformedBody(f"{source} must be 1-128 characters from A-Z a-z 0-9 . _ : -")
    return value


def logged_values(found: dict[str, list[str]]) -> str:
    """Headers (or gRPC metadata) to log with the records, as JSON text ("" when none): a name sent more
    than once is one value, its lines joined with ", " (RFC 9110, 5.3), cut at LOGGED_VALUE_CHARS."""
    if not found:
        return ""
    return orjson.dumps({name: ", ".join(values)[:LOGGED_VALUE_CHARS] for name, values in found.items()}).decode()
