"""A Delta table's sequence of appends from one spool: a number per window, given in order, never
twice, and none while an earlier one is uncommitted."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.spool.commits import CommitPending
from gateway.spool.store import PredictionSpool
from tests.harness.records import rec

T0 = 1_700_000_000_000


def test_numbers_are_given_in_order_once_each_and_wait_for_the_open_one(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    commits = spool.commits
    assert commits.spool_id() == PredictionSpool(tmp_path).commits.spool_id()  # kept in the file
    assert commits.number("a", "predictions") == (1, False)
    assert commits.number("a", "predictions") == (1, False)  # the same window: the same number
    assert commits.number("x", "feedback") == (1, False)  # each table has its own sequence
    with pytest.raises(CommitPending) as pending:
        commits.number("b", "predictions")
    assert pending.value.batch_id == "a" and commits.pending("predictions") == "a"
    commits.committed("a", 7)
    assert commits.number("a", "predictions") == (1, True) and commits.table_version("a") == 7
    assert commits.number("b", "predictions") == (2, False)


def test_a_committed_number_is_kept_while_its_window_has_rows_to_export(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    for i in range(2):
        spool.append(rec(i, version="v1.0", ts=T0 + i * 10_000))
    first = spool.queue.claim_window(5, 10, now=T0 / 1000 + 100)
    assert first is not None
    spool.commits.number(first[0], "predictions")
    spool.commits.committed(first[0], 1)  # in the table; its MLflow run still to come
    spool.commits.number("later", "predictions")
    spool.commits.committed("later", 2)
    assert spool.commits.number(first[0], "predictions") == (1, True)  # not pruned: not appended twice
    spool.queue.mark_window_done(first[0], "run-1")
    spool.commits.number("third", "predictions")
    spool.commits.committed("third", 3)
    kept = spool.db.read("SELECT batch_id FROM table_commits ORDER BY seq")
    assert [b for (b,) in kept] == ["third"]  # exported whole, and older than the newest: gone
