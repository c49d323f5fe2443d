"""Ground-truth labels in the spool, waiting for the exporter: the first label of a prediction wins,
and a label for a prediction another replica answered is kept to be joined in MLflow.

Each label records who vouched for it (``trust``) and whether it counts for its randomisation unit:
only the first label a unit (the sticky user, else the request) gives a version counts, so that one
request of a thousand rows, or one user, weighs as one unit in the bandit and the guardrails. Labels
without a credential ([feedback] untrusted = "record") wait in a table of their own, never exported."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.records import PredictionRecord, Role
from gateway.spool.schema import BUMP_COUNTER, CLAIMED, DONE, PENDING
from gateway.spool.sqlite import SpoolWriteError, SqliteFile, marks

REMOTE_VARIANT = ""  # a label's model_version when another replica answered the prediction


# The MLflow run of an exported primary prediction (request id, row index): its entry's run, or its own
# when its entry's rows were exported one run each.
_PREDICTION_RUN = f"""SELECT CASE WHEN e.status = {DONE:d} THEN COALESCE(r.run_id, e.run_id)
                                 WHEN r.done = 1 THEN r.run_id END
                      FROM entries e LEFT JOIN row_runs r ON r.entry_id = e.id AND r.row_index = ?
                      WHERE e.request_id = ? AND e.role = '{Role.PRIMARY}' AND e.first_row <= ?
                      AND ? < e.first_row + e.n_rows"""


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
    reward: float | None = None  # /feedback's numeric reward, for a bandit with reward = "feedback"
    trust: str | None = None  # a Trust value; None for labels stored before credentials existed

    @property
    def remote(self) -> bool:
        """Its prediction was answered by another replica: joined, and judged, in MLflow."""
        return self.model_version == REMOTE_VARIANT


class LabelExists(Exception):
    """A true label was stored for this prediction already (the first label wins); ``existing`` is it,
    ``reward`` its reward."""

    def __init__(self, existing: str | int | float, reward: float | None = None) -> None:
        super().__init__(f"a true label ({existing!r}) was stored for this prediction already")
        self.existing = existing
        self.reward = reward


class LabelTable:
    def __init__(self, db: SqliteFile) -> None:
        self.db = db

    def append(self, record: PredictionRecord, true_label: str | int | float, correct: bool | None,
               abs_error: float | None, reward: float | None = None, *, trust: str, unit: str) -> bool:
        """Commit a true label for an answered prediction; the exporter takes it to MLflow. The first
        label of a prediction wins: another one raises LabelExists with the stored label. Returns
        whether it counts: the first label ``unit`` gave this version."""
        return self._insert(record.request_id, record.row_index, record.model_version, true_label, correct, abs_error,
                            reward, trust, unit)

    def append_remote(self, request_id: str, row_index: int, true_label: str | int | float,
                      reward: float | None = None, *, trust: str) -> None:
        """A true label for a prediction another replica answered: the exporter joins it to that
        prediction in MLflow (and works out whether it was right there); its unit is counted there."""
        self._insert(request_id, row_index, REMOTE_VARIANT, true_label, None, None, reward, trust, None)

    def append_untrusted(self, request_id: str, row_index: int, true_label: str | int | float,
                         reward: float | None, client: str) -> None:
        """A label nobody vouched for: kept for the retention, never exported or used."""
        try:
            with self.db.adding() as conn:
                conn.execute("INSERT INTO untrusted_labels (request_id, row_index, true_label, reward, client, ts_ms) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (request_id, row_index, json.dumps(true_label), reward,
                                                           client[:64], int(time.time() * 1000)))
        except sqlite3.Error as exc:
            raise SpoolWriteError(f"cannot write the prediction spool: {exc}") from exc

    def _insert(self, request_id: str, row_index: int, model_version: str, true_label: str | int | float,
                correct: bool | None, abs_error: float | None, reward: float | None, trust: str,
                unit: str | None) -> bool:
        now = int(time.time() * 1000)
        try:
            with self.db.adding() as conn:
                counted = unit is not None and conn.execute(
                    "INSERT OR IGNORE INTO label_units (model_version, unit, ts_ms) VALUES (?, ?, ?)",
                    (model_version, unit, now)).rowcount == 1
                conn.execute(
                    "INSERT INTO labels (request_id, row_index, model_version, true_label, correct, abs_error, ts_ms, "
                    "reward, trust, counted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (request_id, row_index, model_version, json.dumps(true_label),
                     None if correct is None else int(correct), abs_error, now, reward, trust,
                     None if unit is None else int(counted)))
            return counted
        except sqlite3.IntegrityError:  # the labels_once index: the unit's insert was rolled back with it
            row = self.db.connection().execute("SELECT true_label, reward FROM labels WHERE request_id = ? "
                                               "AND row_index = ?", (request_id, row_index)).fetchone()
            raise LabelExists(json.loads(row[0]) if row else None, row[1] if row else None) from None
        except sqlite3.Error as exc:
            raise SpoolWriteError(f"cannot write the prediction spool: {exc}") from exc

    def claim(self, limit: int, lease_seconds: float = 60.0, batch: str | None = None) -> tuple[str, list[LabelRow]]:
        """Lease open labels, all under one batch id (a lease that ran out is taken back whole). With
        ``batch``: that batch only, if its lease ran out (none while another exporter holds it)."""
        now = time.time()
        with self.db.transaction() as conn:
            stale = conn.execute(f"SELECT batch_id FROM labels WHERE status = {CLAIMED:d} AND lease_until < ? "
                                 + ("AND batch_id = ? " if batch is not None else "") + "ORDER BY id LIMIT 1",
                                 (now, batch) if batch is not None else (now,)).fetchone()
            if batch is not None and stale is None:
                return batch, []
            batch_id = stale[0] if stale else uuid.uuid4().hex
            where: tuple[str, tuple[Any, ...]] = ("batch_id = ?", (batch_id,)) if stale else (
                f"id IN (SELECT id FROM labels WHERE status = {PENDING:d} ORDER BY id LIMIT ?)", (limit,))
            rows = conn.execute(
                f"""UPDATE labels SET status = {CLAIMED:d}, lease_until = ?, attempts = attempts + 1, batch_id = ?
                    WHERE {where[0]} RETURNING id, request_id, row_index, model_version, true_label, correct,
                    abs_error, ts_ms, attempts, batch_id, reward, trust""",
                (now + lease_seconds, batch_id, *where[1])).fetchall()
        conn = self.db.connection()
        out = []
        for lid, rid, idx, version, label, correct, abs_error, ts, attempts, batch, reward, trust in sorted(rows):
            run = conn.execute(_PREDICTION_RUN, (idx, rid, idx, idx)).fetchone()
            out.append(LabelRow(int(lid), str(rid), int(idx), str(version), json.loads(label),
                                None if correct is None else bool(correct), abs_error, int(ts), int(attempts),
                                batch, run[0] if run and run[0] else None, reward, trust))
        return batch_id, out

    def finish(self, label_ids: Sequence[int], run_id: str | None) -> None:
        """Done (in run ``run_id``), or with None back to pending for a later try."""
        if not label_ids:
            return
        if run_id is None:
            self.db.write(f"UPDATE labels SET status = {PENDING:d}, lease_until = NULL, batch_id = NULL "
                          f"WHERE id IN ({marks(label_ids)})", list(label_ids))
        else:
            self.db.write(f"UPDATE labels SET status = {DONE:d}, run_id = ?, lease_until = NULL "
                          f"WHERE id IN ({marks(label_ids)})", [run_id, *label_ids])

    def holds_open(self, batch_id: str) -> bool:
        """Whether label batch ``batch_id`` still holds a label that is not exported."""
        return bool(self.db.read(f"SELECT 1 FROM labels WHERE batch_id = ? AND status != {DONE:d} LIMIT 1",
                                 [batch_id]))

    def release(self, batch_id: str) -> None:
        """Give a label batch back whole, same batch id, claimable at once (it may be in MLflow)."""
        self.db.write(f"UPDATE labels SET lease_until = 0 WHERE batch_id = ? AND status = {CLAIMED:d}", [batch_id])

    def oldest_open_ts_ms(self) -> int | None:
        row = self.db.connection().execute(f"SELECT MIN(ts_ms) FROM labels WHERE status != {DONE:d}").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def prune(self, older_than_seconds: float) -> dict[str, int]:
        """Forget what is older than the retention: exported labels, the units that counted, untrusted
        labels, and remote labels whose prediction never reached MLflow (counted as given up)."""
        cutoff = int((time.time() - older_than_seconds) * 1000)
        with self.db.transaction() as conn:
            unjoined = conn.execute(f"DELETE FROM labels WHERE ts_ms < ? AND status != {DONE:d} AND model_version = ?",
                                    (cutoff, REMOTE_VARIANT)).rowcount
            done = conn.execute(f"DELETE FROM labels WHERE ts_ms < ? AND status = {DONE:d}", (cutoff,)).rowcount
            conn.execute("DELETE FROM label_units WHERE ts_ms < ?", (cutoff,))
            untrusted = conn.execute("DELETE FROM untrusted_labels WHERE ts_ms < ?", (cutoff,)).rowcount
            if unjoined:
                conn.execute(BUMP_COUNTER, ("labels_unjoined", unjoined))
        return {"labels": done, "unjoined": unjoined, "untrusted": untrusted}

    def count_untrusted(self) -> int:
        return int(self.db.connection().execute("SELECT COUNT(*) FROM untrusted_labels").fetchone()[0])

    def count_open(self) -> int:
        return int(self.db.connection().execute(f"SELECT COUNT(*) FROM labels WHERE status != {DONE:d}").fetchone()[0])
