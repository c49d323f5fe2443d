"""A durable outbox for what a routing change owes MLflow: the champion alias move after a
promotion, and each change's run in the routing-changes experiment.

The change itself is local and in force at once; what MLflow must learn of it is written here first
(``<spool dir>/outbox.sqlite3``, committed before the admin call answers) and sent by one sender at
a time, oldest first, until MLflow has it (gateway/routing/sender.py). A sender that dies gives its
item back (its pid is gone) or its lease runs out; ``attempts`` then tells the next one that the
first try may have landed, so it looks before it writes again. Framework-free, no MLflow here.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.spool.queue import owner_alive
from gateway.spool.schema import RowState
from gateway.spool.sqlite import SqliteFile

FILE_NAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,           -- the item's own id: tagged on what it creates in MLflow
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,              -- JSON
    summary TEXT NOT NULL,              -- for people: GET /rollout, logs
    status INTEGER NOT NULL DEFAULT 0,  -- a RowState: pending, claimed by a sender, done
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_open ON outbox (status, id);
"""


class ItemKind(StrEnum):
    CHAMPION_ALIAS = "champion_alias"  # payload: variant, model, version
    CHANGE_RUN = "change_run"  # payload: the RoutingChange's fields and at_ms


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    key: str
    kind: ItemKind
    payload: dict[str, Any]
    summary: str
    attempts: int  # before this one


class Outbox:
    def __init__(self, directory: Path | str) -> None:
        self.db = SqliteFile(Path(directory) / FILE_NAME)
        with self.db.locked() as conn:
            conn.executescript(_SCHEMA)
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def add(self, kind: ItemKind, payload: dict[str, Any], summary: str) -> int:
        """Commit one item; the sender takes it from here."""
        cur = self.db.write("INSERT INTO outbox (key, kind, payload, summary, created_at) VALUES (?, ?, ?, ?, ?)",
                            (uuid.uuid4().hex, str(kind), json.dumps(payload, default=str), summary, time.time()))
        return int(cur.lastrowid or 0)

    def claim(self, lease_seconds: float = 300.0, now: float | None = None) -> Item | None:
        """The oldest open item, leased to this process, when it is due and no live sender holds an
        item (one at a time, in order: a later alias move must not land before an earlier one)."""
        now = time.time() if now is None else now
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT id, key, kind, payload, summary, attempts, status, lease_owner, lease_until, "
                               f"next_try_at FROM outbox WHERE status != {RowState.DONE:d} ORDER BY id LIMIT 1"
                               ).fetchone()
            if row is None:
                return None
            item_id, key, kind, payload, summary, attempts, status, owner, lease_until, next_try_at = row
            held = (status == RowState.CLAIMED and lease_until >= now and owner != self.owner
                    and owner_alive(str(owner)))
            if held or next_try_at > now:
                return None
            conn.execute(f"UPDATE outbox SET status = {RowState.CLAIMED:d}, lease_owner = ?, lease_until = ?, "
                         "attempts = attempts + 1 WHERE id = ?", (self.owner, now + lease_seconds, item_id))
        return Item(item_id, key, ItemKind(kind), json.loads(payload), summary, attempts)

    def done(self, item_id: int) -> None:
        self.db.write(f"UPDATE outbox SET status = {RowState.DONE:d}, done_at = ?, lease_owner = NULL, "
                      "last_error = NULL WHERE id = ?", (time.time(), item_id))

    def failed(self, item_id: int, error: str, retry_in_s: float) -> None:
        self.db.write(f"UPDATE outbox SET status = {RowState.PENDING:d}, lease_owner = NULL, lease_until = 0, "
                      "last_error = ?, next_try_at = ? WHERE id = ?", (error[:1000], time.time() + retry_in_s, item_id))

    def is_done(self, item_id: int) -> bool:
        rows = self.db.read("SELECT status FROM outbox WHERE id = ?", (item_id,))
        return bool(rows) and rows[0][0] == RowState.DONE

    def pending(self, limit: int = 50) -> list[dict[str, Any]]:
        """What MLflow has not been told yet, oldest first (GET /rollout, POST /admin/promote)."""
        rows = self.db.read(f"SELECT id, kind, summary, attempts, last_error, created_at FROM outbox "
                            f"WHERE status != {RowState.DONE:d} ORDER BY id LIMIT ?", (limit,))
        return [{"id": i, "kind": k, "what": s, "attempts": a, "last_error": e,
                 "waiting_seconds": round(time.time() - float(c), 1)} for i, k, s, a, e, c in rows]  # type: ignore[arg-type]

    def close(self) -> None:
        self.db.close()
