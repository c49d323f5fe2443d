"""A durable local log of predictions, written before each response, drained by the exporter.

SQLite in WAL mode (sqlite.py): one entry per request and role, its rows packed (packing.py), so a
batch of 1,000 rows is one SQLite row to insert and to lease. An entry is *pending*, then *claimed*
by an exporter (queue.py), then *done* with the MLflow run id; every count here is of predicted
rows, not entries. Labels wait beside them (labels.py). Several processes may share one spool file.

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

from gateway.domain.records import PredictionRecord, Role
from gateway.spool.commits import TableCommits
from gateway.spool.label_table import LabelExists, LabelRow, LabelTable
from gateway.spool.packing import pack, unpack
from gateway.spool.queue import ExportQueue
from gateway.spool.rows import INSERT, INSERT_ROWS, RowKey, RowKeys, SpoolRow, entry_values, packed_values
from gateway.spool.schema import BUMP_COUNTER, DONE, RowState, create
from gateway.spool.sqlite import SpoolWriteError, SqliteFile, marks

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
        self.commits = TableCommits(self.db)

    def check_file(self) -> str | None:
        return self.db.check_file()

    # -- writing, on the request path ------------------------------------------------------

    def append(self, record: PredictionRecord) -> RowKey:
        """Commit one record durably; return its key. Raise DuplicateRequest or SpoolWriteError."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[PredictionRecord]) -> Sequence[RowKey]:
        """Commit the records of one request in one transaction: all of them or none. Raise
        DuplicateRequest or SpoolWriteError."""
        result = self.append_groups([records])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def append_groups(self, groups: Sequence[Sequence[PredictionRecord]]) -> Sequence[Sequence[RowKey] | Exception]:
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

    def _insert_groups(self, groups: Sequence[Sequence[PredictionRecord]]) -> Sequence[Sequence[RowKey] | Exception]:
        out: list[Sequence[RowKey] | Exception] = []
        added = 0
        packed = [pack(records) for records in groups]  # before the write lock is taken
        with self.db.adding() as conn:
            for records, entries in zip(groups, packed, strict=True):
                conn.execute("SAVEPOINT request")
                try:
                    # Entries of one statement get consecutive ids (AUTOINCREMENT under the write lock),
                    # ending at the connection's last insert rowid.
                    conn.executemany(INSERT, [entry_values(e) for e in entries])
                    last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                    conn.executemany(INSERT_ROWS, [[entry_id, *packed_values(e)] for entry_id, e in
                                                   zip(range(last - len(entries) + 1, last + 1), entries, strict=True)])
                except sqlite3.IntegrityError:
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                    out.append(self._duplicate(records))
                    continue
                conn.execute("RELEASE request")
                out.append(RowKeys([(entry_id, entry.first_row, entry.n_rows) for entry_id, entry in
                                    zip(range(last - len(entries) + 1, last + 1), entries, strict=True)]))
                added += len(records)
            if added:
                conn.execute(BUMP_COUNTER, ("appended", added))
        return out

    def _duplicate(self, records: Sequence[PredictionRecord]) -> Exception:
        for request_id, role in dict.fromkeys((r.request_id, r.role) for r in records):
            existing = self.find_request(request_id, role)
            if existing:
                return DuplicateRequest(existing)
        return SpoolWriteError("spool integrity error without a conflicting row")

    def find(self, request_id: str, role: str = Role.PRIMARY, row_index: int = 0) -> PredictionRecord | None:
        row = self.db.connection().execute(
            "SELECT shared, rows, first_row FROM entries JOIN entry_rows ON entry_id = id WHERE request_id = ? "
            "AND role = ? AND first_row <= ? AND ? < first_row + n_rows", (request_id, role, row_index, row_index)
        ).fetchone()
        return unpack(row[0], row[1], row[2]).record(row_index - int(row[2])) if row else None

    def find_request(self, request_id: str, role: str = Role.PRIMARY) -> list[PredictionRecord]:
        rows = self.db.connection().execute(
            "SELECT shared, rows, first_row FROM entries JOIN entry_rows ON entry_id = id WHERE request_id = ? "
            "AND role = ? ORDER BY first_row",
            (request_id, role)).fetchall()
        return [record for r in rows for record in unpack(r[0], r[1], r[2]).records()]

    def open_keys(self) -> set[tuple[str, int, str]]:
        """(request id, row index, role) of every row not yet in MLflow."""
        done = {(int(e), int(i)) for e, i in self.db.read(
            f"SELECT r.entry_id, r.row_index FROM row_runs r JOIN entries e ON e.id = r.entry_id "
            f"WHERE r.done = 1 AND e.status != {DONE:d}")}
        return {(str(rid), i, str(role))
                for entry_id, rid, role, first, n in self.db.read(
                    f"SELECT id, request_id, role, first_row, n_rows FROM entries WHERE status != {DONE:d}")
                for i in range(int(first), int(first) + int(n)) if (int(entry_id), i) not in done}

    # -- housekeeping and state -------------------------------------------------------------

    def bump_counter(self, name: str, by: int = 1) -> None:
        self.db.write(BUMP_COUNTER, [name, by])

    def prune(self, older_than_seconds: float, chunk: int = 2000) -> int:
        """Delete exported entries older than the retention; they are in MLflow now. In chunks of about
        ``chunk`` rows, each its own transaction, so that the request path's writes never wait behind
        one long delete. Returns the rows deleted."""
        cutoff = time.time() - older_than_seconds
        total = 0
        while True:
            with self.db.transaction() as conn:
                # At most ``chunk`` rows' entries (at least one): a transaction's worth of pages freed
                # does not depend on how many rows the requests had.
                gone = conn.execute(f"""DELETE FROM entries WHERE id IN (SELECT id FROM (
                                          SELECT id, n_rows, SUM(n_rows) OVER (ORDER BY id) AS upto FROM (
                                            SELECT id, n_rows FROM entries WHERE status = {DONE:d} AND exported_at < ?
                                            ORDER BY id LIMIT ?)) WHERE upto - n_rows < ?)
                                        RETURNING id, n_rows""", (cutoff, chunk, chunk)).fetchall()
                ids = [int(i) for i, _ in gone]
                if ids:
                    conn.execute(f"DELETE FROM entry_rows WHERE entry_id IN ({marks(ids)})", ids)
                multi = [int(i) for i, n in gone if n > 1]
                if multi:
                    conn.execute(f"DELETE FROM row_runs WHERE entry_id IN ({marks(multi)})", multi)
            total += sum(int(n) for _, n in gone)
            if not gone:
                return total

    def stats(self) -> dict[str, float | int | None]:
        conn = self.db.connection()
        oldest = conn.execute(f"SELECT MIN(ts_ms) FROM entries WHERE status != {DONE:d}").fetchone()[0]
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        lag = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        return {"backlog": self.count_open(), "oldest_pending_ts_ms": oldest, "export_lag_seconds": round(lag, 3),
                "labels_backlog": self.labels.count_open(),
                "labels_untrusted": self.labels.count_untrusted(),
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
        return self._rows(" AND ".join(clauses), args)

    def exported_total(self) -> int:
        """Records ever exported, by every exporter of this spool."""
        return self._counter("exported")

    def high_water(self) -> int:
        """Rows ever appended: its growth over time is the inbound prediction rate (O(1) to read)."""
        return self._counter("appended")

    def _counter(self, name: str) -> int:
        row = self.db.connection().execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def oldest_open_ts_ms(self) -> int | None:
        row = self.db.connection().execute(
            f"SELECT ts_ms FROM entries WHERE status != {DONE:d} ORDER BY id LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def count_open(self) -> int:
        return self._rows(f"status != {DONE:d}")

    def count(self, status: RowState | None = None) -> int:
        """Rows in the spool (``status``: in that state; a row of a multi-row entry exported on its own
        counts as done while its entry is open)."""
        if status is None:
            return self._rows("1", done_rows=False)
        if status is RowState.DONE:
            done = int(self.db.connection().execute(
                f"SELECT COALESCE(SUM(n_rows), 0) FROM entries WHERE status = {DONE:d}").fetchone()[0])
            return done + int(self.db.connection().execute(
                f"SELECT COUNT(*) FROM row_runs r JOIN entries e ON e.id = r.entry_id "
                f"WHERE r.done = 1 AND e.status != {DONE:d}").fetchone()[0])
        return self._rows("status = ?", [int(status)])

    def _rows(self, where: str, args: Sequence[object] = (), done_rows: bool = True) -> int:
        """Rows of the entries ``where`` selects, less (``done_rows``) those exported one by one already
        (rows of multi-row entries in ``row_runs``: few, so they are counted apart, not per entry)."""
        conn = self.db.connection()
        total = int(conn.execute(f"SELECT COALESCE(SUM(n_rows), 0) FROM entries WHERE {where}", list(args)
                                 ).fetchone()[0])
        if done_rows:
            total -= int(conn.execute(f"SELECT COUNT(*) FROM entries JOIN row_runs r ON r.entry_id = entries.id "
                                      f"WHERE r.done = 1 AND ({where})", list(args)).fetchone()[0])
        return total

    def close(self) -> None:
        self.db.close()
