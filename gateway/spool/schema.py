"""The spool's tables, the row states, and what older spools get on open (columns added since, the
single-model release's table moved over)."""

from __future__ import annotations

import logging
import sqlite3
from enum import IntEnum
from pathlib import Path

from gateway.domain.records import PredictionRecord
from gateway.spool.rows import INSERT, values

log = logging.getLogger("gateway.spool")


class RowState(IntEnum):
    """A spool row's life (predictions and labels alike): written, leased by an exporter, in MLflow."""

    PENDING = 0
    CLAIMED = 1
    DONE = 2


PENDING, CLAIMED, DONE = RowState.PENDING, RowState.CLAIMED, RowState.DONE

TABLES = f"""
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
    user TEXT,
    headers TEXT NOT NULL DEFAULT '',
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
# Columns added after the first release of the predictions table, with their definitions.
_ADDED_COLUMNS = {"batch_rows": "INTEGER NOT NULL DEFAULT 1", "request_time_ms": "REAL", "user": "TEXT",
                  "headers": "TEXT NOT NULL DEFAULT ''"}


def create(conn: sqlite3.Connection, path: Path) -> None:
    """The tables, and an older spool brought up to date (run once per open, under the write lock)."""
    conn.executescript(TABLES)
    _add_columns(conn)
    _migrate_single_row_spool(conn)
    try:
        conn.execute(_LABELS_ONCE)
    except sqlite3.IntegrityError:  # a spool written before the first-label-wins rule
        log.warning("spool %s holds several labels for one prediction; the first-wins rule applies to "
                    "new labels only", path)


def _add_columns(conn: sqlite3.Connection) -> None:
    """A spool written before a column existed gets it, with its default, on open."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    for name, definition in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {definition}")


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
        conn.execute(INSERT.replace("INSERT", "INSERT OR IGNORE", 1), values(record))
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone():
        conn.execute(f"""INSERT INTO labels (request_id, model_version, true_label, correct, ts_ms)
                         SELECT f.request_id, COALESCE(r.model_version, ''), json_quote(f.true_label), f.correct,
                                f.ts_ms FROM feedback f LEFT JOIN records r
                         ON r.request_id = f.request_id AND r.role = 'primary' WHERE f.status != {DONE:d}""")
        conn.execute("DROP TABLE feedback")
    conn.execute("DROP TABLE records")
    conn.execute("COMMIT")
