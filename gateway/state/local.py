"""The routing in force, kept durably on this machine and shared by every worker process.

One SQLite file (``routing.db`` in the spool directory) holds one row: the routing config, a version
that grows by one per change, who made the change and when, and the hash of the config file's routing
that was last applied. A change is a read-modify-write inside one ``BEGIN IMMEDIATE`` transaction, so
two workers changing different keys at the same moment both land, in some order. Every worker polls
the version (a one-row read) and installs a newer config; a restart resumes the stored config unless
the config file's routing changed since it was last applied.

Framework-free; the rollout controller keeps its own state in the same file (local_rollout.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.routing.store import StoredRouting, Update
from gateway.spool.sqlite import SqliteFile
from gateway.state.documents import decode_routing

FILE_NAME = "routing.db"


class RoutingStateStore:
    poll_interval_s = 0.25  # a one-row read of a local file

    def __init__(self, shared: SqliteFile) -> None:
        self.shared = shared
        with shared.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS routing_state (id INTEGER PRIMARY KEY CHECK (id = 1), "
                       "version INTEGER NOT NULL, config TEXT NOT NULL, source TEXT NOT NULL, "
                       "changed_at REAL NOT NULL, file_hash TEXT NOT NULL)")

    @property
    def location(self) -> str:
        return str(self.shared.path)

    def poll(self) -> None:
        """Nothing to fetch: version() and load() read the file."""

    def status(self) -> dict[str, Any]:
        return {"backend": "local", "location": self.location, "reachable": True}

    def version(self) -> int:
        rows = self.shared.read("SELECT version FROM routing_state WHERE id = 1")
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]

    def offline_start(self) -> StoredRouting | None:
        return None  # a local file is always reachable

    def load(self) -> StoredRouting | None:
        rows = self.shared.read("SELECT version, config, source, changed_at, file_hash FROM routing_state WHERE id = 1")
        return _stored(rows[0]) if rows else None

    def update(self, update: Update) -> StoredRouting | None:
        """Apply ``update`` to what is stored, atomically across processes. Returns the new state, or
        the stored one when ``update`` returns None (no change)."""
        with self.shared.transaction() as db:
            rows = db.execute("SELECT version, config, source, changed_at, file_hash FROM routing_state "
                              "WHERE id = 1").fetchall()
            current = _stored(rows[0]) if rows else None
            change = update(current)
            if change is None:
                return current
            config, source, file_hash = change
            new = StoredRouting((current.version if current else 0) + 1, config, source, time.time(), file_hash)
            db.execute("INSERT INTO routing_state (id, version, config, source, changed_at, file_hash) "
                       "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                       "config = excluded.config, source = excluded.source, changed_at = excluded.changed_at, "
                       "file_hash = excluded.file_hash",
                       (new.version, json.dumps(config.model_dump(mode="json")), source, new.changed_at, file_hash))
            return new


def _stored(row: tuple[object, ...]) -> StoredRouting:
    version, config, source, changed_at, file_hash = row
    return decode_routing(int(version), {"config": json.loads(str(config)), "source": source,  # type: ignore[call-overload]
                                         "changed_at": changed_at, "file_hash": file_hash})
