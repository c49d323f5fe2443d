"""A request's records as one spool entry: the fields its rows share stored once, the rows' own fields
packed column by column.

One request (or shadow scoring) leaves one entry however many rows it has: one SQLite row to insert,
lease and mark done, where the spool used to keep one per predicted row. The shared fields (request
id, role, version, times, routing, user, headers, ...) go into ``shared`` (a JSON object), the rows'
own fields into ``rows`` (a JSON object of three columns: each row's features as JSON text, its
prediction, its class index). The features are kept as the column names and one value list per row
(from the columnar path's matrix in one ``tolist``), or as each row's JSON text when rows differ in
their columns; the window table's ``features`` column (each row's JSON text) is made by the exporter,
off the request path.

Records are unpacked into ``PredictionRecord`` objects only where one is needed per row: the
per-prediction exporter, a replay's comparison, feedback's lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import orjson

from gateway.domain.records import SHARED_DEFAULTS, SHARED_FIELDS, PredictionRecord, RecordBatch

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
    row indexes are not consecutive (then one entry per such run of records). A RecordBatch is one
    entry, packed from its columns."""
    if isinstance(records, RecordBatch):
        return [_pack_batch(records)] if len(records) else []
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


def _pack_batch(batch: RecordBatch) -> PackedEntry:
    """A batch's features as column names and one value list per row: straight from the columnar
    path's matrix (``tolist``, no dict per row), or from rows that all have the same columns in the
    same order; rows that do not are kept as each one's JSON text."""
    shared, rows = batch.shared, batch.features
    matrix, names = getattr(rows, "matrix", None), getattr(rows, "names", None)
    packed: dict[str, Any]
    if matrix is not None and names is not None:
        packed = {"feature_names": list(names), "feature_values": matrix.tolist()}
    else:
        keys = list(rows[0]) if rows else []
        if all(list(r) == keys for r in rows):
            packed = {"feature_names": keys, "feature_values": [list(r.values()) for r in rows]}
        else:
            packed = {"features": [orjson.dumps(r).decode() for r in rows]}
    packed["prediction"], packed["class_index"] = batch.predictions, batch.class_indexes
    return PackedEntry(shared["request_id"], shared["role"], shared["model_version"], shared["ts_ms"],
                       batch.first_row, len(batch), orjson.dumps(shared), orjson.dumps(packed))


def _runs(records: Sequence[PredictionRecord]) -> Iterator[Sequence[PredictionRecord]]:
    start, base = 0, _SHARED(records[0]) if records else ()
    for i in range(1, len(records) + 1):
        if i == len(records) or records[i].row_index != records[i - 1].row_index + 1 or _SHARED(records[i]) != base:
            yield records[start:i]
            if i < len(records):
                start, base = i, _SHARED(records[i])


@dataclass(slots=True)
class Columns:
    """An entry's rows decoded: predictions, class indexes, and the features as column names with
    one value list per row, or as each row's JSON text (``features`` gives the texts either way,
    made once when asked for: the window table's column)."""

    shared: dict[str, Any]
    first_row: int
    prediction: list[Any]
    class_index: list[int | None]
    feature_names: list[str] | None = None
    feature_values: list[list[Any]] | None = None
    _texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.prediction)

    @property
    def features(self) -> list[str]:
        if self._texts is None:
            names = self.feature_names or []
            self._texts = [orjson.dumps(dict(zip(names, v, strict=True))).decode() for v in self.feature_values or []]
        return self._texts

    def row_features(self, i: int) -> dict[str, Any]:
        if self.feature_values is not None:
            return dict(zip(self.feature_names or [], self.feature_values[i], strict=True))
        return orjson.loads(self.features[i])  # type: ignore[no-any-return]

    def record(self, i: int) -> PredictionRecord:
        """Row ``i`` of the entry (0-based within it) as a record."""
        return PredictionRecord(**self.shared, features=self.row_features(i), prediction=self.prediction[i],
                                class_index=self.class_index[i], row_index=self.first_row + i)

    def records(self) -> list[PredictionRecord]:
        return [self.record(i) for i in range(len(self))]


def unpack(shared: bytes | str, rows: bytes | str, first_row: int) -> Columns:
    s, r = {**SHARED_DEFAULTS, **orjson.loads(shared)}, orjson.loads(rows)  # fields added since the entry
    return Columns(s, int(first_row), r["prediction"], r["class_index"], r.get("feature_names"),
                   r.get("feature_values"), r.get("features"))
