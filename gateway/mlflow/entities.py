"""MLflow's own types, for the modules that build a run's contents or map its errors (importing this
imports MLflow)."""

from __future__ import annotations

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data

__all__ = ["Metric", "MlflowException", "Param", "RunTag", "infer_and_parse_data"]
