"""A model of a flavor the gateway has no special path for, served through mlflow.pyfunc: the kind and
labels come from its signature, and every protocol answers with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.train import pip_requirements
from tests.harness.app_client import make_client, wait_ready


class Threshold:
    """Labels a row "high" when a + b/c exceeds the threshold (pyfunc's PythonModel interface)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def predict(self, context: Any, model_input: Any, params: Any = None) -> list[str]:
        total = model_input["a"] + model_input["b/c"]
        threshold = (params or {}).get("threshold", self.threshold)
        return ["high" if v > threshold else "low" for v in total]


@pytest.fixture(scope="module")
def pyfunc_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"a": [1.0, 5.0], "b/c": [0.5, 2.0], "n items": [1, 2]})
    root = tmp_path_factory.mktemp("pyfunc")
    out = {}
    for label, threshold in (("v1.0", 3.0), ("v2.0", 6.0)):
        model = type("ThresholdModel", (Threshold, mlflow.pyfunc.PythonModel), {})(threshold)
        path = root / label
        mlflow.pyfunc.save_model(str(path), python_model=model, input_example=example,
                                 signature=infer_signature(example, ["low", "high"], params={"threshold": threshold}),
                                 pip_requirements=pip_requirements())
        out[label] = str(path)
    return out


def test_pyfunc_model_over_every_protocol(tmp_path: Path, pyfunc_models: dict[str, str]) -> None:
    variants = [{"name": n, "model_uri": p, "weight": 0.5} for n, p in pyfunc_models.items()]
    with make_client(tmp_path, {}, variants=variants, model={}) as c:
        wait_ready(c)
        info = c.get("/variants").json()
        assert info["model"]["kind"] == "classifier"
        assert [i["name"] for i in info["model"]["inputs"]] == ["a", "b/c", "n items"]
        assert {v["flavor"] for v in info["variants"]} == {"pyfunc"}
        row = {"a": 4.0, "b/c": 1.0, "n items": 3}
        r = c.post("/predict", json=row, headers={"X-Model-Version": "v1.0"})
        assert r.status_code == 200 and r.json()["prediction"] == "high", r.text
        r = c.post("/predict", json=row, headers={"X-Model-Version": "v2.0"})
        assert r.json()["prediction"] == "low"
        r = c.post("/invocations", json={"dataframe_records": [row, {**row, "a": 0.0}]},
                   headers={"X-Model-Version": "v1.0"})
        assert r.json() == {"predictions": ["high", "low"]}
        r = c.post("/invocations", json={"dataframe_records": [row], "params": {"threshold": 100.0}},
                   headers={"X-Model-Version": "v1.0"})
        assert r.json() == {"predictions": ["low"]}, "the scoring protocol's params reach the model"
        r = c.post("/v2/models/model/versions/v1.0/infer", json={"inputs": [
            {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [4.0, 1.0, 3]}]})
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["high"], r.text
        bad = c.post("/predict", json={**row, "n items": 2.5})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "n items"
        assert c.post("/predict", json={"a": 1.0}).status_code == 422
        # A model without predict_proba: asking for probabilities is refused with the model named, in
        # every protocol, rather than answered without them.
        for r in (c.post("/predict?probabilities=true", json=row),
                  c.post("/invocations", json={"dataframe_records": [row], "params": {"probabilities": True}}),
                  c.post("/v2/models/model/infer", json={
                      "inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [4.0, 1.0, 3]}],
                      "outputs": [{"name": "predict_proba"}]})):
            assert r.status_code == 400, r.text
            assert "cannot give probabilities" in r.text and "has no predict_proba" in r.text


def test_probabilities_of_a_classifier_under_the_pyfunc_wrapper(tmp_path: Path) -> None:
    """A flavour the gateway loads through mlflow.pyfunc (LightGBM, XGBoost, ...): predict_proba comes
    from the flavour's own model under the wrapper. Here a scikit-learn classifier whose MLmodel keeps
    only its python_function flavour, which is how such a model reaches the gateway."""
    import pandas as pd

    from tests.harness.models import pyfunc_only_classifier

    path, clf = pyfunc_only_classifier(tmp_path)
    variants = [{"name": "v1.0", "model_uri": str(path), "weight": 1.0}]
    with make_client(tmp_path, {}, variants=variants, model={"kind": "classifier"}) as c:
        wait_ready(c)
        assert c.get("/variants").json()["variants"][0]["flavor"] == "pyfunc"
        r = c.post("/predict?probabilities=true", json={"a": 9.0, "b": 1.0})
        assert r.status_code == 200, r.text
        probs = r.json()["probabilities"]
        expected = clf.predict_proba(pd.DataFrame({"a": [9.0], "b": [1.0]}))[0]
        assert sorted(probs.values()) == pytest.approx(sorted(expected), abs=1e-6)  # answered at 6 decimals
        r = c.post("/invocations", json={"dataframe_records": [{"a": 1.0, "b": 9.0}],
                                         "params": {"probabilities": True}})
        assert r.status_code == 200 and len(r.json()["probabilities"][0]) == 2, r.text
