"""The export queue over the spool's entries: exporters lease open entries (a few rows' worth for
per-prediction runs, or a closed window of one version and role), mark them done with their MLflow
run id, or give them back.

A lease is taken on whole entries (one per request), so a window of 5,000 rows sent 100 at a time
is 50 SQLite rows to update, not 5,000: the request path's inserts wait for the exporter's writes
for a fraction of a millisecond. A multi-row entry exported one run per row keeps each row's run
id and progress in ``row_runs``, so a lease taken over after a crash resumes where the last stopped.

A lease that runs out (its exporter was killed) makes its entries claimable again, and ``attempts``
tells the next exporter that a run may already exist in MLflow. Leases are taken inside
``BEGIN IMMEDIATE`` transactions, so two exporters never hold the same entry at once."""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Sequence

from gateway.spool.rows import LEASED, PACKED, PACKED_BATCH, LeasedEntry, RowKey, SpoolRow, Window, leased_entries
from gateway.spool.schema import CLAIMED, DONE, PENDING
from gateway.spool.sqlite import SqliteFile, marks

_OPEN = f"status != {DONE:d}"

DEAD_OWNER_CHECK_S = 5.0  # how often the leases of exporters that died are looked for
# Entries per window, whatever their rows: a window's lease and its done mark are one statement each
# over its entries (the done mark must be one: a window's run and table are written whole), so this
# bounds how long they hold the write lock. 5,000 one-row entries: about 10 ms here; a window of
# 50,000 one-row entries held it long enough to lift single-row p99 at 64 connections from about
# 40 ms to about 100 ms (window log, measured 2026-12-02).
WINDOW_MAX_ENTRIES = 5000


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
        (a window's lease is 2 minutes: its rows would wait that long after a SIGKILL). Their entries
        keep their attempt count, so the next exporter looks for runs the dead one may have made."""
        if now - self._checked_owners_at < DEAD_OWNER_CHECK_S:
            return
        self._checked_owners_at = now
        owners = [str(o) for (o,) in self.db.read(
            f"SELECT DISTINCT lease_owner FROM entries WHERE status = {CLAIMED:d} AND lease_until >= ? "
            "AND lease_owner IS NOT NULL", [now])]
        dead = [o for o in owners if o != self.owner and not owner_alive(o)]
        if dead:
            self.db.write(f"UPDATE entries SET lease_until = 0 WHERE status = {CLAIMED:d} "
                          f"AND lease_owner IN ({marks(dead)})", dead)

    def _lease(self, where: str, args: Sequence[object], lease_seconds: float, now: float,
               batch_id: str | None = None, rows_per_lease: int | None = None, limit: int = -1) -> list[LeasedEntry]:
        """The one lease: the first entries ``where`` selects (in id order, at most ``limit``) become this
        exporter's until ``now`` plus ``lease_seconds``, one more attempt each (under ``batch_id`` when
        given). ``rows_per_lease``: as many of them as hold that many rows (at least one), and a lease
        as much longer as they hold more. Choosing and updating share one transaction; the rows are
        read and decoded after its commit."""
        batch = ", batch_id = ?" if batch_id is not None else ""
        candidates = f"SELECT id, n_rows FROM entries WHERE {where} ORDER BY id LIMIT ?"
        with self.db.transaction() as conn:
            chosen = conn.execute(candidates, [*args, limit]).fetchall()
            if rows_per_lease is not None:
                chosen, rows = _up_to(chosen, rows_per_lease)
                lease_seconds *= max(1, math.ceil(rows / rows_per_lease))
            if not chosen:
                return []
            # The same selection again, cut at its count: no list of ids bound (a window of 50,000 one-row
            # entries would pass SQLite's limit of variables), and nothing can change in between.
            raw = conn.execute(
                f"UPDATE entries SET status = {CLAIMED:d}, lease_owner = ?, lease_until = ?, attempts = attempts + 1"
                f"{batch} WHERE id IN (SELECT id FROM entries WHERE {where} ORDER BY id LIMIT ?) RETURNING {LEASED}",
                [self.owner, now + lease_seconds, *([batch_id] if batch_id is not None else []), *args, len(chosen)]
            ).fetchall()
        if batch_id is not None:  # a window: exported as a whole, never row by row
            return leased_entries(raw, self.db.read(PACKED_BATCH, [batch_id]))
        ids = [int(row[0]) for row in raw]
        return self._with_row_runs(leased_entries(raw, self.db.read(PACKED.format(marks(ids)), ids)))

    def _with_row_runs(self, entries: list[LeasedEntry]) -> list[LeasedEntry]:
        """Multi-row entries with their rows' progress (per-prediction runs started or done)."""
        multi = [e.id for e in entries if e.n_rows > 1]
        if not multi:
            return entries
        found: dict[int, tuple[set[int], dict[int, str]]] = {}
        for entry_id, row_index, run_id, done in self.db.read(
                f"SELECT entry_id, row_index, run_id, done FROM row_runs WHERE entry_id IN ({marks(multi)})", multi):
            done_rows, runs = found.setdefault(int(entry_id), (set(), {}))
            if done:
                done_rows.add(int(row_index))
            if run_id is not None:
                runs[int(row_index)] = str(run_id)
        return [LeasedEntry(e.id, e.columns, e.attempts, e.batch_id, e.run_id, frozenset(found[e.id][0]),
                            found[e.id][1]) if e.id in found else e for e in entries]

    def claim(self, limit: int, lease_seconds: float = 60.0) -> list[SpoolRow]:
        """Lease open entries (pending, or claimed with an expired lease) holding up to ``limit`` rows
        (at least one entry), and return their rows not yet exported."""
        now = time.time()
        self._free_dead_leases(now)
        entries = self._lease(f"{_OPEN} AND (status = {PENDING:d} OR lease_until < ?)", (now,), lease_seconds, now,
                              rows_per_lease=limit, limit=limit)
        return [row for e in entries for row in e.rows()]

    def claim_window(self, window_seconds: float, max_records: int, lease_seconds: float = 120.0,
                     now: float | None = None, max_entries: int = WINDOW_MAX_ENTRIES) -> tuple[str, Window] | None:
        """Lease the next closed window: entries of one (model_version, role) from its oldest open one
        up to ``window_seconds`` later, holding at most ``max_records`` rows (or one larger entry) in
        at most ``max_entries`` entries. A window is closed once its time has passed or it is full. A
        window whose lease expired is re-claimed whole, same batch id.

        Finding the window is a read (WAL readers block no one), so the request path's writes wait
        for a few milliseconds at most, not for a scan of the backlog."""
        now = time.time() if now is None else now
        self._free_dead_leases(time.time())
        conn = self.db.connection()
        stale = conn.execute(
            f"SELECT batch_id FROM entries WHERE status = {CLAIMED:d} AND lease_until < ? "
            "AND batch_id IS NOT NULL ORDER BY id LIMIT 1", (now,)).fetchone()
        if stale:
            entries = self._lease(f"batch_id = ? AND status = {CLAIMED:d} AND lease_until < ?", (stale[0], now),
                                  lease_seconds, now, stale[0])
            return (stale[0], Window(entries)) if entries else None
        heads = conn.execute(
            f"""SELECT model_version, role, MIN(ts_ms), SUM(n_rows), COUNT(*) FROM entries
                WHERE status = {PENDING:d} GROUP BY model_version, role ORDER BY MIN(id)""").fetchall()
        for version, role, first_ts, count, entries_open in heads:
            end_ms = first_ts + int(window_seconds * 1000)
            if now * 1000 < end_ms and count < max_records and entries_open < max_entries:
                continue  # this window is still open
            batch_id = uuid.uuid4().hex
            entries = self._lease(f"status = {PENDING:d} AND model_version = ? AND role = ? AND ts_ms < ?",
                                  (version, role, end_ms), lease_seconds, now, batch_id, rows_per_lease=max_records,
                                  limit=min(max_records, max_entries))
            return (batch_id, Window(entries)) if entries else None
        return None

    def reclaim_window(self, batch_id: str, lease_seconds: float = 120.0) -> Window | None:
        """Lease window ``batch_id`` again, whole, if its lease has run out (its entries as they were
        claimed); None while another exporter still holds it, or when it holds no open entry."""
        now = time.time()
        self._free_dead_leases(now)
        entries = self._lease(f"batch_id = ? AND status = {CLAIMED:d} AND lease_until < ?", (batch_id, now),
                              lease_seconds, now, batch_id)
        return Window(entries) if entries else None

    def holds_open(self, batch_id: str) -> bool:
        """Whether window ``batch_id`` still holds an entry that is not exported."""
        return bool(self.db.read(f"SELECT 1 FROM entries WHERE batch_id = ? AND status != {DONE:d} LIMIT 1",
                                 [batch_id]))

    def set_run_id(self, row_ids: Sequence[RowKey], run_id: str) -> None:
        """The run a row's export created (before it is finished): a retry resumes it."""
        single, multi = self._split(row_ids)
        with self.db.transaction() as conn:
            if single:
                conn.execute(f"UPDATE entries SET run_id = ? WHERE id IN ({marks(single)})", [run_id, *single])
            if multi:
                conn.executemany("INSERT INTO row_runs (entry_id, row_index, run_id) VALUES (?, ?, ?) "
                                 "ON CONFLICT DO UPDATE SET run_id = excluded.run_id",
                                 [(k.entry, k.row_index, run_id) for k in multi])

    def mark_done(self, row_ids: Sequence[RowKey], run_id: str | None = None) -> None:
        """Rows in MLflow (in run ``run_id``, when given). An entry is done once all its rows are."""
        if not row_ids:
            return
        single, multi = self._split(row_ids)
        now = time.time()
        with self.db.transaction() as conn:
            if single:
                conn.execute(f"""UPDATE entries SET status = {DONE:d}, run_id = COALESCE(?, run_id), exported_at = ?,
                                 lease_owner = NULL, lease_until = NULL WHERE id IN ({marks(single)})""",
                             [run_id, now, *single])
            if multi:
                conn.executemany("INSERT INTO row_runs (entry_id, row_index, run_id, done) VALUES (?, ?, ?, 1) "
                                 "ON CONFLICT DO UPDATE SET done = 1, run_id = COALESCE(excluded.run_id, run_id)",
                                 [(k.entry, k.row_index, run_id) for k in multi])
                entries = sorted({k.entry for k in multi})
                conn.execute(f"""UPDATE entries SET status = {DONE:d}, exported_at = ?, lease_owner = NULL,
                                 lease_until = NULL WHERE id IN ({marks(entries)}) AND n_rows <=
                                 (SELECT COUNT(*) FROM row_runs r WHERE r.entry_id = entries.id AND r.done = 1)""",
                             [now, *entries])

    def _split(self, row_ids: Sequence[RowKey]) -> tuple[list[int], list[RowKey]]:
        """Row keys by their entry's size: entry ids of one-row entries (the entry holds the run id),
        and the keys of rows in larger ones (``row_runs`` does)."""
        entries = sorted({k.entry for k in row_ids})
        if not entries:
            return [], []
        sizes = dict(self.db.read(f"SELECT id, n_rows FROM entries WHERE id IN ({marks(entries)})", entries))
        single = [e for e in entries if sizes.get(e, 1) == 1]
        return single, [k for k in dict.fromkeys(row_ids) if sizes.get(k.entry, 1) > 1]

    def set_window_run(self, batch_id: str, run_id: str) -> None:
        self.db.write(f"UPDATE entries SET run_id = ? WHERE batch_id = ? AND {_OPEN}", [run_id, batch_id])

    def mark_window_done(self, batch_id: str, run_id: str) -> None:
        """Every entry the window's lease holds is in MLflow, in run ``run_id``."""
        self.db.write(f"""UPDATE entries SET status = {DONE:d}, run_id = ?, exported_at = ?, lease_owner = NULL,
                          lease_until = NULL WHERE batch_id = ? AND status = {CLAIMED:d}""",
                      [run_id, time.time(), batch_id])

    def release(self, row_ids: Sequence[RowKey], untouched: bool) -> None:
        """Give leased rows back (their entries: rows done stay done). ``untouched``: no MLflow call
        was made for them, so the attempt does not count and the next exporter need not look for an
        existing run."""
        entries = sorted({k.entry for k in row_ids})
        if not entries:
            return
        dec = ", attempts = MAX(attempts - 1, 0)" if untouched else ""
        self.db.write(f"""UPDATE entries SET status = {PENDING:d}, lease_owner = NULL, lease_until = NULL{dec}
                          WHERE id IN ({marks(entries)}) AND status = {CLAIMED:d}""", entries)

    def release_batch(self, batch_id: str, untouched: bool) -> None:
        """Put a window's entries back under the same batch id, claimable at once."""
        dec = ", attempts = MAX(attempts - 1, 0)" if untouched else ""
        self.db.write(f"UPDATE entries SET lease_until = 0{dec} WHERE batch_id = ? AND status = {CLAIMED:d}",
                      [batch_id])

    def expire_leases(self) -> None:
        """Every current lease runs out now, as if its exporter had been killed (for tests and tools)."""
        self.db.write(f"UPDATE entries SET lease_until = 0 WHERE status = {CLAIMED:d}")
        self.db.write(f"UPDATE labels SET lease_until = 0 WHERE status = {CLAIMED:d}")


def _up_to(chosen: list[tuple[int, int]], rows: int) -> tuple[list[tuple[int, int]], int]:
    """The first entries holding at most ``rows`` rows together (at least the first), and their rows."""
    out, total = [], 0
    for entry_id, n in chosen:
        if out and total + n > rows:
            break
        out.append((entry_id, n))
        total += n
    return out, total
