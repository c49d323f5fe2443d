"""One SQLite file in WAL mode, shared by a process's threads (a connection each) and by several
processes: short ``BEGIN IMMEDIATE`` write transactions, reads that block no one, an optional size
cap, and a check that the file is still the one opened. The prediction spool and the local routing
state both live in such a file."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger("gateway.spool")


class SpoolWriteError(Exception):
    """The file could not commit a write (disk full, read-only file system, locked too long, replaced)."""


def marks(ids: Sequence[object]) -> str:
    """``?, ?, ?``: the placeholders of an ``IN (...)`` list."""
    return ", ".join("?" * len(ids))


def _free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class SqliteFile:
    def __init__(self, path: Path, *, fsync: str = "normal", busy_timeout_ms: int = 5000,
                 max_bytes: int | None = None, min_free_bytes: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fsync = fsync
        self._busy_timeout_ms = busy_timeout_ms
        self._max_bytes = max_bytes
        self._min_free_bytes = min_free_bytes
        self._truncated_at = 0.0
        self._cap_pages = 0
        self._local = threading.local()
        self._write_lock = threading.Lock()  # one writer per process at a time; SQLite's lock between them
        self._identity: tuple[int, int] | None = None
        self.connection()
        self._identity = _identity(path)
        self.problem: str | None = None

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._identity is not None and self.check_file():
                raise SpoolWriteError("the spool file was deleted or replaced; restart the gateway")
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._fsync == 'full' else 'NORMAL'}")
            if self._max_bytes:
                # A size cap: past it SQLite answers SQLITE_FULL, exactly as on a full disk. It holds for
                # new records (see adding); bookkeeping gets headroom above it, or a full spool could not
                # even mark its rows exported and would stay full.
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                # At least room for the schema itself (about 12 pages), or the spool could not open.
                self._cap_pages = max(16, self._max_bytes // page)
                conn.execute(f"PRAGMA max_page_count = {self._headroom_pages}")
            self._local.conn = conn
        return conn

    @property
    def _headroom_pages(self) -> int:
        return self._cap_pages + max(64, self._cap_pages // 4)

    def check_file(self) -> str | None:
        """None while the file is the one opened at start; otherwise what happened to it. A deleted or
        replaced file would silently swallow every write after it (into an unlinked inode), and new
        connections would open an empty database: both are refused instead."""
        if self.problem is None and _identity(self.path) != self._identity:
            self.problem = (f"the spool file {self.path} was deleted or replaced while the gateway ran; "
                            "predictions are refused until the gateway is restarted (unexported records "
                            "written before that are still in the old file's open handle until then)")
            log.critical("%s", self.problem)
        return self.problem

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); an exception rolls it back."""
        with self._write_lock:
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection under the process's write lock, in autocommit (a script that
        manages its own transactions, such as a schema migration)."""
        with self._write_lock:
            yield self.connection()

    def write(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
        """One statement, committed on its own."""
        with self._write_lock:
            return self.connection().execute(sql, list(args))

    def read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        return self.connection().execute(sql, list(args)).fetchall()

    def room_problem(self, conn: sqlite3.Connection) -> str | None:
        """Why new records must wait: the disk has less than ``min_free_bytes`` free. The file's own
        free pages (exported rows pruned) count as free. Short of room, the write-ahead log is
        checkpointed and truncated (at most once a second): its file keeps its peak size on disk
        otherwise, though its frames were copied long ago. None when records fit."""
        if not self._min_free_bytes:
            return None
        free = _free_bytes(self.path.parent)
        if free >= self._min_free_bytes:
            return None
        page_size, free_pages = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "freelist_count"))
        if free + page_size * free_pages >= self._min_free_bytes:
            return None
        now = time.monotonic()
        if now - self._truncated_at >= 1.0:
            self._truncated_at = now
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:  # a reader in the way, or no room to copy: the next try
                log.debug("spool log not truncated: %s", exc)
            free = _free_bytes(self.path.parent)
            if free + page_size * free_pages >= self._min_free_bytes:
                return None
        return (f"database or disk is full: {free / 2**20:.1f} MB left on the spool's disk, under [spool] "
                f"min_free_mb = {self._min_free_bytes / 2**20:g} (kept for the exporter to drain it)")

    @contextlib.contextmanager
    def adding(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that adds records (predictions, labels): they must leave the disk's
        reserve (``min_free_bytes``) to bookkeeping, and fit under the size cap itself. An exporter
        on a full disk could not even mark its rows exported, and the spool would stay full. Either
        limit raises sqlite3.OperationalError "database or disk is full", as SQLite's own SQLITE_FULL."""
        with self._write_lock:  # outside the transaction: the room check may checkpoint the log
            problem = self.room_problem(self.connection())
        if problem is not None:
            raise sqlite3.OperationalError(problem)
        with self.transaction() as conn, self._capped(conn):
            yield conn

    @contextlib.contextmanager
    def _capped(self, conn: sqlite3.Connection) -> Iterator[None]:
        if not self._max_bytes:
            yield
            return
        conn.execute(f"PRAGMA max_page_count = {self._cap_pages}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA max_page_count = {self._headroom_pages}")

    def leave_checkpoints(self) -> None:
        """This thread's commits no longer copy the WAL back into the database when it grows past
        1,000 pages (SQLite's automatic checkpoint, an fsync of a few ms on some commit in a few
        hundred); ``checkpoint`` does it instead, from another thread."""
        conn = self.connection()
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # the WAL file shrinks back to 64 MB after a reset

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database without blocking writers (PASSIVE)."""
        self.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def limit_waits(self, busy_timeout_ms: float) -> None:
        """How long this thread's writes wait for a lock held elsewhere before they fail (the request
        path's writer waits no longer than its requests may)."""
        self.connection().execute(f"PRAGMA busy_timeout = {max(1, int(busy_timeout_ms))}")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
