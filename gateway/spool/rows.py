"""Spool entries as SQLite rows and back: the insert, what a lease returns, and the rows of a lease as
the exporters see them (one ``SpoolRow`` per predicted row, keyed by entry and row index)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from gateway.domain.records import RECORD_FIELDS, PredictionRecord
from gateway.domain.sequences import OnDemand
from gateway.spool.packing import MATRIX, Columns, PackedEntry, unpack

# An entry is two SQLite rows: its key and export state in ``entries`` (small: leases and marks rewrite
# it), its packed rows in ``entry_rows`` (written once, never updated: SQLite rewrites a whole row on
# any update, and a 1,000-row entry is tens of kilobytes).
ENTRY_VALUES = ("request_id", "role", "model_version", "ts_ms", "first_row", "n_rows")
ENTRY_COLUMNS = ", ".join(ENTRY_VALUES)
INSERT = f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES ({', '.join('?' * len(ENTRY_VALUES))})"
INSERT_ROWS = "INSERT INTO entry_rows (entry_id, shared, rows) VALUES (?, ?, ?)"


def entry_values(entry: PackedEntry) -> list[Any]:
    """An entry's columns in ``ENTRY_VALUES`` order, as ``INSERT`` binds them."""
    return [entry.request_id, entry.role, entry.model_version, entry.ts_ms, entry.first_row, entry.n_rows]


def packed_values(entry: PackedEntry) -> list[Any]:
    """An entry's packed fields, as ``INSERT_ROWS`` binds them after its id: JSON as text, the binary
    form of the rows as a blob (SQLite keeps a blob as it is in a column of any declared type)."""
    rows = entry.rows
    return [entry.shared.decode(), rows if rows.startswith(MATRIX) else rows.decode()]


class RowKey(NamedTuple):
    """One predicted row of the spool: its entry, and its row index in the request."""

    entry: int
    row_index: int


class RowKeys(OnDemand[RowKey]):
    """The keys of a request's rows, entry by entry ((entry id, first row, rows) each), each built
    when asked for: a 1,000-row request commits without 1,000 key objects."""

    __slots__ = ("_entries", "_starts")

    def __init__(self, entries: Sequence[tuple[int, int, int]]) -> None:
        self._entries = list(entries)
        self._starts, total = [], 0
        for _, _, n in self._entries:
            self._starts.append(total)
            total += n
        self._starts.append(total)

    def __len__(self) -> int:
        return self._starts[-1]

    def item(self, i: int) -> RowKey:
        k = bisect.bisect_right(self._starts, i) - 1
        entry, first, _ = self._entries[k]
        return RowKey(entry, first + i - self._starts[k])


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """A record as the per-prediction exporter sees it: its key, attempt count and any known run id."""

    id: RowKey
    record: PredictionRecord
    attempts: int
    batch_id: str | None
    run_id: str | None


@dataclass(frozen=True, slots=True)
class LeasedEntry:
    """A leased entry: its rows decoded into columns, its lease's attempt count and any run id."""

    id: int
    columns: Columns
    attempts: int
    batch_id: str | None
    run_id: str | None
    # Rows of a multi-row entry already in MLflow (per-prediction runs), and run ids of rows started.
    done_rows: frozenset[int] = field(default_factory=frozenset)
    row_runs: dict[int, str] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.columns)

    def rows(self) -> list[SpoolRow]:
        """The rows still to export, as records."""
        first, out = self.columns.first_row, []
        for i in range(self.n_rows):
            index = first + i
            if index in self.done_rows:
                continue
            run_id = self.run_id if self.n_rows == 1 else self.row_runs.get(index)
            out.append(SpoolRow(RowKey(self.id, index), self.columns.record(i), self.attempts, self.batch_id, run_id))
        return out


LEASED = "id, attempts, batch_id, run_id, first_row"  # what a lease's UPDATE returns, in this order
PACKED = "SELECT entry_id, shared, rows FROM entry_rows WHERE entry_id IN ({})"  # then its rows, by id
PACKED_BATCH = ("SELECT entry_id, shared, rows FROM entry_rows JOIN entries ON id = entry_id "  # or by window
                "WHERE batch_id = ?")


def leased_entries(leased: Iterable[Sequence[Any]], packed: Iterable[Sequence[Any]]) -> list[LeasedEntry]:
    """Leased entries from their state (``LEASED``) and packed rows (``PACKED``), in id order."""
    texts = {int(row[0]): (row[1], row[2]) for row in packed}
    out = [LeasedEntry(int(row[0]), unpack(*texts[int(row[0])], int(row[4])), int(row[1]), row[2], row[3])
           for row in leased]
    out.sort(key=lambda e: e.id)
    return out


class Window(Sequence[SpoolRow]):
    """A leased window: its entries (for a columnar export), and as a sequence the rows they hold."""

    def __init__(self, entries: list[LeasedEntry]) -> None:
        self.entries = entries
        self._rows: list[SpoolRow] | None = None

    @property
    def n_rows(self) -> int:
        return sum(e.n_rows for e in self.entries)

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, index: Any) -> Any:
        if self._rows is None:
            self._rows = [row for e in self.entries for row in e.rows()]
        return self._rows[index]


# The per-row table of the release before entries: its columns are the record's fields as they were
# when entries replaced it (the fields added since have their defaults in the records it moves into entries)
_ADDED_SINCE = ("model_uri", "model", "assignment_probability", "weights_version", "model_id")
_ROW_TABLE_FIELDS = tuple(name for name in RECORD_FIELDS if name not in _ADDED_SINCE)
COLUMNS = ", ".join(_ROW_TABLE_FIELDS)
_JSON = {"features", "prediction"}  # stored as JSON text there: an object, and a label or a number


def record(row: Sequence[Any]) -> PredictionRecord:
    """A record from a per-row table's columns (``COLUMNS``), when such a spool is migrated."""
    fields = {name: orjson.loads(v) if name in _JSON else v for name, v in zip(_ROW_TABLE_FIELDS, row, strict=True)}
    return PredictionRecord(**fields)
