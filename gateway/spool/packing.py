"""A request's records as one spool entry: the fields its rows share stored once, the rows' own fields
packed column by column.

One request (or shadow scoring) leaves one entry however many rows it has: one SQLite row to insert,
lease and mark done, where the spool used to keep one per predicted row. The shared fields (request
id, role, version, times, routing, user, headers, ...) go into ``shared`` (a JSON object), the rows'
own fields into ``rows``: predictions, class indexes and features, column by column.

``rows`` has two forms. Rows from the columnar path (one float64 matrix) are binary: ``MATRIX``, the
length of a JSON header (column names, the matrix's dtype and shape, predictions, class indexes) as
four little-endian bytes, the header, then the matrix's own bytes (C order): no Python object per
value to pack, and ``np.frombuffer`` (no copy) to unpack. Other rows are a JSON object: the column
names and one value list per row, or each row's JSON text when rows differ in their columns. Entries
of either form, and those written before the binary one, sit in the same table and unpack alike.

Records are unpacked into ``PredictionRecord`` objects only where one is needed per row: the
per-prediction exporter, a replay's comparison, feedback's lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import orjson

from gateway.domain.records import SHARED_FIELDS, PredictionRecord, RecordBatch, SharedFields

_SHARED = attrgetter(*SHARED_FIELDS)
MATRIX = b"\x00gw-matrix-1\x00"  # a JSON text never starts with a NUL byte
_HEADER_LENGTH = 4


@dataclass(frozen=True, slots=True)
class PackedEntry:
    """What one entry stores: its key, the columns the queue selects on, the shared fields (JSON) and
    the packed rows (JSON, or binary: ``MATRIX``)."""

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
        rows = _row_table([r.features for r in run], [r.prediction for r in run], [r.class_index for r in run])
        out.append(PackedEntry(first.request_id, first.role, first.model_version, first.ts_ms, first.row_index,
                               len(run), orjson.dumps(shared), rows))
    return out


def _pack_batch(batch: RecordBatch) -> PackedEntry:
    """A batch's rows: the columnar path's matrix as its bytes (binary form), or rows that all have the
    same columns in the same order as column names and one value list per row; rows that do not are
    kept as each one's JSON text."""
    shared, rows = batch.shared, batch.features
    if rows.matrix is not None:
        packed = pack_matrix(list(rows.names), rows.matrix, batch.predictions, batch.class_indexes)
    else:
        packed = _row_table(rows.dicts(), batch.predictions, batch.class_indexes)
    return PackedEntry(shared.request_id, shared.role, shared.model_version, shared.ts_ms,
                       batch.first_row, len(batch), orjson.dumps(shared.as_dict()), packed)


def _row_table(rows: Sequence[dict[str, Any]], predictions: list[Any], class_indexes: list[int | None]) -> bytes:
    """The JSON form: column names and one value list per row when every row has the same columns in
    the same order, else each row's JSON text."""
    table: dict[str, Any]
    keys = list(rows[0]) if rows else []
    if all(list(r) == keys for r in rows):
        table = {"feature_names": keys, "feature_values": [list(r.values()) for r in rows]}
    else:
        table = {"features": [orjson.dumps(r).decode() for r in rows]}
    table["prediction"], table["class_index"] = predictions, class_indexes
    return orjson.dumps(table)


def pack_matrix(names: list[str], matrix: np.ndarray, predictions: list[Any], class_indexes: list[int | None]) -> bytes:
    """The binary form of an entry's rows (module docstring)."""
    header = orjson.dumps({"feature_names": names, "dtype": matrix.dtype.str, "shape": list(matrix.shape),
                           "prediction": predictions, "class_index": class_indexes})
    return b"".join((MATRIX, len(header).to_bytes(_HEADER_LENGTH, "little"), header,
                     np.ascontiguousarray(matrix).tobytes()))


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
    either a matrix (the binary form: read-only, over the stored bytes) or one value list per row, or
    as each row's JSON text. ``features`` gives the texts either way and ``values`` the lists, each
    made once when asked for."""

    shared: SharedFields
    first_row: int
    prediction: list[Any]
    class_index: list[int | None]
    feature_names: list[str] | None = None
    feature_values: list[list[Any]] | None = None
    _texts: list[str] | None = None
    matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prediction)

    @property
    def values(self) -> list[list[Any]] | None:
        """One value list per row, or None when the rows are kept as texts."""
        if self.feature_values is None and self.matrix is not None:
            self.feature_values = self.matrix.tolist()
        return self.feature_values

    @property
    def features(self) -> list[str]:
        if self._texts is None:
            names = self.feature_names or []
            self._texts = [orjson.dumps(dict(zip(names, v, strict=True))).decode() for v in self.values or []]
        return self._texts

    def row_features(self, i: int) -> dict[str, Any]:
        if self.matrix is not None and self.feature_values is None:
            return dict(zip(self.feature_names or [], self.matrix[i].tolist(), strict=True))
        if self.feature_values is not None:
            return dict(zip(self.feature_names or [], self.feature_values[i], strict=True))
        return orjson.loads(self.features[i])  # type: ignore[no-any-return]

    def record(self, i: int) -> PredictionRecord:
        """Row ``i`` of the entry (0-based within it) as a record."""
        return PredictionRecord(**self.shared.as_dict(), features=self.row_features(i), prediction=self.prediction[i],
                                class_index=self.class_index[i], row_index=self.first_row + i)

    def records(self) -> list[PredictionRecord]:
        return [self.record(i) for i in range(len(self))]


def unpack(shared: bytes | str, rows: bytes | str, first_row: int) -> Columns:
    s = SharedFields.of(orjson.loads(shared))  # fields added since the entry: their defaults
    if isinstance(rows, bytes) and rows.startswith(MATRIX):
        at = len(MATRIX) + _HEADER_LENGTH
        end = at + int.from_bytes(rows[len(MATRIX):at], "little")
        header = orjson.loads(rows[at:end])
        matrix = np.frombuffer(rows, dtype=np.dtype(header["dtype"]), offset=end).reshape(header["shape"])
        return Columns(s, int(first_row), header["prediction"], header["class_index"], header["feature_names"],
                       matrix=matrix)
    r = orjson.loads(rows)
    return Columns(s, int(first_row), r["prediction"], r["class_index"], r.get("feature_names"),
                   r.get("feature_values"), r.get("features"))
