"""Exactly once into a Delta table: each window gets the next number of its table's sequence before
it is appended, and the append carries that number as Delta's app transaction version (app id: the
spool's identity). The table keeps the highest version committed per app id, so a window retried
after a SIGKILL or a lost answer finds its number already there and is not appended twice.

One rule keeps that sound: a new number is given only once every earlier one of the same table is
committed. The appends of one spool are then in sequence order, and "the table's version for this
app id is at least mine" means "mine is in". A window whose number is pending blocks the next one:
``number`` raises ``CommitPending`` naming it, and the exporter retries that window first (an
expired or dead lease gives it back whole, under the same batch id).
"""

from __future__ import annotations

import uuid

from gateway.spool.schema import DONE
from gateway.spool.sqlite import SqliteFile


class CommitPending(RuntimeError):
    """Another window of this table holds a number that is not committed yet: it goes first."""

    def __init__(self, table: str, batch_id: str, seq: int) -> None:
        super().__init__(f"window {batch_id} holds number {seq} of table {table!r}, not committed yet: "
                         "it goes first")
        self.batch_id, self.seq = batch_id, seq


class TableCommits:
    def __init__(self, db: SqliteFile) -> None:
        self.db = db
        self._spool_id: str | None = None

    def spool_id(self) -> str:
        """This spool's identity, made once and kept in the file (its tables' app id)."""
        if self._spool_id is None:
            with self.db.transaction() as conn:
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('spool_id', ?)", [uuid.uuid4().hex])
                self._spool_id = str(conn.execute("SELECT value FROM meta WHERE key = 'spool_id'").fetchone()[0])
        return self._spool_id

    def number(self, batch_id: str, table: str) -> tuple[int, bool]:
        """(the window's number in ``table``'s sequence, whether it is committed): the one it was given,
        else the next one. CommitPending when another window's number is still uncommitted."""
        with self.db.transaction() as conn:
            mine = conn.execute("SELECT seq, committed FROM table_commits WHERE batch_id = ?", [batch_id]).fetchone()
            if mine is not None:
                return int(mine[0]), bool(mine[1])
            pending = conn.execute("SELECT batch_id, seq FROM table_commits WHERE table_name = ? AND committed = 0 "
                                   "ORDER BY seq LIMIT 1", [table]).fetchone()
            if pending is not None:
                raise CommitPending(table, str(pending[0]), int(pending[1]))
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM table_commits WHERE table_name = ?",
                                   [table]).fetchone()
            seq = int(last) + 1
            conn.execute("INSERT INTO table_commits (batch_id, table_name, seq) VALUES (?, ?, ?)",
                         [batch_id, table, seq])
            return seq, False

    def pending(self, table: str) -> str | None:
        """The window holding ``table``'s uncommitted number, if one does (it goes before any other)."""
        rows = self.db.read("SELECT batch_id FROM table_commits WHERE table_name = ? AND committed = 0 "
                            "ORDER BY seq LIMIT 1", [table])
        return str(rows[0][0]) if rows else None

    def drop(self, batch_id: str) -> None:
        """Forget an uncommitted number whose window holds no open row any more (nothing to append)."""
        self.db.write("DELETE FROM table_commits WHERE batch_id = ? AND committed = 0", [batch_id])

    def committed(self, batch_id: str, table_version: int) -> None:
        """The window's append is in the table (in ``table_version`` or before). Numbers of windows that
        are exported whole (no entry or label of theirs open) and older than this one go: the newest
        stays, for the next number, and so does any window whose MLflow run is still to come."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT table_name, seq FROM table_commits WHERE batch_id = ?", [batch_id]).fetchone()
            if row is None:
                return
            conn.execute("UPDATE table_commits SET committed = 1, table_version = ? WHERE batch_id = ?",
                         [table_version, batch_id])
            conn.execute(f"""DELETE FROM table_commits WHERE table_name = ? AND committed = 1 AND seq < ?
                             AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.batch_id = table_commits.batch_id
                                             AND e.status != {DONE:d})
                             AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.batch_id = table_commits.batch_id
                                             AND l.status != {DONE:d})""", [row[0], row[1]])

    def table_version(self, batch_id: str) -> int | None:
        rows = self.db.read("SELECT table_version FROM table_commits WHERE batch_id = ?", [batch_id])
        return None if not rows or rows[0][0] is None else int(rows[0][0])
