"""A durable local log of predictions, written before each response, drained by the exporter.

SQLite in WAL mode: one row per prediction and role. A row is *pending*, then *claimed* by an
exporter under a time-limited lease, then *done* with the MLflow run id. A lease that runs out (its
exporter was killed) makes the row claimable again, and ``attempts`` tells the next exporter that
a run may already exist in MLflow. Several processes may share one spool file: claims happen inside
``BEGIN IMMEDIATE`` transactions, so two exporters never hold the same row at once.

Durability: a row is committed before ``append`` returns. With ``synchronous=NORMAL`` a commit
survives the death of the process (SIGKILL, OOM kill); ``fsync = "full"`` also survives power loss.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

PENDING, CLAIMED, DONE = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    role TEXT NOT NULL,
    model_version TEXT NOT NULL,
    sepal_length REAL NOT NULL,
    sepal_width REAL NOT NULL,
    petal_length REAL NOT NULL,
    petal_width REAL NOT NULL,
    class_index INTEGER NOT NULL,
    class_name TEXT NOT NULL,
    inference_time_ms REAL NOT NULL,
    ts_ms INTEGER NOT NULL,
    routing TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    weights TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    run_id TEXT,
    exported_at REAL,
    UNIQUE (request_id, role)
);
CREATE INDEX IF NOT EXISTS records_open ON records (id) WHERE status < 2;
CREATE INDEX IF NOT EXISTS records_open_key ON records (model_version, role, id) WHERE status < 2;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    true_label TEXT NOT NULL,
    correct INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_open ON feedback (id) WHERE status < 2;
"""


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """What one answered (or shadow-scored) prediction leaves behind."""

    request_id: str
    role: str  # "primary" | "shadow"
    model_version: str
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float
    class_index: int
    class_name: str
    inference_time_ms: float
    ts_ms: int
    routing: str
    config_hash: str
    weights: str = ""  # the normalised weights in force, "v1.0=0.7,v2.0=0.3", for the SRM check

    def features(self) -> tuple[float, float, float, float]:
        return (self.sepal_length, self.sepal_width, self.petal_length, self.petal_width)


_RECORD_COLUMNS = tuple(f.name for f in fields(PredictionRecord))


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """A record as the exporter sees it: with its row id, attempt count and any known run id."""

    id: int
    record: PredictionRecord
    attempts: int
    batch_id: str | None
    run_id: str | None


class SpoolWriteError(Exception):
    """The spool could not commit a record (disk full, read-only file system, locked too long)."""


