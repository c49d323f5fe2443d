"""Compaction and vacuum of a real Delta table while windows keep being appended."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from gateway.delta.appender import DeltaAppender
from gateway.delta.maintenance import maintain
from gateway.delta.reader import read_windows

DAY_MS = 86_400_000
T0 = 1_765_065_600_000  # 2025-12-07 00:00 UTC


def _window(i: int, rows: int = 20) -> pa.Table:
    ts = T0 + (i % 2) * DAY_MS + i * 10_000  # two days, a window every 10 s
    return pa.table({"request_id": [f"r{i}-{j}" for j in range(rows)], "ts_ms": [ts] * rows,
                     "window_id": [f"w{i}"] * rows, "x": [float(j) for j in range(rows)]})


def test_compaction_leaves_a_file_per_day_and_loses_no_row_appended_beside_it(tmp_path: Path) -> None:
    uri = str(tmp_path / "predictions")
    appender = DeltaAppender(uri, retries=20)
    for i in range(120):
        appender.append_once(_window(i), "spool", i + 1)
    late: list[int] = []

    def append_more() -> None:
        for i in range(120, 150):
            appender.append_once(_window(i), "spool", i + 1)
            late.append(i)

    writer = threading.Thread(target=append_more)
    writer.start()
    done = maintain(uri, vacuum_hours=0)
    writer.join()
    assert done is not None and done.files_before >= 120
    assert done.compacted is not None and done.compacted["numFilesRemoved"] >= 100
    assert done.vacuumed >= 100  # the compacted-away files, removed at once with no retention
    again = maintain(uri, vacuum_hours=0)
    assert again is not None and again.files_after <= 2 + 1  # a file per day (and one late append at most)
    rows = read_windows(uri, [f"w{i}" for i in range(150)])
    assert rows.num_rows == 150 * 20 and len(set(rows.column("request_id").to_pylist())) == 150 * 20
    print(f"150 windows over 2 days: {done.files_before} files -> {again.files_after} after compaction")


def test_no_table_yet_is_said_not_an_error(tmp_path: Path) -> None:
    assert maintain(str(tmp_path / "nothing")) is None


def test_the_command_maintains_both_tables_and_runs_one_at_a_time(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.delta.__main__ import LOCK, main
    from gateway.spool.leader import LeaderLock

    config = tmp_path / "gateway.toml"
    config.write_text(f'[mlflow]\ngranularity = "window"\n\n[spool]\ndir = "{tmp_path / "spool"}"\n\n'
                      f'[table]\nenabled = true\nuri = "{tmp_path / "table"}"\n')
    appender = DeltaAppender(str(tmp_path / "table" / "predictions"))
    for i in range(5):
        appender.append_once(_window(i), "spool", i + 1)
    assert main(["--config", str(config), "--vacuum-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert "predictions: 5 -> " in out and "feedback: no table yet" in out
    held = LeaderLock(tmp_path / "spool" / LOCK)
    assert held.try_acquire()
    try:
        assert main(["--config", str(config)]) == 3  # another maintenance holds the lock
    finally:
        held.release()
    config.write_text(f'[spool]\ndir = "{tmp_path / "spool"}"\n')
    assert main(["--config", str(config)]) == 2  # no tables in this config: said, not done
