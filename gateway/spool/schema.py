"""The spool's tables, the row states, and what older spools get on open: the per-row table moved
into entries (one per request, its rows packed: packing.py), the single-model release's table too."""

from __future__ import annotations

import logging
import sqlite3
from enum import IntEnum
from pathlib import Path

from gateway.domain.records import PredictionRecord
from gateway.spool.packing import pack
from gateway.spool.rows import ENTRY_COLUMNS, ENTRY_VALUES, INSERT, INSERT_ROWS, entry_values, packed_values

log = logging.getLogger("gateway.spool")


class RowState(IntEnum):
    """A spool row's life (predictions and labels alike): written, leased by an exporter, in MLflow."""

    PENDING = 0
    CLAIMED = 1
    DONE = 2


PENDING, CLAIMED, DONE = RowState.PENDING, RowState.CLAIMED, RowState.DONE
BUMP_COUNTER = ("INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value")

TABLES = f"""
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    role TEXT NOT NULL,
    first_row INTEGER NOT NULL DEFAULT 0,
    n_rows INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    status INTEGER NOT NULL DEFAULT {PENDING:d},
    lease_owner TEXT,
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    run_id TEXT,
    exported_at REAL,
    UNIQUE (request_id, role, first_row)
);
CREATE INDEX IF NOT EXISTS entries_open ON entries (id) WHERE status != {DONE:d};
CREATE INDEX IF NOT EXISTS entries_open_key ON entries (model_version, role, id) WHERE status != {DONE:d};
CREATE INDEX IF NOT EXISTS entries_batch ON entries (batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS entry_rows (
    entry_id INTEGER PRIMARY KEY,
    shared TEXT NOT NULL,
    rows TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS row_runs (
    entry_id INTEGER NOT NULL,
    row_index INTEGER NOT NULL,
    run_id TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (entry_id, row_index)
) WITHOUT ROWID;
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
    run_id TEXT,
    reward REAL,
    trust TEXT,
    counted INTEGER
);
CREATE INDEX IF NOT EXISTS labels_open ON labels (id) WHERE status != {DONE:d};
CREATE INDEX IF NOT EXISTS labels_ts ON labels (ts_ms);
-- The units (sticky user, else request) that have given a version its counted label: one each.
CREATE TABLE IF NOT EXISTS label_units (
    model_version TEXT NOT NULL,
    unit TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    PRIMARY KEY (model_version, unit)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS label_units_ts ON label_units (ts_ms);
-- The spool's own identity (its Delta tables' app id), made once.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Each exported window's place in the sequence of one Delta table's appends from this spool: the
-- app transaction's version, assigned before the append and kept until the next one commits.
CREATE TABLE IF NOT EXISTS table_commits (
    batch_id TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    committed INTEGER NOT NULL DEFAULT 0,
    table_version INTEGER,
    UNIQUE (table_name, seq)
);
-- Labels without a credential ([feedback] untrusted = "record"): kept for the retention, never used.
CREATE TABLE IF NOT EXISTS untrusted_labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    true_label TEXT NOT NULL,
    reward REAL,
    client TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS untrusted_labels_ts ON untrusted_labels (ts_ms);
"""
_LABELS_ONCE = "CREATE UNIQUE INDEX IF NOT EXISTS labels_once ON labels (request_id, row_index);"
# Columns added to the labels table after its first release. Labels stored before credentials existed
# have no trust and are not counted: nobody vouched for them.
_ADDED_LABEL_COLUMNS = {"reward": "REAL", "trust": "TEXT", "counted": "INTEGER"}
# Columns added to the per-row predictions table after its first release, with their definitions.
_ADDED_COLUMNS = {"batch_rows": "INTEGER NOT NULL DEFAULT 1", "request_time_ms": "REAL", "user": "TEXT",
                  "headers": "TEXT NOT NULL DEFAULT ''"}


