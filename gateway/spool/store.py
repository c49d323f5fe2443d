"""A durable local log of predictions, written before each response, drained by the exporter.

SQLite in WAL mode: one row per predicted row (a batch request leaves several) and role. A row is
*pending*, then *claimed* by an exporter under a time-limited lease, then *done* with the MLflow
run id. A lease that runs out (its exporter was killed) makes the row claimable again, and
``attempts`` tells the next exporter that a run may already exist in MLflow. Several processes may
share one spool file: claims happen inside ``BEGIN IMMEDIATE`` transactions, so two exporters never
hold the same row at once.

Durability: a request's rows are committed in one transaction before ``append_many`` returns. With
``synchronous=NORMAL`` a commit survives the death of the process (SIGKILL, OOM kill);
``fsync = "full"`` also survives power loss.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import orjson

from gateway.domain.records import PredictionRecord

log = logging.getLogger("gateway.spool")


class RowState(IntEnum):
    """A spool row's life: written, leased by an exporter, in MLflow."""

    PENDING = 0
    CLAIMED = 1
    DONE = 2


PENDING, CLAIMED, DONE = RowState.PENDING, RowState.CLAIMED, RowState.DONE

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL DEFAULT 0,
    role TEXT NOT NULL,
    model_version TEXT NOT NULL,
    features TEXT NOT NULL,
    prediction TEXT NOT NULL,
    class_index INTEGER,
    kind TEXT NOT NULL,
    inference_time_ms REAL NOT NULL,
    ts_ms INTEGER NOT NULL,
    routing TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    weights TEXT NOT NULL DEFAULT '',
    batch_rows INTEGER NOT NULL DEFAULT 1,
    request_time_ms REAL,
    status INTEGER NOT NULL DEFAULT {PENDING:d},
    lease_owner TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    run_id TEXT,
    exported_at REAL,
    UNIQUE (request_id, role, row_index)
);
CREATE INDEX IF NOT EXISTS predictions_open ON predictions (id) WHERE status != {DONE:d};
CREATE INDEX IF NOT EXISTS predictions_open_key ON predictions (model_version, role, id) WHERE status != {DONE:d};
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL DEFAULT 0,
    model_version TEXT NOT NULL,
    true_label TEXT NOT NULL,
    correct INTEGER,
    abs_error REAL,
    ts_ms INTEGER NOT NULL,
    status INTEGER NOT NULL DEFAULT {PENDING:d},
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS labels_open ON labels (id) WHERE status != {DONE:d};
"""
_LABELS_ONCE = "CREATE UNIQUE INDEX IF NOT EXISTS labels_once ON labels (request_id, row_index);"

_RECORD_COLUMNS = ("request_id", "row_index", "role", "model_version", "features", "prediction", "class_index",
                   "kind", "inference_time_ms", "ts_ms", "routing", "config_hash", "weights", "batch_rows",
                   "request_time_ms")
# Columns added after the first release of this table, with their definitions (added on open).
_ADDED_COLUMNS = {"batch_rows": "INTEGER NOT NULL DEFAULT 1", "request_time_ms": "REAL"}
_COLS = ", ".join(_RECORD_COLUMNS)
_INSERT = f"INSERT INTO predictions ({_COLS}) VALUES ({', '.join('?' * len(_RECORD_COLUMNS))})"


def _values(record: PredictionRecord) -> tuple[Any, ...]:
    return (record.request_id, record.row_index, record.role, record.model_version, record.features_json(),
            orjson.dumps(record.prediction).decode(), record.class_index, record.kind, record.inference_time_ms,
            record.ts_ms, record.routing, record.config_hash, record.weights, record.batch_rows,
            record.request_time_ms)


def _record(row: Sequence[Any]) -> PredictionRecord:
    (request_id, row_index, role, version, features, prediction, class_index, kind, ms, ts, routing, config_hash,
     weights, batch_rows, request_time_ms) = row
    return PredictionRecord(request_id=request_id, role=role, model_version=version, features=orjson.loads(features),
                            prediction=orjson.loads(prediction), class_index=class_index, inference_time_ms=ms,
                            ts_ms=ts, routing=routing, config_hash=config_hash, weights=weights,
                            row_index=row_index, kind=kind, batch_rows=batch_rows, request_time_ms=request_time_ms)


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """A record as the exporter sees it: with its row id, attempt count and any known run id."""

    id: int
    record: PredictionRecord
    attempts: int
    batch_id: str | None
    run_id: str | None


REMOTE_VARIANT = ""  # a label's model_version when another replica answered the prediction


@dataclass(frozen=True, slots=True)
class LabelRow:
    """A ground-truth label as the exporter sees it, with the prediction's run id once known."""

    id: int
    request_id: str
    row_index: int
    model_version: str
    true_label: str | int | float
    correct: bool | None
    abs_error: float | None
    ts_ms: int
    attempts: int
    batch_id: str | None
    prediction_run_id: str | None

    @property
    def remote(self) -> bool:
        """Its prediction was answered by another replica: joined, and judged, in MLflow."""
        return self.model_version == REMOTE_VARIANT


