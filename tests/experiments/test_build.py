"""One label that stood for two models is compared as two versions, with a warning."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.report.analyse import analyse
from experiments.report.build import UNLOGGED_MODEL, separate_models


def _records(label: str, model: str, n: int, uri: str = "models:/Digits/2") -> pd.DataFrame:
    rng = np.random.default_rng(len(model) + n)
    return pd.DataFrame({"request_id": [f"{model}-{i}" for i in range(n)], "role": "primary", "model_version": label,
                         "prediction": rng.choice(["a", "b"], n), "latency_ms": rng.lognormal(0, 0.2, n),
                         "routing": "weighted", "weights": "", "config_hash": "h", "ts_ms": range(n), "row_index": 0,
                         "correct": np.nan, "model_uri": uri, "model": model})


def test_a_label_for_two_models_becomes_two_versions_with_a_warning() -> None:
    records = pd.concat([_records("v1.0", "Digits/1 run aaa", 50, "models:/Digits/1"),
                         _records("v2.0", "Digits/2 run bbb", 40), _records("v2.0", "Digits/3 run ccc", 60)],
                        ignore_index=True)
    out, warnings, models = separate_models(records)
    assert sorted(out["model_version"].unique()) == ["v1.0", "v2.0 [Digits/2]", "v2.0 [Digits/3]"]
    assert len(warnings) == 1 and "label v2.0 stands for 2 different models" in warnings[0]
    assert models["v2.0 [Digits/3]"] == ["Digits/3 run ccc"] and models["v1.0"] == ["Digits/1 run aaa"]
    report = analyse(out, control="v1.0")
    assert set(report["versions"]) == {"v1.0", "v2.0 [Digits/2]", "v2.0 [Digits/3]"}
    assert report["versions"]["v2.0 [Digits/3]"]["count"] == 60


def test_one_model_per_label_changes_nothing_and_old_records_are_named() -> None:
    records = pd.concat([_records("v1.0", "Digits/1 run aaa", 30), _records("v2.0", "", 30)], ignore_index=True)
    records.loc[records["model_version"] == "v2.0", "model_uri"] = ""
    out, warnings, models = separate_models(records)
    assert warnings == [] and list(out["model_version"]) == list(records["model_version"])
    assert models["v2.0"] == [UNLOGGED_MODEL]
