"""Models the tests build on disk (not registered): a classifier as it reaches the gateway through
MLflow's pyfunc wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from models.train import pip_requirements


def pyfunc_only_classifier(tmp_path: Path, fitted_on_array: bool = False) -> tuple[Path, Any]:
    """A scikit-learn classifier saved with only its python_function flavour: how a LightGBM or
    XGBoost model reaches the gateway (through mlflow.pyfunc, which hands the estimator a frame).
    Columns a and b; class 1 when a > 5. Returns its directory and the fitted estimator."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame({"a": np.linspace(0, 10, 40), "b": np.linspace(10, 0, 40)})
    y = (x["a"] > 5).astype(int)
    clf = LogisticRegression().fit(x.to_numpy() if fitted_on_array else x, y)
    path = tmp_path / "model"
    mlflow.sklearn.save_model(clf, str(path), signature=infer_signature(x, clf.predict(x.to_numpy())),
                              input_example=x.head(3), pip_requirements=pip_requirements(),
                              serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE)
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    del mlmodel["flavors"]["sklearn"]
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return path, clf
