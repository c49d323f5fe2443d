"""Windows into the Delta inference table exactly once, under faults injected on both sides: the
MLflow stand-in fails before or after acting, and the Delta append fails before committing or after
(the commit made, the answer lost). Every record lands in the table once, and each window's run
names the table as a dataset input instead of carrying a Parquet copy."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from gateway.delta.appender import Appended, DeltaAppender
from gateway.delta.reader import read_windows
from gateway.delta.spec import TableSection
from gateway.export.inference_table import WindowTable
from gateway.export.label_runs import LabelWindows
from gateway.export.strategies import ExportCounters, WindowRuns
from gateway.spool.commits import CommitPending
from gateway.spool.store import PredictionSpool
from tests.export.test_strategies import FakeMlflow
from tests.harness.records import drain_labels, rec, spool_labelled

T0 = 1_700_000_000_000


class TableFakeMlflow(FakeMlflow):
    def log_table_input(self, run_id: str, name: str, uri: str, version: int, window_id: str,
                        model_id: str | None = None) -> None:
        self._call(lambda: self.runs[run_id].setdefault("inputs", []).append((name, uri, version, window_id)))


class FlakyAppender(DeltaAppender):
    """Fails as told: "before" (nothing committed) or "after" (committed, the answer lost)."""

    def __init__(self, uri: str, faults: list[str]) -> None:
        super().__init__(uri)
        self.faults = iter(faults)

    def append_once(self, rows: Any, app_id: str, version: int, metadata: Any = None) -> Appended:
        fault = next(self.faults, "ok")
        if fault == "before":
            raise ConnectionError("injected before the append")
        result = super().append_once(rows, app_id, version, metadata)
        if fault == "after":
            raise ConnectionError("injected after the append")
        return result


faults = st.lists(st.sampled_from(["ok", "ok", "ok", "before", "after"]), max_size=60)


def _table(spool: PredictionSpool, root: Path, delta_faults: list[str]) -> WindowTable:
    table = WindowTable(spool, TableSection(enabled=True, uri=str(root)))
    table.appender = FlakyAppender(table.uri, delta_faults)
    return table


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), mlflow_faults=faults, delta_faults=faults)
def test_every_record_lands_in_the_table_once(tmp_path_factory: Any, n: int, mlflow_faults: list[str],
                                               delta_faults: list[str]) -> None:
    spool = PredictionSpool(tmp_path_factory.mktemp("spool"))
    for i in range(n):
        spool.append(rec(i, version="v1.0" if i % 2 else "v2.0", ts=T0 + i * 500))
    fake = TableFakeMlflow(mlflow_faults)
    table = _table(spool, tmp_path_factory.mktemp("table"), delta_faults)
    exporter = WindowRuns(spool, fake, ExportCounters(), window_seconds=5, window_max_records=7,  # type: ignore[arg-type]
                          table=table)
    for _ in range(2000):
        claimed = exporter.claim(draining=True)
        if claimed is None:
            break
        with contextlib.suppress(ConnectionError):
            exporter.export(claimed, lambda: False)
    assert spool.count_open() == 0
    window_ids = [r["tags"]["window_id"] for r in fake.runs.values()]
    assert len(window_ids) == len(set(window_ids))
    rows = read_windows(table.uri, window_ids)
    ids = rows.column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == n, "every record in the table exactly once"
    for run in fake.runs.values():
        assert "predictions.parquet" not in run["artifacts"] and run["tags"]["records_table"] == table.uri
        assert {(name, uri, window) for name, uri, _, window in run["inputs"]} == {
            ("predictions", table.uri, run["tags"]["window_id"])}
    by_window = rows.group_by("window_id").aggregate([("request_id", "count")]).to_pydict()
    counts = {w: c for w, c in zip(by_window["window_id"], by_window["request_id_count"], strict=True)}
    for run in fake.runs.values():  # each run's count metric is its window's rows in the table
        assert next(iter(run["metrics"]["count"]))[2] == counts[run["tags"]["window_id"]]


def test_a_numbered_window_goes_before_any_other(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path / "spool")
    for i in range(4):
        spool.append(rec(i, version="v1.0", ts=T0 + i * 10_000))  # four windows of 5 s
    fake = TableFakeMlflow([])
    exporter = WindowRuns(spool, fake, ExportCounters(), window_seconds=5, window_max_records=7,  # type: ignore[arg-type]
                          table=_table(spool, tmp_path / "table", []))
    first = exporter.claim(draining=True)
    assert first is not None
    assert spool.commits.number(first[0], "predictions") == (1, False)  # numbered, then the exporter died
    other = spool.queue.claim_window(5, 7, now=T0 / 1000 + 10_000)
    assert other is not None and other[0] != first[0]
    with pytest.raises(CommitPending):  # no number for another window while the first one's is open
        spool.commits.number(other[0], "predictions")
    spool.queue.expire_leases()
    again = exporter.claim(draining=True)
    assert again is not None and again[0] == first[0] and len(again[1]) == len(first[1])  # the same window, whole
    exporter.export(again, lambda: False)
    assert spool.commits.number(first[0], "predictions") == (1, True)
    assert exporter.claim(draining=True) is not None  # the next window may be numbered now
    assert read_windows(exporter.table.uri, [first[0]]).num_rows == len(first[1])  # type: ignore[union-attr]


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 30), mlflow_faults=faults, delta_faults=faults)
def test_every_label_lands_in_the_feedback_table_once(tmp_path_factory: Any, n: int, mlflow_faults: list[str],
                                                       delta_faults: list[str]) -> None:
    spool = PredictionSpool(tmp_path_factory.mktemp("spool"))
    spool_labelled(spool, n, lambda i: "Setosa" if i % 3 else 2)
    fake = TableFakeMlflow(mlflow_faults)
    table = WindowTable(spool, TableSection(enabled=True, uri=str(tmp_path_factory.mktemp("table"))), "feedback")
    table.appender = FlakyAppender(table.uri, delta_faults)
    step = LabelWindows(spool, fake, ExportCounters(), window_seconds=3600, max_labels=7,  # type: ignore[arg-type]
                        table=table)
    batches = drain_labels(spool, step, fake)
    rows = read_windows(table.uri, batches).to_pylist()
    assert sorted(r["request_id"] for r in rows) == sorted(f"r{i}" for i in range(n)), "each label once"
    assert sorted(json.loads(r["true_label"]) for r in rows if r["request_id"] == "r0") == [2]
    for run in fake.runs.values():
        assert "feedback.jsonl" not in run["artifacts"] and run["tags"]["records_table"] == table.uri


def test_the_report_reads_records_and_labels_back_from_the_tables(tmp_path: Path) -> None:
    import pandas as pd

    from gateway.mlflow.readback import join_labels, window_labels, window_records

    spool = PredictionSpool(tmp_path / "spool")
    spool_labelled(spool, 12, lambda i: "Setosa" if i % 3 else 2)
    fake = TableFakeMlflow([])
    section = TableSection(enabled=True, uri=str(tmp_path / "table"))
    exporter = WindowRuns(spool, fake, ExportCounters(), window_seconds=5, window_max_records=5,  # type: ignore[arg-type]
                          table=WindowTable(spool, section))
    labels = LabelWindows(spool, fake, ExportCounters(), window_seconds=3600, max_labels=5,  # type: ignore[arg-type]
                          table=WindowTable(spool, section, "feedback"))
    while (claimed := exporter.claim(draining=True)) is not None:
        exporter.export(claimed, lambda: False)
    while labels.run(draining=True):
        pass
    runs = pd.DataFrame([{"run_id": run_id, **{f"tags.{k}": v for k, v in run["tags"].items()}}
                         for run_id, run in fake.runs.items()])
    records = window_records(runs, "http://127.0.0.1:9")  # nothing downloaded: every run names its table
    assert sorted(records["request_id"]) == sorted(f"r{i}" for i in range(12))
    truth = window_labels(runs, "http://127.0.0.1:9")
    assert sorted(truth["true_label"].tolist(), key=str) == sorted(
        ["Setosa" if i % 3 else 2 for i in range(12)], key=str)  # each label's own type back from its JSON
    joined = join_labels(records, truth)
    assert joined["correct"].notna().sum() == 12
