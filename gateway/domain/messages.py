"""Two small helpers for turning exceptions into one-line messages, used wherever errors are shown."""

from __future__ import annotations

from collections.abc import Sequence


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def error_location(loc: Sequence[object], skip: Sequence[str] = ()) -> str:
    """A pydantic error location as a dotted key, e.g. ``variants.0.weight``."""
    return ".".join(str(p) for p in loc if p not in skip)
