"""One labelling rule for every version: the class names decided once for the set; a version logged
without them takes the set's when its classes are the integers they name; disagreement stops start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.domain.errors import SchemaMismatch
from gateway.variants.labelling import agree_on_labels
from gateway.variants.loaded_variant import LoadedVariant
from gateway.variants.output import ModelKind, OutputDecoder
from gateway.variants.spec import VariantSpec
from stack.iris import FEATURES
from tests.harness.app_client import FEEDBACK_AUTH, FEEDBACK_TOKEN, make_client, wait_ready

IRIS = ["Setosa", "Versicolor", "Virginica"]


def variant(name: str, names: list[str], classes: list[Any] | None) -> LoadedVariant:
    return LoadedVariant(spec=VariantSpec(name=name, model_uri=f"/models/{name}"), model=None,
                         schema=None, kind=ModelKind.CLASSIFIER,  # type: ignore[arg-type]
                         decoder=OutputDecoder(ModelKind.CLASSIFIER, names, classes))


def test_a_version_without_names_takes_the_sets_and_disagreement_stops_start_up() -> None:
    set_ = {"v1.0": variant("v1.0", IRIS, [0, 1, 2]), "v3.0": variant("v3.0", [], [0, 1, 2])}
    assert agree_on_labels(set_) == IRIS
    assert set_["v3.0"].decoder.labels == IRIS
    with pytest.raises(SchemaMismatch, match=r"name their classes differently \(v1\.0: .*; v2\.0: \['a', 'b', 'c'\]\)"):
        agree_on_labels({"v1.0": variant("v1.0", IRIS, [0, 1, 2]), "v2.0": variant("v2.0", ["a", "b", "c"], None)})
    with pytest.raises(SchemaMismatch, match=r"variant v4\.0 .* answers \['cat', 'dog'\]"):
        agree_on_labels({"v1.0": variant("v1.0", IRIS, [0, 1, 2]), "v4.0": variant("v4.0", [], ["cat", "dog"])})
    with pytest.raises(SchemaMismatch, match=r"variant v5\.0"):  # a class the names cannot name
        agree_on_labels({"v1.0": variant("v1.0", IRIS, [0, 1, 2]), "v5.0": variant("v5.0", [], [0, 1, 2, 3])})
    assert agree_on_labels({"a": variant("a", [], ["x", "y"]), "b": variant("b", [], ["x", "y"])}) is None


def test_versions_with_and_without_metadata_answer_and_are_judged_alike(
        tmp_path: Path, local_models: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 34's case: the config has no class_names (as for a model of one's own); v1.0 was logged
    with class_names metadata, v3.0 (the same classes) without. Both answer "Setosa", and a "Setosa"
    label on v3.0's answer is right, where it was wrong on every row."""
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("GATEWAY_FEEDBACK_TOKEN", FEEDBACK_TOKEN)
    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(FEATURES)
    bare = tmp_path / "no-metadata"
    mlflow.sklearn.save_model(LogisticRegression(max_iter=500).fit(x, y), str(bare), serialization_format="cloudpickle",
                              signature=mlflow.models.infer_signature(x.head(3), y.head(3)))
    variants = [{"name": "v1.0", "model_uri": local_models["v1.0"], "weight": 0.5},
                {"name": "v3.0", "model_uri": str(bare), "weight": 0.5}]
    with make_client(tmp_path, local_models, variants=variants, model={}) as c:
        wait_ready(c)
        answers = {v: c.post("/predict", json=FEATURES, headers={"X-Model-Version": v}) for v in ("v1.0", "v3.0")}
        assert {v: a.json()["prediction"] for v, a in answers.items()} == {"v1.0": "Setosa", "v3.0": "Setosa"}
        judged = c.post("/feedback", json={"request_id": answers["v3.0"].json()["request_id"], "true_label": "Setosa"},
                        headers=FEEDBACK_AUTH)
        assert judged.status_code == 202 and judged.json()["correct"] is True
        assert c.get("/variants").json()["model"]["labels"] == IRIS
