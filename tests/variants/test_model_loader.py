"""Loading a model from a local path: probabilities from under MLflow's pyfunc wrapper, and no
scikit-learn feature-name warning at start-up."""

from __future__ import annotations

import warnings
from pathlib import Path

from gateway.variants.loaded_variant import quiet_feature_name_warnings
from gateway.variants.model_loader import ModelLoader
from gateway.variants.spec import ModelSection, VariantSpec
from tests.harness.models import pyfunc_only_classifier


def test_loading_and_predicting_say_nothing_about_feature_names(tmp_path: Path) -> None:
    path = pyfunc_only_classifier(tmp_path, fitted_on_array=True)[0]  # fitted on an array, given a frame by pyfunc
    loader = ModelLoader("http://127.0.0.1:1", tmp_path / "cache", ModelSection(kind="classifier"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, each time (none hidden as seen before)...
        quiet_feature_name_warnings()  # ...but the gateway's filter, as the gateway process has it
        variant = loader.load(VariantSpec(name="v1.0", model_uri=str(path)))
        result = variant.predict([{"a": 9.0, "b": 1.0}], probabilities=True)
    assert variant.flavor == "pyfunc" and variant.has_probabilities
    assert result.predictions[0].probabilities is not None
    assert not [w for w in caught if "feature names" in str(w.message)], [str(w.message) for w in caught]
