"""The spool's writer thread: group commit, each request all or nothing, a lock held by another
process costs the writes that wait for it and nothing else, and a withdrawn write is never written."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import wait
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.spool.store import DuplicateRequest, PredictionSpool, SpoolWriteError
from gateway.spool.writer import SpoolWriter
from tests.harness.records import rec


def _lock(spool: PredictionSpool) -> sqlite3.Connection:
    """Another connection holding the write lock, as another process would."""
    conn = sqlite3.connect(spool.path, isolation_level=None, timeout=5, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_writes_queued_behind_a_lock_commit_together(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    writer = SpoolWriter(spool)
    try:
        writer.submit([rec(0)]).result(5)
        before = writer.transactions
        other = _lock(spool)
        futures = [writer.submit([rec(i, row=k) for k in range(3)]) for i in range(1, 41)]
        threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
        wait(futures, timeout=10)
        assert all(len(f.result()) == 3 for f in futures)
        assert spool.count() == 1 + 40 * 3
        # the first queued write waited for the lock alone; everything behind it went in one or two more
        assert writer.transactions - before <= 3
    finally:
        writer.close()


@settings(max_examples=25, deadline=None)
@given(ids=st.lists(st.integers(0, 15), min_size=1, max_size=30))
def test_each_request_is_all_or_nothing_and_a_repeated_id_is_a_duplicate(ids: list[int]) -> None:
    import tempfile

    spool = PredictionSpool(Path(tempfile.mkdtemp(prefix="writer-")))
    writer = SpoolWriter(spool)
    try:
        other = _lock(spool)  # queue them all, so that they share transactions
        futures = [writer.submit([rec(i, row=0), rec(i, row=1)]) for i in ids]
        other.execute("COMMIT")
        wait(futures, timeout=10)
        seen: set[int] = set()
        for i, future in zip(ids, futures, strict=True):
            if i in seen:
                with pytest.raises(DuplicateRequest) as exc:
                    future.result()
                assert [r.row_index for r in exc.value.existing] == [0, 1]
            else:
                assert len(future.result()) == 2
                seen.add(i)
        assert spool.count() == 2 * len(seen)
    finally:
        writer.close()


def test_a_withdrawn_write_is_never_written(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    writer = SpoolWriter(spool)
    try:
        other = _lock(spool)
        running = writer.submit([rec(1)])  # taken by the writer, waiting for the lock
        while not running.running():
            time.sleep(0.005)
        queued = writer.submit([rec(2)])
        assert queued.cancel()  # its request gave up: on_log_failure decides, and the records never land
        other.execute("COMMIT")
        assert running.result(10)
        writer.submit([rec(3)]).result(5)
        assert spool.find("r2") is None and spool.find("r1") and spool.find("r3")
    finally:
        writer.close()


def test_a_write_queued_past_its_deadline_fails_unwritten(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    writer = SpoolWriter(spool, lock_wait_ms=3000, queue_wait_ms=200)
    try:
        other = _lock(spool)
        first = writer.submit([rec(1)])  # taken at once: waits for the lock (up to 3 s)
        while not first.running():
            time.sleep(0.005)
        late = writer.submit([rec(2)])  # queued behind it for longer than 200 ms
        threading.Timer(0.6, lambda: other.execute("COMMIT")).start()
        assert first.result(10)
        with pytest.raises(SpoolWriteError, match=r"waited more than 0\.2 s") as info:
            late.result(10)
        assert "a slow commit (the spool locked by another process" in str(info.value)  # not "saturated"
        assert spool.find("r2") is None and writer.expired == 1
    finally:
        writer.close()


def test_a_lock_past_the_busy_timeout_fails_those_writes_and_the_writer_goes_on(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path, busy_timeout_ms=200)
    writer = SpoolWriter(spool)
    try:
        other = _lock(spool)
        with pytest.raises(SpoolWriteError, match="locked"):
            writer.submit([rec(1)]).result(10)
        other.execute("COMMIT")
        assert writer.submit([rec(2)]).result(5) and writer.alive
    finally:
        writer.close()


def test_close_commits_what_is_queued_then_refuses(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    writer = SpoolWriter(spool)
    futures = [writer.submit([rec(i)]) for i in range(50)]
    writer.close()
    assert all(f.result(0) for f in futures) and spool.count() == 50
    with pytest.raises(SpoolWriteError, match="shutting down"):
        writer.submit([rec(99)]).result(0)
