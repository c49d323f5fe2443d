"""The prediction record: what one answered (or shadow-scored) row leaves behind.

A domain type, free of storage: the spool persists it, the exporter turns it into MLflow runs, and
the report reads it back from them. A batch request leaves one record per row (``row_index``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from gateway.domain.batch import Rows
from gateway.domain.sequences import OnDemand

# What a request id may be (X-Request-ID, an OIP id, a feedback's reference): safe in tags and logs.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


RANDOMISED = ("weighted", "sticky")  # the routing reasons under which the variant was drawn at random


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
    # The sticky user key's pseudonym (security/pseudonyms.py), when the request had one: the report's unit of
    # analysis under sticky routing. Never the key itself.
    user: str | None = None
    # The values of [routing] log_headers, as JSON text ({"x-country": "de"}), or "" when none were sent.
    headers: str = ""
    # Which model the label stood for: its models:/ URI as configured, and what that resolved to (registry
    # name/version and the run that logged it: LoadedVariant.model_identity). "" in records of older releases.
    model_uri: str = ""
    model: str = ""
    # The probability with which this request was assigned to its variant under the weights that routed it
    # (Router.assignment_probability: the weight when drawn, 1 when forced or shadowed), and those weights'
    # routing version: what makes inverse-propensity estimates possible when a bandit moves the weights.
    # None / 0 in records of older releases.
    assignment_probability: float | None = None
    weights_version: int = 0
    # The MLflow 3 LoggedModel the answering registry version was registered from ("" when it has none, or
    # in records of older releases): the window runs' metrics are linked to it.
    model_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A shallow dict (the features object is shared, not copied): ``dataclasses.asdict`` deep-copies
        every value, which made it most of a window export's time."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


# The record's fields in order: the spool's columns and the window tables' columns, written once.
RECORD_FIELDS = tuple(f.name for f in fields(PredictionRecord))
ROW_FIELDS = ("features", "prediction", "class_index", "row_index")  # what differs from row to row of a request
SHARED_FIELDS = tuple(name for name in RECORD_FIELDS if name not in ROW_FIELDS)


@dataclass(frozen=True, slots=True)
class SharedFields:
    """What every row of one request's records shares (``SHARED_FIELDS``, in that order; a test keeps
    the two in step): the request and its role, the version and model that answered, the times, the
    routing that chose it. Built once per request on the request path, packed once per spool entry."""

    request_id: str
    role: str
    model_version: str
    inference_time_ms: float
    ts_ms: int
    routing: str
    config_hash: str
    weights: str = ""
    kind: str = "classifier"
    batch_rows: int = 1
    request_time_ms: float | None = None
    user: str | None = None
    headers: str = ""
    model_uri: str = ""
    model: str = ""
    assignment_probability: float | None = None
    weights_version: int = 0
    model_id: str = ""

    @classmethod
    def of(cls, fields: SharedFields | Mapping[str, Any]) -> SharedFields:
        """From a mapping (a spooled entry's JSON): fields it lacks (an earlier release's entry) take
        their defaults; keys it has that are not fields (a later release's) are left out."""
        if isinstance(fields, SharedFields):
            return fields
        return cls(**{name: fields[name] for name in SHARED_FIELDS if name in fields})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SHARED_FIELDS}


class RecordBatch(OnDemand[PredictionRecord]):
    """One request's records in columns: the fields its rows share once (``shared``), the rows' own
    fields as lists. As a sequence it is its records, each built
    when asked for: the request path builds none per row (the spool packs the columns as they are).
    ``features`` is the validated rows as one batch (gateway/domain/batch.py): a float64 matrix in
    column order when they came through the columnar path, else row dicts."""

    __slots__ = ("class_indexes", "features", "first_row", "predictions", "shared")

    def __init__(self, shared: SharedFields | Mapping[str, Any], features: Rows | Sequence[dict[str, Any]],
                 predictions: list[Any], class_indexes: list[int | None], first_row: int = 0) -> None:
        self.shared, self.features, self.first_row = SharedFields.of(shared), Rows.of_dicts(features), first_row
        self.predictions, self.class_indexes = predictions, class_indexes

    def __len__(self) -> int:
        return len(self.predictions)

    def item(self, i: int) -> PredictionRecord:
        return PredictionRecord(**self.shared.as_dict(), features=dict(self.features[i]),
                                prediction=self.predictions[i], class_index=self.class_indexes[i],
                                row_index=self.first_row + i)


def predictions_of(records: Sequence[PredictionRecord]) -> list[Any]:
    """The records' predictions in order, without building a record per row for a RecordBatch."""
    return records.predictions if isinstance(records, RecordBatch) else [r.prediction for r in records]
