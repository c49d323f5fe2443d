"""Ground-truth labels reach MLflow exactly once in either granularity: joined to the prediction's run,
or (window mode) as feedback-window runs with a table the report joins."""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
from hypothesis import given, settings

from gateway.export.label_runs import LabelsOnPredictionRuns, LabelWindows
from gateway.export.strategies import ExportCounters, PredictionRuns
from gateway.spool.store import PredictionSpool
from tests.export.test_strategies import FakeMlflow, faults
from tests.harness.records import drain_labels, rec, spool_labelled


def test_labels_join_their_prediction_runs_once_exported(tmp_path: Any) -> None:
    spool = PredictionSpool(tmp_path)
    spool.append_many([rec(1, row=0), rec(1, row=1, prediction="Virginica", class_index=2)])
    right = spool.find("r1", "primary", 0)
    wrong = spool.find("r1", "primary", 1)
    assert right is not None and wrong is not None
    spool.labels.append(right, "Setosa", True, None, trust="token", unit="request:r1")
    spool.labels.append(wrong, "Setosa", False, None, trust="token", unit="request:r1")
    fake = FakeMlflow([])
    step = LabelsOnPredictionRuns(spool, fake, ExportCounters())  # type: ignore[arg-type]
    assert step.run(False) == 0 and spool.labels.count_open() == 2, "they wait for their predictions"
    PredictionRuns(spool, fake, ExportCounters()).export(spool.queue.claim(10), lambda: False)  # type: ignore[arg-type]
    assert step.run(False) == 2 and spool.labels.count_open() == 0
    by_row = {r["tags"]["row_index"]: r for r in fake.runs.values()}
    assert {v for _, _, v in by_row["0"]["metrics"]["correct"]} == {1.0}
    assert {v for _, _, v in by_row["1"]["metrics"]["correct"]} == {0.0}
    assert by_row["0"]["tags"]["label_trust"] == "token"  # who vouched for it, on the prediction's run


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), injected=faults)
def test_label_windows_exactly_once(tmp_path_factory: Any, n: int, injected: list[str]) -> None:
    spool = PredictionSpool(tmp_path_factory.mktemp("spool"))
    spool_labelled(spool, n, lambda i: "Setosa" if i % 3 else "Virginica")
    fake = FakeMlflow(injected)
    step = LabelWindows(spool, fake, ExportCounters(), window_seconds=3600, max_labels=7)  # type: ignore[arg-type]
    drain_labels(spool, step, fake)
    rows = [json.loads(line) for r in fake.runs.values() for line in r["artifacts"]["feedback.jsonl"].splitlines()]
    assert sorted(row["request_id"] for row in rows) == sorted(f"r{i}" for i in range(n)), "each label once"
    assert sum(1 for row in rows if row["correct"]) == sum(1 for i in range(n) if i % 3)
    assert {row["trust"] for row in rows} == {"receipt"}


def test_a_remote_label_is_judged_from_its_prediction_run(tmp_path: Any) -> None:
    """A label for a prediction another replica answered: this spool has no prediction for it; the step
    finds the run in MLflow and judges the label from its prediction tag."""
    other = PredictionSpool(tmp_path / "other")  # the replica that answered
    other.append_many([rec(1, row=0), rec(2, row=0, prediction="Virginica", class_index=2)])
    fake = FakeMlflow([])
    PredictionRuns(other, fake, ExportCounters()).export(other.queue.claim(10), lambda: False)  # type: ignore[arg-type]
    here = PredictionSpool(tmp_path / "here")  # the replica that got the labels
    here.labels.append_remote("r1", 0, "Setosa", trust="token")
    here.labels.append_remote("r2", 0, "Setosa", trust="token")
    here.labels.append_remote("r9", 0, "Setosa", trust="token")  # never answered anywhere
    step = LabelsOnPredictionRuns(here, fake, ExportCounters())  # type: ignore[arg-type]
    assert step.run(False) == 2
    by_request = {r["tags"]["request_id"]: r for r in fake.runs.values()}
    assert {v for _, _, v in by_request["r1"]["metrics"]["correct"]} == {1.0}
    assert {v for _, _, v in by_request["r2"]["metrics"]["correct"]} == {0.0}
    assert here.labels.count_open() == 1, "r9 waits for its prediction"


def test_a_remote_label_whose_prediction_never_arrives_is_given_up(tmp_path: Any, monkeypatch: Any) -> None:
    import gateway.export.label_runs as labels_module

    here = PredictionSpool(tmp_path)
    here.labels.append_remote("r9", 0, "Setosa", trust="token")
    counters = ExportCounters()
    monkeypatch.setattr(labels_module, "REMOTE_JOIN_WAIT_S", -1.0)
    LabelsOnPredictionRuns(here, FakeMlflow([]), counters).run(False)  # type: ignore[arg-type]
    assert here.labels.count_open() == 0 and here.stats()["total_labels_unjoined"] == 1


def test_window_labels_from_other_replicas_are_judged_at_the_join() -> None:
    import pandas as pd

    from gateway.mlflow.readback import join_labels

    records = pd.DataFrame({"request_id": ["a", "b", "c"], "row_index": [0, 0, 0], "role": ["primary"] * 3,
                            "kind": ["classifier"] * 3, "prediction": ["Setosa", "Virginica", "Setosa"],
                            "value": [float("nan")] * 3, "correct": [float("nan")] * 3,
                            "abs_error": [float("nan")] * 3})
    labels = pd.DataFrame({"request_id": ["a", "b", "c", "c"], "row_index": [0, 0, 0, 0],
                           "model_version": ["", "", "v1.0", ""], "true_label": ["Setosa", "Setosa", "Versicolor",
                                                                                  "Setosa"],
                           "correct": [None, None, False, None], "abs_error": [None] * 4})
    joined = join_labels(records, labels).set_index("request_id")["correct"].to_dict()
    # a and b judged here (right, wrong); c was judged where it was answered, and that first label stands.
    assert joined == {"a": 1.0, "b": 0.0, "c": 0.0}