class SpoolWriteError(Exception):
    """The spool could not commit a record (disk full, read-only file system, locked too long)."""


class LabelExists(Exception):
    """A true label was stored for this prediction already (the first label wins); ``existing`` is it."""

    def __init__(self, existing: str | int | float) -> None:
        super().__init__(f"a true label ({existing!r}) was stored for this prediction already")
        self.existing = existing


class DuplicateRequest(Exception):
    """Records with this (request_id, role) exist already; ``existing`` is what was recorded."""

    def __init__(self, existing: list[PredictionRecord]) -> None:
        first = existing[0]
        super().__init__(f"request {first.request_id} ({first.role}) is already recorded")
        self.existing = existing


class PredictionSpool:
    """The spool file at ``<dir>/predictions.sqlite3``; safe to share between threads and processes."""

    FILENAME = "predictions.sqlite3"

    def __init__(self, directory: Path | str, fsync: str = "normal", busy_timeout_ms: int = 5000,
                 max_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILENAME
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._fsync = fsync
        self._busy_timeout_ms = busy_timeout_ms
        self._max_bytes = max_bytes
        self._cap_pages = 0
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        with self._write_lock:
            conn.executescript(_SCHEMA)
            _add_columns(conn)
            _migrate_single_row_spool(conn)
            try:
                conn.execute(_LABELS_ONCE)
            except sqlite3.IntegrityError:  # a spool written before the first-label-wins rule
                log.warning("spool %s holds several labels for one prediction; the first-wins rule applies to "
                            "new labels only", self.path)
        self._identity = _identity(self.path)
        self.problem: str | None = None

    def check_file(self) -> str | None:
        """None while the spool file is the one opened at start; otherwise what happened to it. A
        deleted or replaced file would silently swallow every record written after it (into an unlinked
        inode), and new connections would open an empty database: both are refused instead."""
        if self.problem is None and _identity(self.path) != self._identity:
            self.problem = (f"the spool file {self.path} was deleted or replaced while the gateway ran; "
                            "predictions are refused until the gateway is restarted (unexported records "
                            "written before that are still in the old file's open handle until then)")
            log.critical("%s", self.problem)
        return self.problem

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if getattr(self, "_identity", None) is not None and self.check_file():
                raise SpoolWriteError("the spool file was deleted or replaced; restart the gateway")
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._fsync == 'full' else 'NORMAL'}")
            if self._max_bytes:
                # A size cap: past it SQLite answers SQLITE_FULL, exactly as on a full disk. It holds for
                # new records (see _capped); the exporter's bookkeeping gets headroom above it, or a full
                # spool could not even mark its rows exported and would stay full.
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                # At least room for the schema itself (about 12 pages), or the spool could not open.
                self._cap_pages = max(16, self._max_bytes // page)
                conn.execute(f"PRAGMA max_page_count = {self._cap_pages + max(64, self._cap_pages // 4)}")
            self._local.conn = conn
        return conn

    def leave_checkpoints(self) -> None:
        """This thread's commits no longer copy the WAL back into the database when it grows past
        1,000 pages (SQLite's automatic checkpoint, an fsync of a few ms on some commit in a few
        hundred); ``checkpoint`` does it instead, from another thread."""
        conn = self._conn()
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # the WAL file shrinks back to 64 MB after a reset

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database without blocking writers (PASSIVE)."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def limit_waits(self, busy_timeout_ms: float) -> None:
        """How long this thread's writes wait for a lock held elsewhere before they fail (the request
        path's writer waits no longer than its requests may)."""
        self._conn().execute(f"PRAGMA busy_timeout = {max(1, int(busy_timeout_ms))}")

    @contextlib.contextmanager
    def _capped(self, conn: sqlite3.Connection) -> Iterator[None]:
        """New records (predictions, labels) must fit under the size cap itself."""
        if not self._max_bytes:
            yield
            return
        conn.execute(f"PRAGMA max_page_count = {self._cap_pages}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA max_page_count = {self._cap_pages + max(64, self._cap_pages // 4)}")

    def _transaction(self, work: Any) -> Any:
        """Run ``work(conn)`` inside one write transaction (BEGIN IMMEDIATE ... COMMIT)."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return result

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
            if self.check_file():
                raise SpoolWriteError("the spool file was deleted or replaced; restart the gateway")
            try:
                return self._insert_groups(groups)
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc) or not self.prune(0):
                    raise
                return self._insert_groups(groups)
        except sqlite3.Error as exc:
            error = SpoolWriteError(f"cannot write the prediction spool: {exc}")
            return [error for _ in groups]
        except SpoolWriteError as exc:
            return [exc for _ in groups]

    def _insert_groups(self, groups: Sequence[Sequence[PredictionRecord]]) -> list[list[int] | Exception]:
        def work(conn: sqlite3.Connection) -> list[list[int] | Exception]:
            out: list[list[int] | Exception] = []
            with self._capped(conn):
                for records in groups:
                    conn.execute("SAVEPOINT request")
                    try:
                        ids = [int(conn.execute(_INSERT, _values(r)).lastrowid or 0) for r in records]
                    except sqlite3.IntegrityError:
                        conn.execute("ROLLBACK TO request")
                        conn.execute("RELEASE request")
                        out.append(self._duplicate(records))
                        continue
                    conn.execute("RELEASE request")
                    out.append(ids)
            return out

        return self._transaction(work)  # type: ignore[no-any-return]

    def _duplicate(self, records: Sequence[PredictionRecord]) -> Exception:
        for request_id, role in dict.fromkeys((r.request_id, r.role) for r in records):
            existing = self.find_request(request_id, role)
            if existing:
                return DuplicateRequest(existing)
        return SpoolWriteError("spool integrity error without a conflicting row")

    def find(self, request_id: str, role: str = "primary", row_index: int = 0) -> PredictionRecord | None:
        row = self._conn().execute(
            f"SELECT {_COLS} FROM predictions WHERE request_id = ? AND role = ? AND row_index = ?",
            (request_id, role, row_index)).fetchone()
        return _record(row) if row else None

    def find_request(self, request_id: str, role: str = "primary") -> list[PredictionRecord]:
        rows = self._conn().execute(
            f"SELECT {_COLS} FROM predictions WHERE request_id = ? AND role = ? ORDER BY row_index",
            (request_id, role)).fetchall()
        return [_record(r) for r in rows]

    # -- ground-truth labels -------------------------------------------------------------------

    def append_label(self, record: PredictionRecord, true_label: str | int | float, correct: bool | None,
                     abs_error: float | None) -> int:
        """Commit a true label for an answered prediction; the exporter takes it to MLflow. The first
        label of a prediction wins: another one raises LabelExists with the stored label."""
        return self._insert_label(record.request_id, record.row_index, record.model_version, true_label, correct,
                                  abs_error)

    def append_remote_label(self, request_id: str, row_index: int, true_label: str | int | float) -> int:
        """A true label for a prediction another replica answered: the exporter joins it to that
        prediction in MLflow (and works out whether it was right there)."""
        return self._insert_label(request_id, row_index, REMOTE_VARIANT, true_label, None, None)

    def _insert_label(self, request_id: str, row_index: int, model_version: str, true_label: str | int | float,
                      correct: bool | None, abs_error: float | None) -> int:
        try:
            with self._write_lock, self._capped(self._conn()):
                cur = self._conn().execute(
                    "INSERT INTO labels (request_id, row_index, model_version, true_label, correct, abs_error, ts_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (request_id, row_index, model_version, json.dumps(true_label),
                     None if correct is None else int(correct), abs_error, int(time.time() * 1000)))
            return int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            row = self._conn().execute("SELECT true_label FROM labels WHERE request_id = ? AND row_index = ?",
                                       (request_id, row_index)).fetchone()
            raise LabelExists(json.loads(row[0]) if row else None) from None
        except sqlite3.Error as exc:
            raise SpoolWriteError(f"cannot write the prediction spool: {exc}") from exc

    def claim_labels(self, limit: int, lease_seconds: float = 60.0) -> tuple[str, list[LabelRow]]:
        """Lease open labels, all under one batch id (a lease that ran out is taken back whole)."""
        now = time.time()

        def work(conn: sqlite3.Connection) -> tuple[str, list[Any]]:
            stale = conn.execute(f"SELECT batch_id FROM labels WHERE status = {CLAIMED:d} AND lease_until < ? "
                                 "ORDER BY id LIMIT 1", (now,)).fetchone()
            batch_id = stale[0] if stale else uuid.uuid4().hex
            where = ("batch_id = ?", (batch_id,)) if stale else (
                f"id IN (SELECT id FROM labels WHERE status = {PENDING:d} ORDER BY id LIMIT ?)", (limit,))
            rows = conn.execute(
                f"""UPDATE labels SET status = {CLAIMED:d}, lease_until = ?, attempts = attempts + 1, batch_id = ?
                    WHERE {where[0]} RETURNING id, request_id, row_index, model_version, true_label, correct,
                    abs_error, ts_ms, attempts, batch_id""", (now + lease_seconds, batch_id, *where[1])).fetchall()
            return batch_id, rows

        batch_id, rows = self._transaction(work)
        conn = self._conn()
        out = []
        for lid, rid, idx, version, label, correct, abs_error, ts, attempts, batch in sorted(rows):
            run = conn.execute(f"SELECT run_id FROM predictions WHERE request_id = ? AND role = 'primary' "
                               f"AND row_index = ? AND status = {DONE:d}", (rid, idx)).fetchone()
            out.append(LabelRow(int(lid), str(rid), int(idx), str(version), json.loads(label),
                                None if correct is None else bool(correct), abs_error, int(ts), int(attempts),
                                batch, run[0] if run else None))
        return batch_id, out

    def finish_labels(self, label_ids: Sequence[int], run_id: str | None) -> None:
        """Done (in run ``run_id``), or with None back to pending for a later try."""
        if not label_ids:
            return
        if run_id is None:
            self._update(f"UPDATE labels SET status = {PENDING:d}, lease_until = NULL, batch_id = NULL "
                         f"WHERE id IN ({_marks(label_ids)})", list(label_ids))
        else:
            self._update(f"UPDATE labels SET status = {DONE:d}, run_id = ?, lease_until = NULL "
                         f"WHERE id IN ({_marks(label_ids)})", [run_id, *label_ids])

    def release_labels(self, batch_id: str) -> None:
        """Give a label batch back whole, same batch id, claimable at once (it may be in MLflow)."""
        self._update(f"UPDATE labels SET lease_until = 0 WHERE batch_id = ? AND status = {CLAIMED:d}", [batch_id])

    def oldest_open_label_ts_ms(self) -> int | None:
        row = self._conn().execute(f"SELECT MIN(ts_ms) FROM labels WHERE status != {DONE:d}").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def count_open_labels(self) -> int:
        return int(self._conn().execute(f"SELECT COUNT(*) FROM labels WHERE status != {DONE:d}").fetchone()[0])

    # -- claiming, for exporters ------------------------------------------------------------

    @staticmethod
    def _rows(cursor: Iterable[Sequence[Any]]) -> list[SpoolRow]:
        out = [SpoolRow(id=int(row[0]), attempts=int(row[1]), batch_id=row[2], run_id=row[3], record=_record(row[4:]))
               for row in cursor]
        out.sort(key=lambda r: r.id)
        return out

    def claim(self, limit: int, lease_seconds: float = 60.0) -> list[SpoolRow]:
        """Lease up to ``limit`` open rows (pending, or claimed with an expired lease)."""
        now = time.time()
        raw = self._transaction(lambda conn: conn.execute(
            f"""UPDATE predictions SET status = {CLAIMED:d}, lease_owner = ?, lease_until = ?,
                    attempts = attempts + 1
                WHERE id IN (SELECT id FROM predictions WHERE status != {DONE:d}
                             AND (status = {PENDING:d} OR lease_until < ?) ORDER BY id LIMIT ?)
                RETURNING id, attempts, batch_id, run_id, {_COLS}""",
            (self.owner, now + lease_seconds, now, limit)).fetchall())
        return self._rows(raw)  # parsed after the commit: the write lock is held as briefly as possible

    def claim_window(self, window_seconds: float, max_records: int, lease_seconds: float = 120.0,
                     now: float | None = None) -> tuple[str, list[SpoolRow]] | None:
        """Lease the next closed window: rows of one (model_version, role) from its oldest open row
        up to ``window_seconds`` later, at most ``max_records``. A window is closed once its time
        has passed or it is full. A window whose lease expired is re-claimed whole, same batch id.

        Only the UPDATE runs under the write lock: finding the window is a read (WAL readers block
        no one) and the rows are parsed after the commit, so the request path's writes wait for a
        few milliseconds at most, not for a scan of the backlog."""
        now = time.time() if now is None else now
        conn = self._conn()
        stale = conn.execute(
            f"SELECT batch_id FROM predictions WHERE status = {CLAIMED:d} AND lease_until < ? "
            "AND batch_id IS NOT NULL ORDER BY id LIMIT 1", (now,)).fetchone()
        if stale:
            batch_id = stale[0]
            raw = self._transaction(lambda c: c.execute(
                f"""UPDATE predictions SET lease_owner = ?, lease_until = ?, attempts = attempts + 1
                    WHERE batch_id = ? AND status = {CLAIMED:d} AND lease_until < ?
                    RETURNING id, attempts, batch_id, run_id, {_COLS}""",
                (self.owner, now + lease_seconds, batch_id, now)).fetchall())
            return (batch_id, self._rows(raw)) if raw else None
        heads = conn.execute(
            f"""SELECT model_version, role, MIN(ts_ms), COUNT(*) FROM predictions
                WHERE status = {PENDING:d} GROUP BY model_version, role ORDER BY MIN(id)""").fetchall()
        for version, role, first_ts, count in heads:
            end_ms = first_ts + int(window_seconds * 1000)
            if now * 1000 < end_ms and count < max_records:
                continue  # this window is still open
            batch_id = uuid.uuid4().hex
            raw = self._transaction(lambda c, v=version, r=role, e=end_ms, b=batch_id: c.execute(
                f"""UPDATE predictions SET status = {CLAIMED:d}, lease_owner = ?, lease_until = ?,
                        attempts = attempts + 1, batch_id = ?
                    WHERE id IN (SELECT id FROM predictions WHERE status = {PENDING:d}
                        AND model_version = ? AND role = ? AND ts_ms < ? ORDER BY id LIMIT ?)
                    RETURNING id, attempts, batch_id, run_id, {_COLS}""",
                (self.owner, now + lease_seconds, b, v, r, e, max_records)).fetchall())
            return (batch_id, self._rows(raw)) if raw else None
        return None

    def set_run_id(self, row_ids: Sequence[int], run_id: str) -> None:
        self._update(f"UPDATE predictions SET run_id = ? WHERE id IN ({_marks(row_ids)})", [run_id, *row_ids])

    def mark_done(self, row_ids: Sequence[int], run_id: str | None = None) -> None:
        if not row_ids:
            return
        self._update(
            f"""UPDATE predictions SET status = {DONE:d}, run_id = COALESCE(?, run_id), exported_at = ?,
                lease_owner = NULL, lease_until = NULL WHERE id IN ({_marks(row_ids)})""",
            [run_id, time.time(), *row_ids],
        )

    def release(self, row_ids: Sequence[int], untouched: bool) -> None:
        """Give leased rows back. ``untouched``: no MLflow call was made for them, so the attempt
        does not count and the next exporter need not look for an existing run."""
        if not row_ids:
            return
        dec = ", attempts = MAX(attempts - 1, 0)" if untouched else ""
        self._update(
            f"""UPDATE predictions SET status = {PENDING:d}, lease_owner = NULL, lease_until = NULL{dec}
                WHERE id IN ({_marks(row_ids)}) AND status = {CLAIMED:d}""",
            list(row_ids),
        )

    def release_batch(self, batch_id: str, untouched: bool) -> None:
        """Put a window's rows back under the same batch id, claimable at once."""
        dec = ", attempts = MAX(attempts - 1, 0)" if untouched else ""
        self._update(
            f"UPDATE predictions SET lease_until = 0{dec} WHERE batch_id = ? AND status = {CLAIMED:d}", [batch_id]
        )

    def expire_leases(self) -> None:
        """Every current lease runs out now, as if its exporter had been killed (for tests and tools)."""
        self._update(f"UPDATE predictions SET lease_until = 0 WHERE status = {CLAIMED:d}", [])
        self._update(f"UPDATE labels SET lease_until = 0 WHERE status = {CLAIMED:d}", [])

    def _update(self, sql: str, args: Sequence[object]) -> None:
        with self._write_lock:
            self._conn().execute(sql, list(args))

    def bump_counter(self, name: str, by: int = 1) -> None:
        self._update(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", [name, by]
        )

    # -- housekeeping and state -------------------------------------------------------------

    def prune(self, older_than_seconds: float, chunk: int = 2000) -> int:
        """Delete exported rows older than the retention; they are in MLflow now. In chunks, each its
        own transaction, so that the request path's writes never wait behind one long delete."""
        cutoff = time.time() - older_than_seconds
        total = 0
        while True:
            with self._write_lock:
                cur = self._conn().execute(
                    f"""DELETE FROM predictions WHERE id IN (SELECT id FROM predictions
                        WHERE status = {DONE:d} AND exported_at < ? LIMIT ?)""", (cutoff, chunk))
            total += max(cur.rowcount, 0)
            if cur.rowcount < chunk:
                return total

    def stats(self) -> dict[str, float | int | None]:
        conn = self._conn()
        backlog, oldest = conn.execute(
            f"SELECT COUNT(*), MIN(ts_ms) FROM predictions WHERE status != {DONE:d}").fetchone()
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        lag = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        return {"backlog": int(backlog), "oldest_pending_ts_ms": oldest, "export_lag_seconds": round(lag, 3),
                "labels_backlog": self.count_open_labels(),
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
        return int(self._conn().execute(sql, args).fetchone()[0])

    def high_water(self) -> int:
        """The newest row id: its growth over time is the inbound prediction rate (O(1) to read)."""
        return int(self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM predictions").fetchone()[0])

    def oldest_open_ts_ms(self) -> int | None:
        row = self._conn().execute(
            f"SELECT ts_ms FROM predictions WHERE status != {DONE:d} ORDER BY id LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def count_open(self) -> int:
        return int(self._conn().execute(f"SELECT COUNT(*) FROM predictions WHERE status != {DONE:d}").fetchone()[0])

    def count(self, status: RowState | None = None) -> int:
        if status is None:
            return int(self._conn().execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
        return int(self._conn().execute("SELECT COUNT(*) FROM predictions WHERE status = ?",
                                        (int(status),)).fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _add_columns(conn: sqlite3.Connection) -> None:
    """A spool written before a column existed gets it, with its default, on open."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    for name, definition in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {definition}")


def _marks(ids: Sequence[object]) -> str:
    return ", ".join("?" * len(ids))


_OLD_BOOKKEEPING = {"id", "request_id", "role", "model_version", "class_index", "class_name", "inference_time_ms",
                    "ts_ms", "routing", "config_hash", "weights", "status", "lease_owner", "lease_until",
                    "attempts", "batch_id", "run_id", "exported_at"}


def _migrate_single_row_spool(conn: sqlite3.Connection) -> None:
    """A spool written by the single-model release keeps its unexported records: they move into the
    new table, their feature columns becoming the features object."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'").fetchone():
        return
    columns = [row[1] for row in conn.execute("PRAGMA table_info(records)")]
    features = [c for c in columns if c not in _OLD_BOOKKEEPING]
    weights = "weights" if "weights" in columns else "''"
    rows = conn.execute(f"SELECT request_id, role, model_version, class_index, class_name, inference_time_ms, "
                        f"ts_ms, routing, config_hash, {weights}, {', '.join(features)} FROM records "
                        f"WHERE status != {DONE:d}").fetchall()
    conn.execute("BEGIN IMMEDIATE")
    for r in rows:
        record = PredictionRecord(request_id=r[0], role=r[1], model_version=r[2], class_index=r[3], prediction=r[4],
                                  inference_time_ms=r[5], ts_ms=r[6], routing=r[7], config_hash=r[8], weights=r[9],
                                  features=dict(zip(features, r[10:], strict=True)))
        conn.execute(_INSERT.replace("INSERT", "INSERT OR IGNORE", 1), _values(record))
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone():
        conn.execute(f"""INSERT INTO labels (request_id, model_version, true_label, correct, ts_ms)
                         SELECT f.request_id, COALESCE(r.model_version, ''), json_quote(f.true_label), f.correct,
                                f.ts_ms FROM feedback f LEFT JOIN records r
                         ON r.request_id = f.request_id AND r.role = 'primary' WHERE f.status != {DONE:d}""")
        conn.execute("DROP TABLE feedback")
    conn.execute("DROP TABLE records")
    conn.execute("COMMIT")
