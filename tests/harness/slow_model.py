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
