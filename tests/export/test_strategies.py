"""Exactly-once export under injected faults, against an in-memory stand-in for MLflow.

The stand-in only models what the exporter relies on: runs with tags, searchable by tag, and
calls that fail either before reaching the server or after it has acted (a lost response).
Real-server behaviour is covered by tests/integration.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pyarrow.parquet as pq
from hypothesis import given, settings

from gateway.export.strategies import ExportCounters, PredictionRuns, WindowRuns
from gateway.export.table import records_table, window_summary
from gateway.spool.store import DONE, PredictionSpool
from tests.harness.records import rec


class FakeMlflow:
    def __init__(self, faults: list[str]) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.faults = iter(faults)
        self.ids = itertools.count()
        self.calls = 0

    def _maybe_fail(self, stage: str) -> None:
        fault = next(self.faults, "ok")
        if fault == stage:
            raise ConnectionError(f"injected {stage}")

    def _call(self, action: Any) -> Any:
        self.calls += 1
        self._maybe_fail("before")
        result = action()
        self._maybe_fail("after")  # the server acted but the answer was lost
        return result

    def find_run(self, tags: dict[str, str]) -> str | None:
        def search() -> str | None:
            for run_id, run in self.runs.items():
                if all(run["tags"].get(k) == v for k, v in tags.items()):
                    return run_id
            return None
        return self._call(search)  # type: ignore[no-any-return]

    def run_tags(self, run_id: str) -> dict[str, str]:
        return self._call(lambda: dict(self.runs[run_id]["tags"]))  # type: ignore[no-any-return]

    def create_run(self, start_time_ms: int, tags: dict[str, str], run_name: str) -> str:
        def create() -> str:
            run_id = f"run{next(self.ids)}"
            self.runs[run_id] = {"tags": dict(tags), "start": start_time_ms, "name": run_name, "metrics": {},
                                 "params": {}, "status": "RUNNING", "artifacts": {}}
            return run_id
        return self._call(create)  # type: ignore[no-any-return]

    def log_batch(self, run_id: str, metrics: list[Any] = (), params: list[Any] = (),  # type: ignore[assignment]
                  tags: list[Any] = ()) -> None:  # type: ignore[assignment]
        def log() -> None:
            run = self.runs[run_id]
            for m in metrics:
                run["metrics"].setdefault(m.key, set()).add((m.timestamp, m.step, m.value))
            for p in params:
                assert run["params"].get(p.key, p.value) == p.value
                run["params"][p.key] = p.value
            for t in tags:
                run["tags"][t.key] = t.value
        self._call(log)

    def finish(self, run_id: str, end_time_ms: int) -> None:
        self._call(lambda: self.runs[run_id].update(status="FINISHED"))

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self._call(lambda: self.runs[run_id]["artifacts"].update({path: text}))

    def log_bytes(self, run_id: str, data: bytes, path: str) -> None:
        self._call(lambda: self.runs[run_id]["artifacts"].update({path: data}))


faults = st.lists(st.sampled_from(["ok", "ok", "ok", "before", "after"]), max_size=120)


def _exporter(spool: PredictionSpool, fake: FakeMlflow) -> PredictionRuns:
    return PredictionRuns(spool, fake, ExportCounters())  # type: ignore[arg-type]


def _export(strategy: PredictionRuns, rows: list[Any]) -> None:
    # On a failure the rows not exported go back to the spool; the runner would back off and retry.
    with contextlib.suppress(ConnectionError):
        strategy.export(rows, lambda: False)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 25), injected=faults, crash_points=st.lists(st.integers(0, 60), max_size=4))
def test_prediction_runs_exactly_once(tmp_path_factory: Any, n: int, injected: list[str],
                                      crash_points: list[int]) -> None:
    spool = PredictionSpool(tmp_path_factory.mktemp("spool"))
    expected = set()
    for i in range(n):
        for role in ("primary", "shadow") if i % 3 == 0 else ("primary",):
            spool.append(rec(i, role=role))
            expected.add((f"r{i}", role))
    fake = FakeMlflow(injected)
    exporter = _exporter(spool, fake)
    for step in range(1000):
        if step in crash_points:
            # An exporter dies holding leases: they expire and another exporter takes over.
            spool.queue.claim(3)
            spool.queue.expire_leases()
            exporter = _exporter(spool, fake)
        rows = spool.queue.claim(4)
        if not rows:
            break
        _export(exporter, rows)
    assert spool.count_open() == 0 and spool.count(DONE) == len(expected)
    by_key = [(r["tags"]["request_id"], r["tags"]["role"]) for r in fake.runs.values()]
    assert sorted(by_key) == sorted(expected), "one run per (request_id, role), none duplicated"
    for run in fake.runs.values():
        assert run["status"] == "FINISHED"
        assert set(run["params"]) == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
        assert {k: len(v) for k, v in run["metrics"].items()} == {"prediction_class": 1, "inference_time_ms": 1,
                                                                   "batch_rows": 1}
        assert {"prediction", "model_version", "request_id", "role", "routing", "config_hash"} <= set(run["tags"])


def test_clean_export_uses_three_calls_per_run(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    for i in range(10):
        spool.append(rec(i))
    fake = FakeMlflow([])
    _export(_exporter(spool, fake), spool.queue.claim(10))
    assert len(fake.runs) == 10 and fake.calls == 30


def test_start_time_is_prediction_time(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    spool.append(rec(1, ts=1_600_000_000_123))
    fake = FakeMlflow([])
    _export(_exporter(spool, fake), spool.queue.claim(1))
    (run,) = fake.runs.values()
    assert run["start"] == 1_600_000_000_123
    # the version first: MLflow's runs table cuts long names
    assert run["name"] == f"{run['tags']['model_version']}_primary_prediction_1600000000"


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), injected=faults)
def test_window_runs_exactly_once(tmp_path_factory: Any, n: int, injected: list[str]) -> None:
    spool = PredictionSpool(tmp_path_factory.mktemp("spool"))
    t0 = 1_700_000_000_000
    for i in range(n):
        spool.append(rec(i, version="v1.0" if i % 2 else "v2.0", ts=t0 + i * 500))
    fake = FakeMlflow(injected)
    exporter = WindowRuns(spool, fake, ExportCounters(), window_seconds=5, window_max_records=7)  # type: ignore[arg-type]
    for _ in range(2000):
        claimed = spool.queue.claim_window(5, 7, now=t0 / 1000 + 10_000)
        if claimed is None:
            break
        try:
            exporter.export_window(*claimed)
        except ConnectionError:
            spool.queue.release_batch(claimed[0], untouched=False)
    assert spool.count_open() == 0
    window_ids = [r["tags"]["window_id"] for r in fake.runs.values()]
    assert len(window_ids) == len(set(window_ids))
    tables = [pq.read_table(io.BytesIO(r["artifacts"]["predictions.parquet"])) for r in fake.runs.values()]
    assert sum(t.num_rows for t in tables) == n, "every record in exactly one window table"
    ids = [i for t in tables for i in t.column("request_id").to_pylist()]
    assert len(ids) == len(set(ids)) == n
    counts = sum(next(iter(r["metrics"]["count"]))[2] for r in fake.runs.values())
    assert counts == n


def test_window_summary_figures() -> None:
    records = [rec(i, inference_time_ms=latency, prediction="Setosa" if i < 3 else "Virginica",
                   class_index=0 if i < 3 else 2) for i, latency in enumerate([1.0, 2.0, 3.0, 4.0, 10.0])]
    s = window_summary(records_table(records))
    assert s["count"] == 5 and s["inference_time_ms_mean"] == 4.0 and s["inference_time_ms_p50"] == 3.0
    assert s["class_count_Setosa"] == 3 and s["class_count_Virginica"] == 2 and "class_count_Versicolor" not in s
    assert abs(s["inference_time_ms_p95"] - 8.8) < 1e-9  # numpy linear interpolation between 4 and 10


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=6), injected=faults)
def test_batch_rows_are_runs_of_their_own_exactly_once(tmp_path_factory: Any, sizes: list[int],
                                                       injected: list[str]) -> None:
    spool = PredictionSpool(tmp_path_factory.mktemp("spool"))
    expected = set()
    for i, n in enumerate(sizes):
        spool.append_many([rec(i, row=k) for k in range(n)])
        expected |= {(f"r{i}", str(k)) for k in range(n)}
    fake = FakeMlflow(injected)
    strategy = _exporter(spool, fake)
    for step in range(2000):
        if step % 7 == 3:
            spool.queue.claim(2)  # an exporter dies holding leases
            spool.queue.expire_leases()
        rows = spool.queue.claim(4)
        if not rows:
            break
        _export(strategy, rows)
    keys = [(r["tags"]["request_id"], r["tags"]["row_index"]) for r in fake.runs.values()]
    assert sorted(keys) == sorted(expected), "one run per (request, row), none duplicated"


def test_regressor_runs_log_the_value() -> None:
    from gateway.export.strategies import prediction_payload, prediction_tags

    r = rec(1, prediction=151.25, class_index=None, kind="regressor", features={"bmi": 0.05, "s 1/x": -0.01})
    params, metrics = prediction_payload(r)
    assert {p.key: p.value for p in params} == {"bmi": "0.05", "s 1/x": "-0.01"}
    assert {m.key: m.value for m in metrics} == {"prediction_value": 151.25, "inference_time_ms": 0.5,
                                                 "batch_rows": 1.0}
    assert prediction_tags(r)["prediction"] == "151.25" and prediction_tags(r)["model_kind"] == "regressor"


def test_batched_rows_carry_the_call_size_and_their_own_time() -> None:
    """inference_time_ms is the shared model call's; batch_rows and request_time_ms say what the request saw."""
    from gateway.export.strategies import prediction_payload

    r = rec(1, inference_time_ms=0.9, batch_rows=8, request_time_ms=2.5)
    _, metrics = prediction_payload(r)
    assert {m.key: m.value for m in metrics} == {"prediction_class": 0.0, "inference_time_ms": 0.9,
                                                 "batch_rows": 8.0, "request_time_ms": 2.5}
    records = [rec(i, batch_rows=4, request_time_ms=float(i)) for i in range(1, 5)]
    summary = window_summary(records_table(records))
    assert summary["batch_rows_mean"] == 4.0 and summary["request_time_ms_p50"] == 2.5
