"""Messages as shown to people: an exception's first line, an error's location, and URLs without
their credentials (in answers and in every log line)."""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Sequence
from typing import Any


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def shown(value: Any, limit: int = 80) -> str:
    """A client's value as an error message echoes it: its repr, cut at ``limit`` characters (a 2 MB
    label is not sent back)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def error_location(loc: Sequence[object], skip: Sequence[str] = ()) -> str:
    """A pydantic error location as a dotted key, e.g. ``variants.0.weight``."""
    return ".".join(str(p) for p in loc if p not in skip)


# user:password@ (or token@) after a URL's scheme: what a tracking URI may carry, and no answer or
# log line may show.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@'\"<>]+@")


def without_credentials(text: str) -> str:
    """``text`` with the userinfo of every URL in it removed (``http://alice:pw@host`` -> ``http://host``)."""
    return _USERINFO.sub(r"\1", text) if "@" in text else text


def redacted(value: Any) -> Any:
    """A JSON-like value with ``without_credentials`` applied to every string in it."""
    if isinstance(value, str):
        return without_credentials(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


# What only the admin side sees on the operations endpoints: files on the gateway's disk (the spool, the
# shared state) and process ids. A key here is dropped when its value is a plain value, not an object.
PRIVATE_KEYS = frozenset({"location", "shared_state", "worker_pid", "pid"})


def without_private(value: Any) -> Any:
    """A JSON-like value without PRIVATE_KEYS' plain values, at any depth (for anonymous callers)."""
    if isinstance(value, dict):
        return {k: without_private(v) for k, v in value.items()
                if not (k in PRIVATE_KEYS and not isinstance(v, dict | list))}
    if isinstance(value, list | tuple):
        return [without_private(v) for v in value]
    return value


def install_log_redaction() -> None:
    """Every log record of this process, from any logger (the gateway's, httpx's request lines,
    MLflow's, uvicorn's), loses the credentials of the URLs in its message and traceback. Idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        message = record.getMessage()
        if "@" in message:
            record.msg, record.args = without_credentials(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = without_credentials("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return record

    make.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)
    # MLflow's client prints run URLs (the tracking URI included) to stdout, outside logging.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
