"""A durable local log of predictions, written before each response, drained by the exporter.

SQLite in WAL mode (sqlite.py): one row per predicted row (a batch request leaves several) and role.
A row is *pending*, then *claimed* by an exporter (queue.py), then *done* with the MLflow run id.
Labels wait beside them (labels.py). Several processes may share one spool file.

Durability: a request's rows are committed in one transaction before ``append_many`` returns. With
``synchronous=NORMAL`` a commit survives the death of the process (SIGKILL, OOM kill);
``fsync = "full"`` also survives power loss.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.domain.records import PredictionRecord
from gateway.spool.labels import LabelExists, LabelRow, LabelTable
from gateway.spool.queue import ExportQueue
from gateway.spool.rows import COLUMNS, INSERT, SpoolRow, record, values
from gateway.spool.schema import DONE, RowState, create
from gateway.spool.sqlite import SpoolWriteError, SqliteFile

log = logging.getLogger("gateway.spool")

__all__ = ["DONE", "DuplicateRequest", "LabelExists", "LabelRow", "PredictionSpool", "RowState", "SpoolRow",
           "SpoolWriteError"]


class DuplicateRequest(Exception):
    """Records with this (request_id, role) exist already; ``existing`` is what was recorded."""

    def __init__(self, existing: list[PredictionRecord]) -> None:
        first = existing[0]
        super().__init__(f"request {first.request_id} ({first.role}) is already recorded")
        self.existing = existing


T = TypeVar("T")

# A readiness probe commits this many bytes, then deletes them: more than most group commits of
# records need, so a disk with room for the probe has room for them (a one-page write would fit in
# the last free block of a disk where records do not).
PROBE_BYTES = 64 * 1024


class PredictionSpool:
    """The spool file at ``<dir>/predictions.sqlite3``: predictions written and read here, the export
    queue (``queue``) and the labels (``labels``) over the same file (``db``)."""

    FILENAME = "predictions.sqlite3"

    def __init__(self, directory: Path | str, fsync: str = "normal", busy_timeout_ms: int = 5000,
                 max_bytes: int | None = None, min_free_bytes: int = 0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILENAME
        self.db = SqliteFile(self.path, fsync=fsync, busy_timeout_ms=busy_timeout_ms, max_bytes=max_bytes,
                             min_free_bytes=min_free_bytes)
        with self.db.locked() as conn:  # the schema script manages its own transactions
            create(conn, self.path)
        self.queue = ExportQueue(self.db)
        self.labels = LabelTable(self.db)

    def check_file(self) -> str | None:
        return self.db.check_file()

    # -- writing, on the request path ------------------------------------------------------

    def append(self, record: PredictionRecord) -> int:
        """Commit one record durably; return its row id. Raise DuplicateRequest or SpoolWriteError."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[PredictionRecord]) -> list[int]:
        """Commit the records of one request in one transaction: all of them or none. Raise
        DuplicateRequest or SpoolWriteError."""
        result = self.append_groups([records])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def append_groups(self, groups: Sequence[Sequence[PredictionRecord]]) -> list[list[int] | Exception]:
        """Group commit: the records of several requests in one transaction, each request all or
        nothing (a savepoint each). Returns, per request, its row ids or the exception it gets: a
        request id recorded already gets DuplicateRequest and the others are committed; a failed
        transaction gives every request SpoolWriteError. When the spool is full, rows already in
        MLflow are deleted before anything is refused: only records not yet exported can fill it
        (their retention is for idempotent retries, not worth an outage)."""
        if not groups:
            return []
        try:
            if self.db.check_file():
                raise SpoolWriteError("the spool file was deleted or replaced; restart the gateway")
            return self._pruning_when_full(lambda: self._insert_groups(groups))
        except sqlite3.Error as exc:
            error = SpoolWriteError(f"cannot write the prediction spool: {exc}")
            return [error for _ in groups]
        except SpoolWriteError as exc:
            return [exc for _ in groups]

    def probe_write(self) -> str | None:
        """Whether new records would fit now: ``PROBE_BYTES`` committed under the size cap, as records
        are (the same pruning of exported rows first), then deleted. None when it committed, else why not."""
        try:
            self._pruning_when_full(self._probe)
        except sqlite3.Error as exc:
            return f"cannot write the prediction spool: {exc}"
        return None

    def _pruning_when_full(self, write: Callable[[], T]) -> T:
        """``write``, and when the spool is full (the disk, its reserve or the size cap), once more after
        deleting the rows already in MLflow: only unexported records may fill it."""
        try:
            return write()
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc) or not self.prune(0):
                raise
            return write()

    def _probe(self) -> None:
        with self.db.adding() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, pad BLOB NOT NULL)")
            conn.execute("INSERT INTO write_probe (pad) VALUES (zeroblob(?))", (PROBE_BYTES,))
        self.db.write("DELETE FROM write_probe")

    def _insert_groups(self, groups: Sequence[Sequence[PredictionRecord]]) -> list[list[int] | Exception]:
        out: list[list[int] | Exception] = []
        with self.db.adding() as conn:
            for records in groups:
                conn.execute("SAVEPOINT request")
                try:
                    # One statement for the request's rows; their ids are consecutive (AUTOINCREMENT under
                    # the write lock), ending at the connection's last insert rowid.
                    conn.executemany(INSERT, [values(r) for r in records])
                    last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                    ids = list(range(last - len(records) + 1, last + 1))
                except sqlite3.IntegrityError:
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                    out.append(self._duplicate(records))
                    continue
                conn.execute("RELEASE request")
                out.append(ids)
        return out

    def _duplicate(self, records: Sequence[PredictionRecord]) -> Exception:
        for request_id, role in dict.fromkeys((r.request_id, r.role) for r in records):
            existing = self.find_request(request_id, role)
            if existing:
                return DuplicateRequest(existing)
        return SpoolWriteError("spool integrity error without a conflicting row")

    def find(self, request_id: str, role: str = "primary", row_index: int = 0) -> PredictionRecord | None:
        row = self.db.connection().execute(
            f"SELECT {COLUMNS} FROM predictions WHERE request_id = ? AND role = ? AND row_index = ?",
            (request_id, role, row_index)).fetchone()
        return record(row) if row else None

    def find_request(self, request_id: str, role: str = "primary") -> list[PredictionRecord]:
        rows = self.db.connection().execute(
            f"SELECT {COLUMNS} FROM predictions WHERE request_id = ? AND role = ? ORDER BY row_index",
            (request_id, role)).fetchall()
        return [record(r) for r in rows]

    # -- housekeeping and state -------------------------------------------------------------

    def bump_counter(self, name: str, by: int = 1) -> None:
        self.db.write("INSERT INTO counters (name, value) VALUES (?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", [name, by])

    def prune(self, older_than_seconds: float, chunk: int = 2000) -> int:
        """Delete exported rows older than the retention; they are in MLflow now. In chunks, each its
        own transaction, so that the request path's writes never wait behind one long delete."""
        cutoff = time.time() - older_than_seconds
        total = 0
        while True:
            cur = self.db.write(f"""DELETE FROM predictions WHERE id IN (SELECT id FROM predictions
                                    WHERE status = {DONE:d} AND exported_at < ? LIMIT ?)""", (cutoff, chunk))
            total += max(cur.rowcount, 0)
            if cur.rowcount < chunk:
                return total

    def stats(self) -> dict[str, float | int | None]:
        conn = self.db.connection()
        backlog, oldest = conn.execute(
            f"SELECT COUNT(*), MIN(ts_ms) FROM predictions WHERE status != {DONE:d}").fetchone()
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        lag = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        return {"backlog": int(backlog), "oldest_pending_ts_ms": oldest, "export_lag_seconds": round(lag, 3),
                "labels_backlog": self.labels.count_open(),
                **{f"total_{k}": int(v) for k, v in counters.items()}}

    def open_in_range(self, since_ms: int | None = None, until_ms: int | None = None,
                      role: str | None = None) -> int:
        """Records not yet in MLflow within a time range (for the report's completeness warning)."""
        clauses, args = [f"status != {DONE:d}"], []
        if since_ms is not None:
            clauses.append("ts_ms >= ?")
            args.append(since_ms)
        if until_ms is not None:
            clauses.append("ts_ms < ?")
            args.append(until_ms)
        if role is not None:
            clauses.append("role = ?")
            args.append(role)
        sql = f"SELECT COUNT(*) FROM predictions WHERE {' AND '.join(clauses)}"
        return int(self.db.connection().execute(sql, args).fetchone()[0])

    def exported_total(self) -> int:
        """Records ever exported, by every exporter of this spool."""
        row = self.db.connection().execute("SELECT value FROM counters WHERE name = 'exported'").fetchone()
        return int(row[0]) if row else 0

    def high_water(self) -> int:
        """The newest row id: its growth over time is the inbound prediction rate (O(1) to read)."""
        return int(self.db.connection().execute("SELECT COALESCE(MAX(id), 0) FROM predictions").fetchone()[0])

    def oldest_open_ts_ms(self) -> int | None:
        row = self.db.connection().execute(
            f"SELECT ts_ms FROM predictions WHERE status != {DONE:d} ORDER BY id LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def count_open(self) -> int:
        return int(self.db.connection().execute(
            f"SELECT COUNT(*) FROM predictions WHERE status != {DONE:d}").fetchone()[0])

    def count(self, status: RowState | None = None) -> int:
        conn = self.db.connection()
        if status is None:
            return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        return int(conn.execute("SELECT COUNT(*) FROM predictions WHERE status = ?", (int(status),)).fetchone()[0])

    def close(self) -> None:
        self.db.close()
