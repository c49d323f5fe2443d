"""The spool's guarantees: nothing appended is lost, no row is held by two exporters, a killed
exporter's rows come back, and several processes can share one file."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from gateway.spool.store import DONE, DuplicateRequest, PredictionSpool, SpoolWriteError
from stack.iris import FEATURES
from tests.harness.records import rec


class SpoolMachine(RuleBasedStateMachine):
    """Random interleavings of append / claim / export / fail / lease expiry."""

    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="spool-sm-"))
        self.spool = PredictionSpool(self.dir)
        self.next_id = 0
        self.appended: set[str] = set()
        self.done: set[str] = set()
        self.held: dict[int, str] = {}  # row id -> request id, currently leased
        self.clock_offset = 0.0

    @rule(n=st.integers(1, 5))
    def append(self, n: int) -> None:
        for _ in range(n):
            r = rec(self.next_id)
            self.next_id += 1
            self.spool.append(r)
            self.appended.add(r.request_id)

    @rule(target=claims, limit=st.integers(1, 8))
    def claim(self, limit: int) -> list[tuple[int, str]]:
        rows = self.spool.queue.claim(limit, lease_seconds=3600)
        got = [(r.id, r.record.request_id) for r in rows]
        for row_id, rid in got:
            assert row_id not in self.held, "a leased row was handed out twice"
            assert rid not in self.done, "an exported row was handed out again"
            self.held[row_id] = rid
        return got

    @rule(batch=consumes(claims))
    def export(self, batch: list[tuple[int, str]]) -> None:
        ids = [i for i, _ in batch if i in self.held]
        self.spool.queue.mark_done(ids, run_id="run")
        for i in ids:
            self.done.add(self.held.pop(i))

    @rule(batch=consumes(claims), untouched=st.booleans())
    def fail(self, batch: list[tuple[int, str]], untouched: bool) -> None:
        ids = [i for i, _ in batch if i in self.held]
        self.spool.queue.release(ids, untouched=untouched)
        for i in ids:
            self.held.pop(i)

    @rule()
    def exporter_killed(self) -> None:
        # Its leases run out: make every current lease expire.
        self.spool.queue.expire_leases()
        self.held.clear()

    @rule(i=st.integers(0, 50))
    def duplicate_request_is_refused(self, i: int) -> None:
        if f"r{i}" in self.appended:
            with pytest.raises(DuplicateRequest):
                self.spool.append(rec(i))

    @invariant()
    def nothing_lost(self) -> None:
        assert self.spool.count() == len(self.appended)
        assert self.spool.count(DONE) == len(self.done)
        assert self.spool.count_open() == len(self.appended) - len(self.done)

    def teardown(self) -> None:
        # Drain: everything not done is claimable (after leases expire) and exported exactly once.
        self.spool.queue.expire_leases()
        while rows := self.spool.queue.claim(100):
            for r in rows:
                assert r.record.request_id not in self.done
                self.done.add(r.record.request_id)
            self.spool.queue.mark_done([r.id for r in rows])
        assert self.done == self.appended
        self.spool.close()


TestSpoolMachine = SpoolMachine.TestCase
TestSpoolMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_attempts_count_only_touched_rows(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    for i in range(3):
        spool.append(rec(i))
    rows = spool.queue.claim(3)
    assert [r.attempts for r in rows] == [1, 1, 1]
    spool.queue.release([rows[0].id], untouched=False)
    spool.queue.release([r.id for r in rows[1:]], untouched=True)
    again = spool.queue.claim(3)
    assert [r.attempts for r in again] == [2, 1, 1]


def test_expired_lease_is_reclaimed_with_run_id(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    spool.append(rec(1))
    (row,) = spool.queue.claim(1, lease_seconds=0.05)
    spool.queue.set_run_id([row.id], "run-1")
    assert spool.queue.claim(1) == []
    time.sleep(0.1)
    (again,) = spool.queue.claim(1)
    assert again.run_id == "run-1" and again.attempts == 2


def test_windows_close_by_time_or_size_and_group_by_version_role(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    t0 = 1_700_000_000_000
    for i in range(6):
        spool.append(rec(i, version="v1.0", ts=t0 + i * 1000))
    for i in range(6, 9):
        spool.append(rec(i, role="shadow", version="v2.0", ts=t0 + i * 1000))
    now = t0 / 1000 + 3  # both windows are still open by time
    assert spool.queue.claim_window(10, 1000, now=now) is None
    full = spool.queue.claim_window(10, 4, now=now)  # ...but v1.0's is full at 4
    assert full is not None and [r.record.request_id for r in full[1]] == ["r0", "r1", "r2", "r3"]
    assert spool.queue.claim_window(10, 4, now=now) is None  # 2 left for v1.0, 3 for v2.0: open
    later = t0 / 1000 + 20
    a = spool.queue.claim_window(10, 4, now=later)
    b = spool.queue.claim_window(10, 4, now=later)
    assert a is not None and b is not None and spool.queue.claim_window(10, 4, now=later) is None
    assert {(r.record.model_version, r.record.role) for r in a[1]} == {("v1.0", "primary")}
    assert [r.record.request_id for r in b[1]] == ["r6", "r7", "r8"]
    assert {r.record.role for r in b[1]} == {"shadow"}


def test_window_full_closes_early(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    t0 = 1_700_000_000_000
    for i in range(6):
        spool.append(rec(i, ts=t0 + i))
    claimed = spool.queue.claim_window(10, 4, now=t0 / 1000 + 1)
    assert claimed is not None
    batch_id, rows = claimed
    assert [r.record.request_id for r in rows] == ["r0", "r1", "r2", "r3"]
    # An expired window lease brings back the same batch, whole.
    spool.queue.expire_leases()
    again = spool.queue.claim_window(10, 4, now=t0 / 1000 + 1)
    assert again is not None and again[0] == batch_id and len(again[1]) == 4


def test_window_by_time(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    t0 = 1_700_000_000_000
    for i in range(3):
        spool.append(rec(i, ts=t0 + i * 4000))  # 0 s, 4 s, 8 s
    spool.append(rec(9, ts=t0 + 12_000))  # next window
    claimed = spool.queue.claim_window(10, 1000, now=t0 / 1000 + 11)
    assert claimed is not None and [r.record.request_id for r in claimed[1]] == ["r0", "r1", "r2"]
    assert spool.queue.claim_window(10, 1000, now=t0 / 1000 + 11) is None  # [12 s, 22 s) still open


def test_full_spool_raises_write_error(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path, max_bytes=80_000)
    with pytest.raises(SpoolWriteError, match="full"):
        for i in range(10_000):
            spool.append(rec(i))
    assert 0 < spool.count() < 10_000


def _writer(directory: str, start: int, n: int) -> None:
    spool = PredictionSpool(directory)
    for i in range(start, start + n):
        spool.append(rec(i))


def _claimer(directory: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    spool = PredictionSpool(directory)
    got: list[str] = []
    idle = 0
    while idle < 20:
        rows = spool.queue.claim(7)
        if not rows:
            idle += 1
            time.sleep(0.02)
            continue
        idle = 0
        got += [r.record.request_id for r in rows]
        spool.queue.mark_done([r.id for r in rows])
    out.put(got)


def test_several_processes_share_one_spool(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(tmp_path), k * 1000, 300)) for k in range(3)]
    queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    claimers = [ctx.Process(target=_claimer, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in writers + claimers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    results = [queue.get(timeout=60) for _ in claimers]
    for p in claimers:
        p.join(60)
    claimed = [rid for r in results for rid in r]
    assert len(claimed) == len(set(claimed)) == 900, "every record claimed by exactly one process"


def test_a_request_is_committed_whole_or_not_at_all(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    batch = [rec(1, row=i) for i in range(5)]
    assert len(spool.append_many(batch)) == 5
    assert [r.row_index for r in spool.find_request("r1")] == [0, 1, 2, 3, 4]
    # A retry of the same request id is refused whole and shows what was recorded.
    with pytest.raises(DuplicateRequest) as dup:
        spool.append_many([rec(2, row=0), rec(1, row=0)])
    assert len(dup.value.existing) == 5 and spool.find("r2") is None, "nothing of a refused request is written"
    # The same request id in another role (its shadow) is a different record.
    spool.append_many([rec(1, role="shadow", row=i) for i in range(5)])
    assert spool.count() == 10


def test_single_row_spool_of_an_earlier_release_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / PredictionSpool.FILENAME)
    conn.executescript("""
        CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, role TEXT, model_version TEXT,
            sepal_length REAL, sepal_width REAL, petal_length REAL, petal_width REAL, class_index INTEGER,
            class_name TEXT, inference_time_ms REAL, ts_ms INTEGER, routing TEXT, config_hash TEXT,
            weights TEXT DEFAULT '', status INTEGER DEFAULT 0, lease_owner TEXT, lease_until REAL,
            attempts INTEGER DEFAULT 0, batch_id TEXT, run_id TEXT, exported_at REAL, UNIQUE (request_id, role));
        CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, true_label TEXT,
            correct INTEGER, ts_ms INTEGER, status INTEGER DEFAULT 0, lease_until REAL, attempts INTEGER DEFAULT 0,
            run_id TEXT);
        INSERT INTO records (request_id, role, model_version, sepal_length, sepal_width, petal_length, petal_width,
            class_index, class_name, inference_time_ms, ts_ms, routing, config_hash, status)
            VALUES ('old-1', 'primary', 'v1.0', 5.1, 3.5, 1.4, 0.2, 0, 'Setosa', 0.4, 1700000000000, 'weighted',
                    'abc', 0),
                   ('old-2', 'primary', 'v2.0', 6.7, 3.0, 5.2, 2.3, 2, 'Virginica', 0.5, 1700000000001, 'weighted',
                    'abc', 2);
        INSERT INTO feedback (request_id, true_label, correct, ts_ms) VALUES ('old-1', 'Setosa', 1, 1700000000002);
    """)
    conn.commit()
    conn.close()
    spool = PredictionSpool(tmp_path)
    (row,) = spool.queue.claim(10)  # the exported one stays behind: it is in MLflow already
    assert row.record.features == FEATURES and row.record.prediction == "Setosa" and row.record.class_index == 0
    _, (label,) = spool.labels.claim(10)
    assert label.request_id == "old-1" and label.true_label == "Setosa" and label.correct is True


def test_only_unexported_records_can_fill_the_spool(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path, max_bytes=80_000)
    written = 0
    with pytest.raises(SpoolWriteError, match="full"):
        for i in range(10_000):
            spool.append(rec(i))
            written += 1
    # Everything drains to MLflow; the exported rows' retention must not keep the spool full.
    while rows := spool.queue.claim(100):  # a full spool can still be marked exported (its own headroom)
        spool.queue.mark_done([r.id for r in rows], "run")
    accepted = 0
    with pytest.raises(SpoolWriteError, match="full"):
        for i in range(10_000):
            spool.append(rec(100_000 + i))
            accepted += 1
    # Exported rows were reclaimed: nearly the whole capacity again (free pages are not packed as tight).
    assert accepted >= 0.8 * written, (accepted, written)


def test_the_leases_of_a_killed_exporter_are_taken_back_at_once(tmp_path: Path) -> None:
    """A window leased for two minutes by an exporter that was SIGKILLed is claimable by the next one
    as soon as it looks, not when the lease runs out; a live exporter's lease is left alone."""
    writer = PredictionSpool(tmp_path)
    writer.append_many([rec(i, ts=1_700_000_000_000 + i) for i in range(6)])
    dead = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    killed = PredictionSpool(tmp_path)
    killed.queue.owner = f"{dead.pid}-deadbeef"  # as if that process had taken it, then died
    assert killed.queue.claim_window(10, 3, lease_seconds=120) is not None
    nxt = PredictionSpool(tmp_path)
    again = nxt.queue.claim_window(10, 3)
    assert again is not None and sorted(r.record.request_id for r in again[1]) == ["r0", "r1", "r2"]
    assert all(r.attempts == 2 for r in again[1])  # the next exporter knows a run may exist
    second = nxt.queue.claim_window(10, 3, lease_seconds=120)
    assert second is not None and sorted(r.record.request_id for r in second[1]) == ["r3", "r4", "r5"]
    other = PredictionSpool(tmp_path)
    assert other.queue.claim_window(10, 3) is None  # a live exporter's leases hold


