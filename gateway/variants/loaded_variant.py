"""A variant ready to answer: its model in memory, its schema, what it is (kind, flavour, registry
version), and one model call for a batch of validated rows."""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gateway.domain.batch import Rows
from gateway.domain.errors import NoProbabilities
from gateway.variants.output import ModelKind, OutputDecoder, Predictions
from gateway.variants.schema import ModelSchema
from gateway.variants.spec import VariantSpec


def quiet_feature_name_warnings() -> None:
    """The gateway hands an estimator the signature's columns, by name and in order, as a frame or as
    the array it was fitted on: scikit-learn's check of feature names (a warning at every start-up's
    warm-up, for a model fitted on a frame and given an array, or the reverse) has nothing to add."""
    warnings.filterwarnings("ignore", message=r"X (does not have valid|has) feature names", category=UserWarning)


quiet_feature_name_warnings()


@dataclass(frozen=True, slots=True)
class BatchResult:
    predictions: Predictions
    elapsed_ms: float  # the model call's own time, for the whole batch


@dataclass
class LoadedVariant:
    """A variant ready to answer: its spec, its in-memory model, its schema and where it came from."""

    spec: VariantSpec
    model: Any
    schema: ModelSchema
    kind: ModelKind
    decoder: OutputDecoder
    registered_name: str | None = None
    registry_version: str | None = None
    version_tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None  # the run that logged the registry version
    model_id: str | None = None  # the MLflow 3 LoggedModel the version was registered from
    source: str = "mlflow"  # "mlflow" | "cache" | "local"
    load_seconds: float = 0.0
    flavor: str = "sklearn"  # "sklearn": the estimator itself | "pyfunc": MLflow's generic wrapper
    input_examples: list[dict[str, Any]] = field(default_factory=list)  # validated rows of the logged example
    # Their true labels, when the model's metadata has them (EXAMPLE_LABELS): traffic --feedback sends them
    example_labels: list[Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model_identity(self) -> str:
        """Which model answers, for the prediction log: "IrisClassifier/2 run 3f2a..." (a registry
        version and the run that logged it), else the model URI. Two models under one label differ here."""
        if self.registered_name and self.registry_version:
            return f"{self.registered_name}/{self.registry_version}" + (f" run {self.run_id}" if self.run_id else "")
        return self.spec.model_uri

    @property
    def has_probabilities(self) -> bool:
        return self.proba_model is not None

    @functools.cached_property
    def proba_model(self) -> Any:
        """What answers predict_proba: the estimator itself, or the flavour's model under MLflow's pyfunc
        wrapper (a LightGBM or XGBoost classifier, say); None when there is none."""
        if self.kind is not ModelKind.CLASSIFIER:
            return None
        raw = raw_model(self.model)
        return raw if hasattr(raw, "predict_proba") else None

    def check_probabilities(self) -> None:
        """NoProbabilities (400) naming the model and why, when probabilities cannot be given."""
        if self.proba_model is None:
            why = ("it is a regressor" if self.kind is not ModelKind.CLASSIFIER
                   else f"its model ({self.flavor} flavour) has no predict_proba")
            raise NoProbabilities(f"variant {self.name} ({self.spec.model_uri}) cannot give probabilities: {why}",
                                  variant=self.name)

    def _model_input(self, rows: Rows) -> Any:
        names = self.schema.names
        matrix = rows.matrix  # rows that came through the columnar path (columns.py)
        if self.flavor == "sklearn" and self.schema.all_numeric and not hasattr(self.model, "feature_names_in_"):
            # The estimator was fitted on a plain array: skip building a DataFrame.
            if matrix is not None:
                return matrix
            return np.array([[np.nan if r[c] is None else r[c] for c in names] for r in rows.dicts()],
                            dtype=np.float64)
        frame = (pd.DataFrame(matrix, columns=names) if matrix is not None
                 else pd.DataFrame.from_records(rows.dicts(), columns=names))
        for col in self.schema.columns:
            if col.type in ("float", "double") or (col.numeric and not col.required):
                frame[col.name] = frame[col.name].astype("float64" if col.type != "float" else "float32")
            elif col.type in ("long", "integer"):
                frame[col.name] = frame[col.name].astype("int64" if col.type == "long" else "int32")
        return frame

    def predict(self, rows: Rows | Sequence[dict[str, Any]], probabilities: bool = False,
                params: dict[str, Any] | None = None) -> BatchResult:
        """One model call for every row; validated rows in, decoded predictions out. ``params`` (the
        scoring protocol's) go to a pyfunc model, which checks them against its own params schema."""
        data = self._model_input(Rows.of_dicts(rows))
        start = time.perf_counter()
        raw = self.model.predict(data, params=params) if params and self.flavor == "pyfunc" else \
            self.model.predict(data)
        proba = self.proba_model.predict_proba(data) if probabilities and self.has_probabilities else None
        elapsed_ms = round((time.perf_counter() - start) * 1000.0, 3)  # to the microsecond, as logged
        missing = unanswered_rows(raw)
        if missing:  # served as "nan" or "None" and logged as a class, it would poison the report too
            raise ValueError(f"the model answered no prediction (None, NaN or infinity) for row(s) {missing[:10]}")
        return BatchResult(self.decoder.decode(raw, len(rows), proba), elapsed_ms)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "model_uri": self.spec.model_uri,
            "weight": self.spec.weight,
            "registered_model": self.registered_name,
            "registry_version": self.registry_version,
            "run_id": self.run_id,
            "model_id": self.model_id,
            "version_label": self.version_tags.get("model_version"),
            "source": self.source,
            "flavor": self.flavor,
            "kind": str(self.kind),
            "load_seconds": round(self.load_seconds, 3),
        }


def raw_model(model: Any) -> Any:
    """The flavour's own model under MLflow's pyfunc wrapper (a LightGBM or XGBoost estimator, ...),
    or the model itself (an estimator, or a custom PythonModel's wrapper, which has none)."""
    if hasattr(model, "predict_proba") or not hasattr(model, "get_raw_model"):
        return model
    try:
        return model.get_raw_model()
    except Exception:  # NotImplementedError: the wrapper has no raw model to give
        return model


def unanswered_rows(raw: Any) -> list[int]:
    """The rows a model's raw output has no answer for: None, NaN or an infinity."""
    values = (raw.to_numpy() if hasattr(raw, "to_numpy") else raw if isinstance(raw, np.ndarray)
              else np.asarray(raw, dtype=object))
    values = values.reshape(len(values), -1)[:, 0] if values.ndim > 1 else values.reshape(-1)
    if values.dtype.kind in "fc":
        return [int(i) for i in np.flatnonzero(~np.isfinite(values))]
    if values.dtype.kind != "O":
        return []
    return [i for i, v in enumerate(values)
            if v is None or (isinstance(v, float | np.floating) and not math.isfinite(v))]
