"""The rollout's durable state in the gateway's shared state file (beside the routing state): the
rollout record and each worker's live counts. Every worker reads it; admin commands and the
controller change it in read-modify-write transactions, so a pause arriving through one worker and a
decision taken in another never overwrite each other."""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.rollout.counts import RolloutCounts
from gateway.rollout.record import Change, RolloutRecord
from gateway.spool.sqlite import SqliteFile
from gateway.state.documents import decode_rollout, encode_rollout


class RolloutStore:
    def __init__(self, shared: SqliteFile) -> None:
        self.shared = shared
        with shared.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS rollout (id INTEGER PRIMARY KEY CHECK (id = 1), "
                       "rollout_id TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL, step INTEGER NOT NULL, "
                       "started_at REAL NOT NULL, updated_at REAL NOT NULL, history TEXT NOT NULL, "
                       "evaluation TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS rollout_counts (rollout_id TEXT NOT NULL, worker TEXT NOT NULL, "
                       "counts TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (rollout_id, worker))")

    def load(self) -> RolloutRecord | None:
        rows = self.shared.read("SELECT rollout_id, spec, state, step, started_at, updated_at, history, evaluation "
                                "FROM rollout WHERE id = 1")
        return _record(rows[0]) if rows else None

    def update(self, change: Change) -> RolloutRecord | None:
        """Apply ``change`` to the stored rollout atomically; it returns the new record, or None for no
        change. Exceptions it raises leave everything as it was."""
        with self.shared.transaction() as db:
            rows = db.execute("SELECT rollout_id, spec, state, step, started_at, updated_at, history, evaluation "
                              "FROM rollout WHERE id = 1").fetchall()
            current = _record(rows[0]) if rows else None
            new = change(current)
            if new is None:
                return current
            if current is not None and current.rollout_id != new.rollout_id:
                db.execute("DELETE FROM rollout_counts WHERE rollout_id = ?", (current.rollout_id,))
            db.execute("INSERT INTO rollout VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                       "rollout_id = excluded.rollout_id, spec = excluded.spec, state = excluded.state, "
                       "step = excluded.step, started_at = excluded.started_at, updated_at = excluded.updated_at, "
                       "history = excluded.history, evaluation = excluded.evaluation",
                       _row(encode_rollout(new)))
            return new

    def put_counts(self, rollout_id: str, worker: str, counts: RolloutCounts) -> None:
        with self.shared.transaction() as db:
            db.execute("INSERT INTO rollout_counts VALUES (?, ?, ?, ?) ON CONFLICT (rollout_id, worker) DO UPDATE "
                       "SET counts = excluded.counts, updated_at = excluded.updated_at",
                       (rollout_id, worker, json.dumps(counts.to_dict()), time.time()))

    def counts(self, rollout_id: str) -> tuple[RolloutCounts, int]:
        """Every worker's counts for the rollout, added up, and how many workers reported."""
        rows = self.shared.read("SELECT counts FROM rollout_counts WHERE rollout_id = ?", (rollout_id,))
        return RolloutCounts.merged(RolloutCounts.from_dict(json.loads(str(r[0]))) for r in rows), len(rows)


_COLUMNS = ("rollout_id", "spec", "state", "step", "started_at", "updated_at", "history", "evaluation")
_JSON = {"spec", "history", "evaluation"}


def _row(document: dict[str, Any]) -> tuple[object, ...]:
    return tuple(json.dumps(document[c]) if c in _JSON else document[c] for c in _COLUMNS)


def _record(row: tuple[object, ...]) -> RolloutRecord:
    return decode_rollout({c: json.loads(str(v)) if c in _JSON else v for c, v in zip(_COLUMNS, row, strict=True)})
