"""The rollout's durable state in the gateway's shared state file (beside the routing state): the
rollout record and each worker's live counts. Every worker reads it; admin commands and the
controller change it in read-modify-write transactions, so a pause arriving through one worker and a
decision taken in another never overwrite each other."""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.rollout.observations import merge_counts
from gateway.rollout.record import Change, RolloutRecord
from gateway.rollout.spec import RolloutSpec, RolloutState
from gateway.spool.sqlite import SqliteFile


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
                       (new.rollout_id, new.spec.model_dump_json(), str(new.state), new.step, new.started_at,
                        new.updated_at, json.dumps(new.history), json.dumps(new.evaluation)))
            return new

    def put_counts(self, rollout_id: str, worker: str, counts: dict[str, Any]) -> None:
        with self.shared.transaction() as db:
            db.execute("INSERT INTO rollout_counts VALUES (?, ?, ?, ?) ON CONFLICT (rollout_id, worker) DO UPDATE "
                       "SET counts = excluded.counts, updated_at = excluded.updated_at",
                       (rollout_id, worker, json.dumps(counts), time.time()))

    def counts(self, rollout_id: str) -> tuple[dict[str, Any], int]:
        """Every worker's counts for the rollout, added up, and how many workers reported."""
        rows = self.shared.read("SELECT counts FROM rollout_counts WHERE rollout_id = ?", (rollout_id,))
        return merge_counts(json.loads(str(r[0])) for r in rows), len(rows)


def _record(row: tuple[object, ...]) -> RolloutRecord:
    rollout_id, spec, state, step, started, updated, history, evaluation = row
    return RolloutRecord(str(rollout_id), RolloutSpec.model_validate_json(str(spec)), RolloutState(str(state)),
                         int(step), float(started), float(updated), json.loads(str(history)),  # type: ignore[arg-type,call-overload]
                         json.loads(str(evaluation)))
