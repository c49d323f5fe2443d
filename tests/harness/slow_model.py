"""A model that takes as long as each request asks (params ``sleep``, in seconds): for deadlines, queue
bounds and clients that give up. Saved as an MLflow pyfunc model, loaded by a real gateway."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow.pyfunc


class Sleeper(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Sleeps ``params["sleep"]`` seconds per call, then labels each row "big" or "small" by ``a``."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # no hints: pyfunc reads them as a schema
        time.sleep(float((params or {}).get("sleep", 0.0)))
        return ["big" if a > 1 else "small" for a in model_input["a"]]


def save_sleeper(path: Path) -> str:
    import pandas as pd
    from mlflow.models import infer_signature

    from models.train import pip_requirements

    example = pd.DataFrame({"a": [0.5, 2.0], "b": [1.0, 1.0]})
    signature = infer_signature(example, ["small", "big"], params={"sleep": 0.0})
    mlflow.pyfunc.save_model(str(path), python_model=Sleeper(), input_example=example, signature=signature,
                             pip_requirements=pip_requirements())
    return str(path)


class SlowCopy(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Another model's predictions, each call ``delay`` seconds late: a candidate of exactly the same
    accuracy, slower."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def load_context(self, context):  # type: ignore[no-untyped-def]
        import mlflow.sklearn

        self.inner = mlflow.sklearn.load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return self.inner.predict(model_input)


def save_slow_copy(model_path: str, path: Path, delay: float) -> str:
    """``model_path`` (a local scikit-learn model) as a pyfunc model with the same signature, ``delay``
    seconds slower per call."""
    from mlflow.models import Model

    from models.train import pip_requirements

    signature = Model.load(str(Path(model_path) / "MLmodel")).signature
    mlflow.pyfunc.save_model(str(path), python_model=SlowCopy(delay), artifacts={"model": model_path},
                             signature=signature, pip_requirements=pip_requirements())
    return str(path)
