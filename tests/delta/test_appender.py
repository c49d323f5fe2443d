"""The Delta append made once per app transaction, against real tables on disk (delta-rs)."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from hypothesis import given
from hypothesis import strategies as st

from gateway.delta.appender import PARTITION, DeltaAppender, with_day
from gateway.delta.reader import read_windows

DAY_MS = 86_400_000


def _rows(window: str, n: int = 3, ts: int = 1_765_100_000_000) -> pa.Table:
    return pa.table({"request_id": [f"{window}-{i}" for i in range(n)], "ts_ms": [ts + i * DAY_MS for i in range(n)],
                     "role": pa.array(["primary"] * n).dictionary_encode(), "window_id": [window] * n,
                     "features.sepal length": [1.5] * n})


def test_an_app_transaction_is_appended_once_and_partitioned_by_day(tmp_path: Path) -> None:
    appender = DeltaAppender(str(tmp_path / "predictions"))
    first = appender.append_once(_rows("w1"), "spool-a", 1)
    again = appender.append_once(_rows("w1"), "spool-a", 1)
    assert first.appended and not again.appended and again.version == first.version
    assert appender.append_once(_rows("w2"), "spool-a", 2).appended
    table = DeltaTable(str(tmp_path / "predictions"))
    assert table.transaction_version("spool-a") == 2 and table.transaction_version("spool-b") is None
    assert table.metadata().partition_columns == ["day"]
    rows = read_windows(str(tmp_path / "predictions"), ["w1", "w2"])
    assert sorted(rows.column("request_id").to_pylist()) == sorted(f"w{w}-{i}" for w in (1, 2) for i in range(3))
    assert sorted(set(rows.column("day").to_pylist())) == ["2025-12-07", "2025-12-08", "2025-12-09"]
    assert rows.schema.field("role").type == pa.string()  # dictionary text written plain


def test_two_writers_of_one_app_id_commit_it_once_and_other_app_ids_side_by_side(tmp_path: Path) -> None:
    uri = str(tmp_path / "predictions")
    DeltaAppender(uri).append_once(_rows("w0", 1), "init", 1)
    results: list[bool] = []
    start = threading.Barrier(6)

    def write(app: str, window: str) -> None:
        start.wait()
        results.append(DeltaAppender(uri, retries=10).append_once(_rows(window), app, 1).appended)

    threads = [threading.Thread(target=write, args=(app, f"w-{app}-{i}")) for app in ("a", "b", "c") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = read_windows(uri, [f"w-{a}-{i}" for a in "abc" for i in range(2)])
    per_app = {a: sum(1 for w in rows.column("window_id").to_pylist() if w.startswith(f"w-{a}-")) for a in "abc"}
    assert per_app == {"a": 3, "b": 3, "c": 3}  # each app id's version 1 once: one of its two writers won
    assert sorted(results) == [False, False, False, True, True, True]


@given(st.lists(st.integers(min_value=-10**12, max_value=4 * 10**12), max_size=60))
def test_the_day_column_is_each_rows_utc_day(ts_ms: list[int]) -> None:
    rows = pa.table({"ts_ms": pa.array(ts_ms, pa.int64())})
    formatted = pc.strftime(pc.cast(rows["ts_ms"], pa.timestamp("ms", tz="UTC")), format="%Y-%m-%d")
    assert with_day(rows)[PARTITION].to_pylist() == formatted.to_pylist()
