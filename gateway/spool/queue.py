"""The export queue over the spool's predictions: exporters lease open rows (one at a time, or a
closed window of one version and role), mark them done with their MLflow run id, or give them back.

A lease that runs out (its exporter was killed) makes its rows claimable again, and ``attempts``
tells the next exporter that a run may already exist in MLflow. Leases are taken inside
``BEGIN IMMEDIATE`` transactions, so two exporters never hold the same row at once."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence

from gateway.spool.rows import LEASED, SpoolRow, leased_rows
from gateway.spool.schema import CLAIMED, DONE, PENDING
from gateway.spool.sqlite import SqliteFile, marks

DEAD_OWNER_CHECK_S = 5.0  # how often the leases of exporters that died are looked for


def owner_alive(owner: str) -> bool:
    """Whether the exporter process that took a lease still runs (owners are "<pid>-<random>"; the
    spool is local, so the pid is this machine's). Unknown or recycled pids count as alive: their
    leases simply run out."""
    pid = owner.partition("-")[0]
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class ExportQueue:
    def __init__(self, db: SqliteFile) -> None:
        self.db = db
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._checked_owners_at = 0.0

    def _free_dead_leases(self, now: float) -> None:
        """Leases held by an exporter that was killed are given back at once, not when they run out
        (a window's lease is 2 minutes: its rows would wait that long after a SIGKILL). Their rows
        keep their attempt count, so the next exporter looks for runs the dead one may have made."""
        if now - self._checked_owners_at < DEAD_OWNER_CHECK_S:
            return
        self._checked_owners_at = now
        owners = [str(o) for (o,) in self.db.read(
            f"SELECT DISTINCT lease_owner FROM predictions WHERE status = {CLAIMED:d} AND lease_until >= ? "
            "AND lease_owner IS NOT NULL", [now])]
        dead = [o for o in owners if o != self.owner and not owner_alive(o)]
        if dead:
            self.db.write(f"UPDATE predictions SET lease_until = 0 WHERE status = {CLAIMED:d} "
                          f"AND lease_owner IN ({marks(dead)})", dead)

    def _lease(self, where: str, args: Sequence[object], lease_seconds: float, now: float,
               batch_id: str | None = None) -> list[SpoolRow]:
        """The one lease: the rows ``where`` selects become this exporter's until ``now`` plus
        ``lease_seconds``, one more attempt each (under ``batch_id`` when given). Only the UPDATE runs
        under the write lock; the rows are parsed after the commit."""
        batch = ", batch_id = ?" if batch_id is not None else ""
        sql = (f"UPDATE predictions SET status = {CLAIMED:d}, lease_owner = ?, lease_until = ?, "
               f"attempts = attempts + 1{batch} WHERE {where} RETURNING {LEASED}")
        params = [self.owner, now + lease_seconds, *([batch_id] if batch_id is not None else []), *args]
        with self.db.transaction() as conn:
            raw = conn.execute(sql, params).fetchall()
        return leased_rows(raw)

    def claim(self, limit: int, lease_seconds: float = 60.0) -> list[SpoolRow]:
        """Lease up to ``limit`` open rows (pending, or claimed with an expired lease)."""
        now = time.time()
        self._free_dead_leases(now)
        return self._lease(f"""id IN (SELECT id FROM predictions WHERE status != {DONE:d}
                               AND (status = {PENDING:d} OR lease_until < ?) ORDER BY id LIMIT ?)""",
                           (now, limit), lease_seconds, now)

    def claim_window(self, window_seconds: float, max_records: int, lease_seconds: float = 120.0,
                     now: float | None = None) -> tuple[str, list[SpoolRow]] | None:
        """Lease the next closed window: rows of one (model_version, role) from its oldest open row
        up to ``window_seconds`` later, at most ``max_records``. A window is closed once its time
        has passed or it is full. A window whose lease expired is re-claimed whole, same batch id.

        Finding the window is a read (WAL readers block no one), so the request path's writes wait
        for a few milliseconds at most, not for a scan of the backlog."""
        now = time.time() if now is None else now
        self._free_dead_leases(time.time())
        conn = self.db.connection()
        stale = conn.execute(
            f"SELECT batch_id FROM predictions WHERE status = {CLAIMED:d} AND lease_until < ? "
            "AND batch_id IS NOT NULL ORDER BY id LIMIT 1", (now,)).fetchone()
        if stale:
            rows = self._lease(f"batch_id = ? AND status = {CLAIMED:d} AND lease_until < ?", (stale[0], now),
                               lease_seconds, now)
            return (stale[0], rows) if rows else None
        heads = conn.execute(
            f"""SELECT model_version, role, MIN(ts_ms), COUNT(*) FROM predictions
                WHERE status = {PENDING:d} GROUP BY model_version, role ORDER BY MIN(id)""").fetchall()
        for version, role, first_ts, count in heads:
            end_ms = first_ts + int(window_seconds * 1000)
            if now * 1000 < end_ms and count < max_records:
                continue  # this window is still open
            batch_id = uuid.uuid4().hex
            rows = self._lease(f"""id IN (SELECT id FROM predictions WHERE status = {PENDING:d}
                                   AND model_version = ? AND role = ? AND ts_ms < ? ORDER BY id LIMIT ?)""",
                               (version, role, end_ms, max_records), lease_seconds, now, batch_id)
            return (batch_id, rows) if rows else None
        return None

    def set_run_id(self, row_ids: Sequence[int], run_id: str) -> None:
        self.db.write(f"UPDATE predictions SET run_id = ? WHERE id IN ({marks(row_ids)})", [run_id, *row_ids])

    def mark_done(self, row_ids: Sequence[int], run_id: str | None = None) -> None:
        if not row_ids:
            return
        self.db.write(
            f"""UPDATE predictions SET status = {DONE:d}, run_id = COALESCE(?, run_id), exported_at = ?,
                lease_owner = NULL, lease_until = NULL WHERE id IN ({marks(row_ids)})""",
            [run_id, time.time(), *row_ids])

    def release(self, row_ids: Sequence[int], untouched: bool) -> None:
        """Give leased rows back. ``untouched``: no MLflow call was made for them, so the attempt
        does not count and the next exporter need not look for an existing run."""
        if not row_ids:
            return
        dec = ", attempts = MAX(attempts - 1, 0)" if untouched else ""
        self.db.write(f"""UPDATE predictions SET status = {PENDING:d}, lease_owner = NULL, lease_until = NULL{dec}
                          WHERE id IN ({marks(row_ids)}) AND status = {CLAIMED:d}""", list(row_ids))

    def release_batch(self, batch_id: str, untouched: bool) -> None:
        """Put a window's rows back under the same batch id, claimable at once."""
        dec = ", attempts = MAX(attempts - 1, 0)" if untouched else ""
        self.db.write(f"UPDATE predictions SET lease_until = 0{dec} WHERE batch_id = ? AND status = {CLAIMED:d}",
                      [batch_id])

    def expire_leases(self) -> None:
        """Every current lease runs out now, as if its exporter had been killed (for tests and tools)."""
        self.db.write(f"UPDATE predictions SET lease_until = 0 WHERE status = {CLAIMED:d}")
        self.db.write(f"UPDATE labels SET lease_until = 0 WHERE status = {CLAIMED:d}")
