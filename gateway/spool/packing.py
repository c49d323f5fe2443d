"""A request's records as one spool entry: the fields its rows share stored once, the rows' own fields
packed column by column.

One request (or shadow scoring) leaves one entry however many rows it has: one SQLite row to insert,
lease and mark done, where the spool used to keep one per predicted row. The shared fields (request
id, role, version, times, routing, user, headers, ...) go into ``shared`` (a JSON object), the rows'
own fields into ``rows`` (a JSON object of three columns: each row's features as JSON text, its
prediction, its class index). The features are kept as text because that is what both exporters
write (a run's params are parsed from it; a window table's ``features`` column is that text), so an
export concatenates columns and never encodes a row again.

Records are unpacked into ``PredictionRecord`` objects only where one is needed per row: the
per-prediction exporter, a replay's comparison, feedback's lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import orjson

from gateway.domain.records import RECORD_FIELDS, PredictionRecord

ROW_FIELDS = ("features", "prediction", "class_index", "row_index")  # what differs from row to row
SHARED_FIELDS = tuple(name for name in RECORD_FIELDS if name not in ROW_FIELDS)
_SHARED = attrgetter(*SHARED_FIELDS)


@dataclass(frozen=True, slots=True)
class PackedEntry:
    """What one entry stores: its key, the columns the queue selects on, and the two packed texts."""

    request_id: str
    role: str
    model_version: str
    ts_ms: int
    first_row: int
    n_rows: int
    shared: bytes
    rows: bytes


def pack(records: Sequence[PredictionRecord]) -> list[PackedEntry]:
    """One request's records as entries: one, unless its records differ in a shared field or their
    row indexes are not consecutive (then one entry per such run of records)."""
    out: list[PackedEntry] = []
    for run in _runs(records):
        first = run[0]
        shared = dict(zip(SHARED_FIELDS, _SHARED(first), strict=True))
        rows = {"features": [orjson.dumps(r.features).decode() for r in run],
                "prediction": [r.prediction for r in run],
                "class_index": [r.class_index for r in run]}
        out.append(PackedEntry(first.request_id, first.role, first.model_version, first.ts_ms, first.row_index,
                               len(run), orjson.dumps(shared), orjson.dumps(rows)))
    return out


def _runs(records: Sequence[PredictionRecord]) -> Iterator[Sequence[PredictionRecord]]:
    start, base = 0, _SHARED(records[0]) if records else ()
    for i in range(1, len(records) + 1):
        if i == len(records) or records[i].row_index != records[i - 1].row_index + 1 or _SHARED(records[i]) != base:
            yield records[start:i]
            if i < len(records):
                start, base = i, _SHARED(records[i])


@dataclass(frozen=True, slots=True)
class Columns:
    """An entry's rows decoded: each row's features as JSON text, predictions, class indexes."""

    shared: dict[str, Any]
    first_row: int
    features: list[str]
    prediction: list[Any]
    class_index: list[int | None]

    def __len__(self) -> int:
        return len(self.features)

    def record(self, i: int) -> PredictionRecord:
        """Row ``i`` of the entry (0-based within it) as a record."""
        return PredictionRecord(**self.shared, features=orjson.loads(self.features[i]),
                                prediction=self.prediction[i], class_index=self.class_index[i],
                                row_index=self.first_row + i)

    def records(self) -> list[PredictionRecord]:
        return [self.record(i) for i in range(len(self))]


def unpack(shared: bytes | str, rows: bytes | str, first_row: int) -> Columns:
    s, r = orjson.loads(shared), orjson.loads(rows)
    return Columns(s, int(first_row), r["features"], r["prediction"], r["class_index"])