class DuplicateRequest(Exception):
    """A record with this (request_id, role) exists already; ``existing`` is what was recorded."""

    def __init__(self, existing: PredictionRecord) -> None:
        super().__init__(f"request {existing.request_id} ({existing.role}) is already recorded")
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
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        with self._write_lock:
            conn.executescript(_SCHEMA)
            # A spool written by an older release lacks later columns; add them in place.
            have = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
            if "weights" not in have:
                conn.execute("ALTER TABLE records ADD COLUMN weights TEXT NOT NULL DEFAULT ''")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._fsync == 'full' else 'NORMAL'}")
            if self._max_bytes:
                # A size cap: past it SQLite answers SQLITE_FULL, exactly as on a full disk.
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                # At least room for the schema itself (about 12 pages), or the spool could not open.
                conn.execute(f"PRAGMA max_page_count = {max(16, self._max_bytes // page)}")
            self._local.conn = conn
        return conn

    # -- writing, on the request path ------------------------------------------------------

    def append(self, record: PredictionRecord) -> int:
        """Commit one record durably; return its row id. Raise DuplicateRequest or SpoolWriteError."""
        values = [getattr(record, c) for c in _RECORD_COLUMNS]
        sql = f"INSERT INTO records ({', '.join(_RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(values))})"
        try:
            with self._write_lock:
                cur = self._conn().execute(sql, values)
            return int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            existing = self.find(record.request_id, record.role)
            if existing is None:  # pragma: no cover - the row vanished between insert and read
                raise SpoolWriteError("spool integrity error without a conflicting row") from None
            raise DuplicateRequest(existing) from None
        except sqlite3.Error as exc:
            raise SpoolWriteError(f"cannot write the prediction spool {self.path}: {exc}") from exc

    def find(self, request_id: str, role: str = "primary") -> PredictionRecord | None:
        row = self._conn().execute(
            f"SELECT {', '.join(_RECORD_COLUMNS)} FROM records WHERE request_id = ? AND role = ?",
            (request_id, role),
        ).fetchone()
        return PredictionRecord(*row) if row else None

    # -- ground-truth feedback ----------------------------------------------------------------

    def append_feedback(self, request_id: str, true_label: str, correct: bool) -> int:
        """Commit a true label for an answered prediction; the exporter joins it to the run."""
        try:
            with self._write_lock:
                cur = self._conn().execute(
                    "INSERT INTO feedback (request_id, true_label, correct, ts_ms) VALUES (?, ?, ?, ?)",
                    (request_id, true_label, int(correct), int(time.time() * 1000)))
            return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise SpoolWriteError(f"cannot write the prediction spool {self.path}: {exc}") from exc

    def claim_feedback(self, limit: int, lease_seconds: float = 60.0) -> list[tuple[int, str, str, bool, str | None]]:
        """Lease open feedback rows: (id, request_id, true_label, correct, run id of the prediction if
        exported and still in the spool)."""
        now = time.time()
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    f"""UPDATE feedback SET status = {CLAIMED}, lease_until = ?, attempts = attempts + 1
                        WHERE id IN (SELECT id FROM feedback WHERE status < 2
                                     AND (status = {PENDING} OR lease_until < ?) ORDER BY id LIMIT ?)
                        RETURNING id, request_id, true_label, correct""",
                    (now + lease_seconds, now, limit)).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        out = []
        for fid, rid, label, correct in sorted(rows):
            run = conn.execute(f"SELECT run_id FROM records WHERE request_id = ? AND role = 'primary' "
                               f"AND status = {DONE}", (rid,)).fetchone()
            out.append((int(fid), str(rid), str(label), bool(correct), run[0] if run else None))
        return out

    def finish_feedback(self, feedback_id: int, run_id: str | None) -> None:
        """Done (joined to ``run_id``), or with None back to pending for a later try."""
        if run_id is None:
            self._update(f"UPDATE feedback SET status = {PENDING}, lease_until = NULL WHERE id = ?", [feedback_id])
        else:
            self._update(f"UPDATE feedback SET status = {DONE}, run_id = ?, lease_until = NULL WHERE id = ?",
                         [run_id, feedback_id])

    def count_open_feedback(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM feedback WHERE status < 2").fetchone()[0])

    # -- claiming, for exporters ------------------------------------------------------------

    def _rows(self, cursor: Iterable[Sequence[object]]) -> list[SpoolRow]:
        out = []
        for row in cursor:
            rec = PredictionRecord(*row[4:])
            out.append(SpoolRow(id=int(row[0]), attempts=int(row[1]), batch_id=row[2], run_id=row[3],  # type: ignore[arg-type]
                                record=rec))
        out.sort(key=lambda r: r.id)
        return out

    def claim(self, limit: int, lease_seconds: float = 60.0) -> list[SpoolRow]:
        """Lease up to ``limit`` open rows (pending, or claimed with an expired lease)."""
        now = time.time()
        cols = ", ".join(_RECORD_COLUMNS)
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    f"""UPDATE records SET status = {CLAIMED}, lease_owner = ?, lease_until = ?,
                            attempts = attempts + 1
                        WHERE id IN (SELECT id FROM records WHERE status < 2
                                     AND (status = {PENDING} OR lease_until < ?) ORDER BY id LIMIT ?)
                        RETURNING id, attempts, batch_id, run_id, {cols}""",
                    (self.owner, now + lease_seconds, now, limit),
                )
                rows = self._rows(cur.fetchall())
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return rows

    def claim_window(self, window_seconds: float, max_records: int, lease_seconds: float = 120.0,
                     now: float | None = None) -> tuple[str, list[SpoolRow]] | None:
        """Lease the next closed window: rows of one (model_version, role) from its oldest open row
        up to ``window_seconds`` later, at most ``max_records``. A window is closed once its time
        has passed or it is full. A window whose lease expired is re-claimed whole, same batch id."""
        now = time.time() if now is None else now
        cols = ", ".join(_RECORD_COLUMNS)
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                stale = conn.execute(
                    f"SELECT batch_id FROM records WHERE status = {CLAIMED} AND lease_until < ? "
                    "AND batch_id IS NOT NULL ORDER BY id LIMIT 1", (now,)
                ).fetchone()
                if stale:
                    batch_id = stale[0]
                    cur = conn.execute(
                        f"""UPDATE records SET lease_owner = ?, lease_until = ?, attempts = attempts + 1
                            WHERE batch_id = ? AND status = {CLAIMED}
                            RETURNING id, attempts, batch_id, run_id, {cols}""",
                        (self.owner, now + lease_seconds, batch_id),
                    )
                    rows = self._rows(cur.fetchall())
                    conn.execute("COMMIT")
                    return batch_id, rows
                heads = conn.execute(
                    f"""SELECT model_version, role, MIN(ts_ms), COUNT(*) FROM records
                        WHERE status = {PENDING} GROUP BY model_version, role ORDER BY MIN(id)"""
                ).fetchall()
                for version, role, first_ts, count in heads:
                    end_ms = first_ts + int(window_seconds * 1000)
                    if now * 1000 < end_ms and count < max_records:
                        continue  # this window is still open
                    batch_id = uuid.uuid4().hex
                    cur = conn.execute(
                        f"""UPDATE records SET status = {CLAIMED}, lease_owner = ?, lease_until = ?,
                                attempts = attempts + 1, batch_id = ?
                            WHERE id IN (SELECT id FROM records WHERE status = {PENDING}
                                AND model_version = ? AND role = ? AND ts_ms < ? ORDER BY id LIMIT ?)
                            RETURNING id, attempts, batch_id, run_id, {cols}""",
                        (self.owner, now + lease_seconds, batch_id, version, role, end_ms, max_records),
                    )
                    rows = self._rows(cur.fetchall())
                    conn.execute("COMMIT")
                    return batch_id, rows
                conn.execute("COMMIT")
                return None
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def set_run_id(self, row_ids: Sequence[int], run_id: str) -> None:
        self._update(f"UPDATE records SET run_id = ? WHERE id IN ({_marks(row_ids)})", [run_id, *row_ids])

    def mark_done(self, row_ids: Sequence[int], run_id: str | None = None) -> None:
        if not row_ids:
            return
        self._update(
            f"""UPDATE records SET status = {DONE}, run_id = COALESCE(?, run_id), exported_at = ?,
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
            f"""UPDATE records SET status = {PENDING}, lease_owner = NULL, lease_until = NULL{dec}
                WHERE id IN ({_marks(row_ids)}) AND status = {CLAIMED}""",
            list(row_ids),
        )

    def release_batch(self, batch_id: str, untouched: bool) -> None:
        """Put a window's rows back under the same batch id, claimable at once."""
        dec = ", attempts = MAX(attempts - 1, 0)" if untouched else ""
        self._update(
            f"UPDATE records SET lease_until = 0{dec} WHERE batch_id = ? AND status = {CLAIMED}", [batch_id]
        )

    def _update(self, sql: str, args: Sequence[object]) -> None:
        with self._write_lock:
            self._conn().execute(sql, list(args))

    def bump_counter(self, name: str, by: int = 1) -> None:
        self._update(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", [name, by]
        )

    # -- housekeeping and state -------------------------------------------------------------

    def prune(self, older_than_seconds: float) -> int:
        """Delete exported rows older than the retention; they are in MLflow now."""
        cutoff = time.time() - older_than_seconds
        with self._write_lock:
            cur = self._conn().execute(
                f"DELETE FROM records WHERE status = {DONE} AND exported_at < ?", (cutoff,)
            )
        return cur.rowcount

    def stats(self) -> dict[str, float | int | None]:
        conn = self._conn()
        backlog, oldest = conn.execute(
            "SELECT COUNT(*), MIN(ts_ms) FROM records WHERE status < 2"
        ).fetchone()
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        lag = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        return {"backlog": int(backlog), "oldest_pending_ts_ms": oldest, "export_lag_seconds": round(lag, 3),
                **{f"total_{k}": int(v) for k, v in counters.items()}}

    def high_water(self) -> int:
        """The newest row id: its growth over time is the inbound prediction rate (O(1) to read)."""
        return int(self._conn().execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0])

    def oldest_open_ts_ms(self) -> int | None:
        row = self._conn().execute("SELECT ts_ms FROM records WHERE status < 2 ORDER BY id LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def count_open(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM records WHERE status < 2").fetchone()[0])

    def count(self, status: int | None = None) -> int:
        if status is None:
            return int(self._conn().execute("SELECT COUNT(*) FROM records").fetchone()[0])
        return int(self._conn().execute("SELECT COUNT(*) FROM records WHERE status = ?", (status,)).fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _marks(ids: Sequence[object]) -> str:
    return ", ".join("?" * len(ids))


def record_dict(record: PredictionRecord) -> dict[str, object]:
    return asdict(record)
