"""The prediction record: what one answered (or shadow-scored) row leaves behind.

A domain type, free of storage: the spool persists it, the exporter turns it into MLflow runs, and
the report reads it back from them. A batch request leaves one record per row (``row_index``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

# What a request id may be (X-Request-ID, an OIP id, a feedback's reference): safe in tags and logs.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


def user_pseudonym(salt: str, key: str) -> str:
    """A stable stand-in for a user key in the prediction log: the same user, the same 16 hex digits on
    every replica, and no way back to the key without the salt and a guess."""
    return hashlib.sha256(f"{salt}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def randomisation_unit(routing: str, user: str | None, request_id: str) -> str:
    """What was randomised for a request: its sticky user (by pseudonym), else the request itself."""
    return f"user:{user}" if routing == "sticky" and user else f"request:{request_id}"


class Role(StrEnum):
    PRIMARY = "primary"
    SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    request_id: str
    role: str  # a Role value
    model_version: str
    features: dict[str, Any]  # the validated row, under the signature's own column names
    prediction: str | int | float  # the label (classifier) or the value (regressor) the client saw
    class_index: int | None  # a classifier's class position, when the model's classes are known
    inference_time_ms: float  # the model call's own time: the whole batch's call when requests were batched
    ts_ms: int
    routing: str
    config_hash: str
    weights: str = ""  # the normalised weights in force, "v1.0=0.7,v2.0=0.3", for the SRM check
    row_index: int = 0
    kind: str = "classifier"  # a ModelKind value
    batch_rows: int = 1  # rows in the model call that scored this row (this request's and any batched with it)
    request_time_ms: float | None = None  # the request in the gateway: queueing, validation and the model call
    # The sticky user key's pseudonym (``user_pseudonym``), when the request had one: the report's unit of
    # analysis under sticky routing. Never the key itself.
    user: str | None = None
    # The values of [routing] log_headers, as JSON text ({"x-country": "de"}), or "" when none were sent.
    headers: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A shallow dict (the features object is shared, not copied): ``dataclasses.asdict`` deep-copies
        every value, which made it most of a window export's time."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


# The record's fields in order: the spool's columns and the window tables' columns, written once.
RECORD_FIELDS = tuple(f.name for f in fields(PredictionRecord))