def create(conn: sqlite3.Connection, path: Path) -> None:
    """The tables, and an older spool brought up to date (run once per open, under the write lock)."""
    conn.executescript(TABLES)
    _migrate_single_row_spool(conn)
    _migrate_row_spool(conn, path)
    have = {row[1] for row in conn.execute("PRAGMA table_info(labels)")}
    for name, definition in _ADDED_LABEL_COLUMNS.items():
        if name not in have:  # labels of older releases: no reward (before bandits), no trust or count
            conn.execute(f"ALTER TABLE labels ADD COLUMN {name} {definition}")
    try:
        conn.execute(_LABELS_ONCE)
    except sqlite3.IntegrityError:  # a spool written before the first-label-wins rule
        log.warning("spool %s holds several labels for one prediction; the first-wins rule applies to "
                    "new labels only", path)


def _add_columns(conn: sqlite3.Connection) -> None:
    """A per-row spool written before a column existed gets it, with its default, before it moves."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    for name, definition in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {definition}")


_ROW_STATE = ("status", "lease_owner", "lease_until", "attempts", "batch_id", "run_id", "exported_at")


def _migrate_row_spool(conn: sqlite3.Connection, path: Path) -> None:
    """A spool of one SQLite row per prediction (before entries) moves into entries, in id order, every
    row with its state: an open one is exported as before (its lease, attempts and run id kept, so a
    run it may already have is found), an exported one stays for retries within the retention."""
    if not _has_table(conn, "predictions"):
        return
    _add_columns(conn)
    from gateway.spool.rows import COLUMNS, record

    total = int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
    log.info("spool %s: moving %d per-row prediction records into entries (once)", path, total)
    cursor = conn.execute(f"SELECT {', '.join(_ROW_STATE)}, {COLUMNS} FROM predictions ORDER BY id")
    moved = 0
    conn.execute("BEGIN IMMEDIATE")
    while chunk := cursor.fetchmany(5000):
        for row in chunk:
            state, rec = row[:len(_ROW_STATE)], record(row[len(_ROW_STATE):])
            (entry,) = pack([rec])
            cur = conn.execute(f"INSERT OR IGNORE INTO entries ({ENTRY_COLUMNS}, {', '.join(_ROW_STATE)}) "
                               f"VALUES ({', '.join('?' * (len(ENTRY_VALUES) + len(_ROW_STATE)))})",
                               [*entry_values(entry), *state])
            if cur.rowcount:
                conn.execute(INSERT_ROWS, [cur.lastrowid, *packed_values(entry)])
                moved += 1
    conn.execute("DROP TABLE predictions")
    conn.execute("COMMIT")
    log.info("spool %s: %d per-row prediction records moved into entries", path, moved)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


_OLD_BOOKKEEPING = {"id", "request_id", "role", "model_version", "class_index", "class_name", "inference_time_ms",
                    "ts_ms", "routing", "config_hash", "weights", "status", "lease_owner", "lease_until",
                    "attempts", "batch_id", "run_id", "exported_at"}


def _migrate_single_row_spool(conn: sqlite3.Connection) -> None:
    """A spool written by the single-model release keeps its unexported records: they move into the
    new table, their feature columns becoming the features object."""
    if not _has_table(conn, "records"):
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
        (entry,) = pack([record])
        cur = conn.execute(INSERT.replace("INSERT", "INSERT OR IGNORE", 1), entry_values(entry))
        if cur.rowcount:
            conn.execute(INSERT_ROWS, [cur.lastrowid, *packed_values(entry)])
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'feedback'").fetchone():
        conn.execute(f"""INSERT INTO labels (request_id, model_version, true_label, correct, ts_ms)
                         SELECT f.request_id, COALESCE(r.model_version, ''), json_quote(f.true_label), f.correct,
                                f.ts_ms FROM feedback f LEFT JOIN records r
                         ON r.request_id = f.request_id AND r.role = 'primary' WHERE f.status != {DONE:d}""")
        conn.execute("DROP TABLE feedback")
    conn.execute("DROP TABLE records")
    conn.execute("COMMIT")