# The per-row predictions table of the release before entries (one SQLite row per predicted row).
_PER_ROW_TABLE = """
CREATE TABLE predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, row_index INTEGER NOT NULL DEFAULT 0,
    role TEXT NOT NULL, model_version TEXT NOT NULL, features TEXT NOT NULL, prediction TEXT NOT NULL,
    class_index INTEGER, kind TEXT NOT NULL, inference_time_ms REAL NOT NULL, ts_ms INTEGER NOT NULL,
    routing TEXT NOT NULL, config_hash TEXT NOT NULL, weights TEXT NOT NULL DEFAULT '',
    batch_rows INTEGER NOT NULL DEFAULT 1, request_time_ms REAL, user TEXT, headers TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT, run_id TEXT, exported_at REAL, UNIQUE (request_id, role, row_index));
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL DEFAULT 0, model_version TEXT NOT NULL, true_label TEXT NOT NULL, correct INTEGER,
    abs_error REAL, ts_ms INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0, lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0, batch_id TEXT, run_id TEXT);
"""


def test_per_row_spool_of_the_previous_release_moves_into_entries_with_its_state(tmp_path: Path) -> None:
    """Pending rows stay pending, a row whose exporter died keeps its attempts and run id (so its run
    is resumed, not made again), exported rows keep their run for feedback and for replays."""
    import json
    import sqlite3

    conn = sqlite3.connect(tmp_path / PredictionSpool.FILENAME)
    conn.executescript(_PER_ROW_TABLE)
    columns = ("request_id, row_index, role, model_version, features, prediction, class_index, kind, "
               "inference_time_ms, ts_ms, routing, config_hash, batch_rows, user, status, lease_owner, lease_until, "
               "attempts, run_id, exported_at")
    rows = [  # a 3-row request half exported one run per row, a pending one, a done one
        ("b", 0, "primary", "v1.0", FEATURES, "Setosa", 0, 2, None, None, 1, "run-b0", 1.0),
        ("b", 1, "primary", "v1.0", FEATURES, "Virginica", 2, 1, "123-dead", 0.0, 1, "run-b1", None),
        ("b", 2, "primary", "v1.0", FEATURES, "Setosa", 0, 0, None, None, 0, None, None),
        ("p", 0, "shadow", "v2.0", FEATURES, "Versicolor", 1, 0, None, None, 0, None, None),
        ("d", 0, "primary", "v2.0", FEATURES, "Setosa", 0, 2, None, None, 1, "run-d", 1.0),
    ]
    for rid, idx, role, version, features, label, cls, status, owner, until, attempts, run, exported in rows:
        conn.execute(f"INSERT INTO predictions ({columns}) VALUES ({', '.join('?' * 20)})",
                     (rid, idx, role, version, json.dumps(features), json.dumps(label), cls, "classifier", 0.5,
                      1_700_000_000_000, "weighted", "abc", 3 if rid == "b" else 1, "u1" if rid == "b" else None,
                      status, owner, until, attempts, run, exported))
    conn.execute("INSERT INTO counters VALUES ('exported', 2)")
    conn.execute("INSERT INTO labels (request_id, row_index, model_version, true_label, correct, ts_ms) "
                 "VALUES ('d', 0, 'v2.0', '\"Setosa\"', 1, 1700000000005)")
    conn.commit()
    conn.close()

    spool = PredictionSpool(tmp_path)
    tables = {name for (name,) in spool.db.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "predictions" not in tables and {"entries", "entry_rows", "row_runs"} <= tables
    assert spool.count() == 5 and spool.count(DONE) == 2 and spool.count_open() == 3
    assert spool.exported_total() == 2
    assert spool.open_keys() == {("b", 1, "primary"), ("b", 2, "primary"), ("p", 0, "shadow")}
    assert spool.find("b", "primary", 1) == rec(0, request_id="b", row=1, prediction="Virginica", class_index=2,
                                                 batch_rows=3, user="u1")
    assert [r.row_index for r in spool.find_request("b")] == [0, 1, 2]
    spool.queue.expire_leases()
    claimed = {(r.record.request_id, r.record.row_index): r for r in spool.queue.claim(10)}
    assert set(claimed) == {("b", 1), ("b", 2), ("p", 0)}
    assert claimed[("b", 1)].run_id == "run-b1" and claimed[("b", 1)].attempts == 2  # resumed, not made again
    assert claimed[("b", 2)].run_id is None and claimed[("b", 2)].attempts == 1
    _, (label,) = spool.labels.claim(10)
    assert label.request_id == "d" and label.prediction_run_id == "run-d"  # feedback still finds the exported run
    with pytest.raises(DuplicateRequest):  # and a replay of an exported request is still known
        spool.append(rec(0, request_id="d", version="v2.0"))
    spool.queue.mark_done([claimed[k].id for k in claimed], "run-x")
    assert spool.count_open() == 0 and spool.count(DONE) == 5
    assert PredictionSpool(tmp_path).count() == 5  # opening it again migrates nothing twice


def test_a_batch_exported_one_run_per_row_resumes_row_by_row_and_feedback_finds_each_rows_run(
        tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    keys = spool.append_many([rec(1, row=k) for k in range(3)])
    assert [k.row_index for k in keys] == [0, 1, 2] and len({k.entry for k in keys}) == 1  # one entry
    rows = spool.queue.claim(1)  # a 3-row entry is leased whole, though the limit is one row
    assert [r.record.row_index for r in rows] == [0, 1, 2]
    spool.queue.set_run_id([rows[0].id], "run-0")
    spool.queue.mark_done([rows[0].id], "run-0")
    spool.queue.set_run_id([rows[1].id], "run-1")  # started, then the exporter died
    assert spool.count(DONE) == 1 and spool.count_open() == 2
    for k in range(3):
        spool.labels.append(rec(1, row=k), "Setosa", True, None, trust="token", unit="request:r1")
    _, labels = spool.labels.claim(10)
    assert {lbl.row_index: lbl.prediction_run_id for lbl in labels} == {0: "run-0", 1: None, 2: None}
    spool.queue.expire_leases()
    again = spool.queue.claim(10)
    assert [(r.record.row_index, r.run_id, r.attempts) for r in again] == [(1, "run-1", 2), (2, None, 2)]
    spool.queue.mark_done([r.id for r in again], "run-z")
    assert spool.count_open() == 0 and spool.count(DONE) == 3 and spool.queue.claim(10) == []


def test_a_window_holds_at_most_max_entries_entries_whatever_its_rows(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    t0 = 1_700_000_000_000
    for i in range(5):
        spool.append(rec(i, ts=t0 + i))
    spool.append_many([rec(9, row=k, ts=t0 + 9) for k in range(10)])
    now = t0 / 1000 + 1  # every window still open by time
    assert spool.queue.claim_window(10, 1000, now=now, max_entries=10) is None  # 6 entries, 15 rows: open
    full = spool.queue.claim_window(10, 1000, now=now, max_entries=3)  # full at 3 entries
    assert full is not None and [e.n_rows for e in full[1].entries] == [1, 1, 1]
    rest = spool.queue.claim_window(10, 1000, now=now + 60, max_entries=3)
    assert rest is not None and [e.n_rows for e in rest[1].entries] == [1, 1, 10] and len(rest[1]) == 12


def test_labels_are_forgotten_after_the_retention_and_remote_ones_counted_as_unjoined(tmp_path: Path) -> None:
    """Labels for requests no replica answered (or a pipeline's typos) are bounded: they wait at most
    the retention, then are dropped and counted, never exported as if they were real."""
    spool = PredictionSpool(tmp_path)
    spool.append(rec(1))
    assert spool.labels.append(rec(1), "Setosa", True, None, trust="token", unit="request:r1") is True
    spool.labels.append_remote("never-answered", 0, "Setosa", trust="token")
    spool.labels.append_untrusted("r1", 0, "Virginica", None, "10.0.0.1")
    _, (local, remote) = spool.labels.claim(10)
    spool.labels.finish([local.id], "run-1")
    spool.labels.finish([remote.id], None)
    assert spool.labels.prune(3600) == {"labels": 0, "unjoined": 0, "untrusted": 0}  # all younger than that
    assert spool.labels.prune(-1) == {"labels": 1, "unjoined": 1, "untrusted": 1}
    assert spool.stats()["total_labels_unjoined"] == 1 and spool.labels.count_open() == 0
    # The unit's count was forgotten with it: its next label, within a new retention, counts again.
    assert spool.labels.append(rec(1, row=0), "Setosa", True, None, trust="token", unit="request:r1") is True
