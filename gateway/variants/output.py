"""What a model's answer means: a class label (classifier) or a number (regressor).

The kind comes from the model (a scikit-learn estimator says what it is; otherwise the signature's
output type: strings and integers are classes, floating point is a value); config can override it.
``class_names`` turns integer classes into names, as the embedded default does for its three classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from gateway.domain.errors import SchemaMismatch


class ModelKind(StrEnum):
    CLASSIFIER = "classifier"
    REGRESSOR = "regressor"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One row's answer: ``label`` is what the client sees (a class name, an int class or a number)."""

    label: str | int | float
    class_index: int | None = None
    probabilities: dict[str, float] | None = None


def detect_kind(model: Any, signature: Any, uri: str) -> ModelKind:
    """From the estimator when it is scikit-learn, else from the signature's output type."""
    if hasattr(model, "fit") and hasattr(model, "get_params"):  # a scikit-learn estimator
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(model):
            return ModelKind.CLASSIFIER
        if is_regressor(model):
            return ModelKind.REGRESSOR
    outputs = getattr(signature, "outputs", None)
    if outputs is not None and outputs.inputs:
        spec = outputs.inputs[0]
        dtype = getattr(spec, "type", None)
        name = getattr(dtype, "name", None) or str(getattr(spec, "type", ""))
        if name in ("string", "boolean", "long", "integer", "int32", "int64", "str", "bool", "object"):
            return ModelKind.CLASSIFIER
        if name in ("double", "float", "float32", "float64"):
            return ModelKind.REGRESSOR
        if hasattr(dtype, "kind"):  # a numpy dtype of a tensor spec
            return ModelKind.REGRESSOR if dtype.kind == "f" else ModelKind.CLASSIFIER
    raise SchemaMismatch(f"model {uri}: cannot tell whether it is a classifier or a regressor from its "
                         "signature's output; set [model] kind")


class OutputDecoder:
    """Turns a model's raw output for a batch into one Prediction per row."""

    def __init__(self, kind: ModelKind, class_names: Sequence[str] = (), classes: Sequence[Any] | None = None) -> None:
        self.kind = kind
        self.class_names = list(class_names)
        # The model's own class values in predict_proba's column order (scikit-learn's classes_).
        self.classes = [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None

    @property
    def labels(self) -> list[str | int] | None:
        """Every label this classifier can answer, when known."""
        if self.kind is not ModelKind.CLASSIFIER:
            return None
        if self.classes is not None:
            return [self._label(c) for c in self.classes]
        return list(self.class_names) or None

    def _label(self, value: Any) -> str | int:
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and self.class_names:
            if not 0 <= value < len(self.class_names):
                raise ValueError(f"class {value} has no name in class_names {self.class_names}")
            return self.class_names[value]
        if isinstance(value, bool | np.bool_):
            return str(value).lower()
        return value if isinstance(value, int | str) else str(value)

    def _index(self, raw: Any, label: str | int) -> int | None:
        if self.classes is not None:
            try:
                return self.classes.index(raw.item() if hasattr(raw, "item") else raw)
            except ValueError:
                return None
        if isinstance(label, str) and label in self.class_names:
            return self.class_names.index(label)
        if isinstance(raw, int | np.integer) and not isinstance(raw, bool):
            return int(raw)
        return None

    def decode(self, raw: Any, n_rows: int, probabilities: np.ndarray | None = None) -> list[Prediction]:
        values = _column(raw)
        if len(values) != n_rows:
            raise ValueError(f"the model returned {len(values)} predictions for {n_rows} rows")
        if self.kind is ModelKind.REGRESSOR:
            return [Prediction(float(value)) for value in values]
        decoded: dict[Any, tuple[str | int, int | None]] = {}  # a batch holds few distinct classes
        # the columns of predict_proba by their labels; by their positions when the labels are unknown
        labels = (self.labels or list(range(probabilities.shape[1]))) if probabilities is not None else None
        out = []
        for i, value in enumerate(values):
            hit = decoded.get(value)
            if hit is None:
                label = self._label(value)
                hit = decoded[value] = (label, self._index(value, label))
            probs = None
            if labels is not None:
                probs = {str(lbl): round(float(p), 6) for lbl, p in zip(labels, probabilities[i], strict=True)}
            out.append(Prediction(hit[0], hit[1], probs))
        return out


def _column(raw: Any) -> Sequence[Any]:
    """The first column of whatever a model's predict returned (array, list, Series, DataFrame)."""
    if hasattr(raw, "iloc") and getattr(raw, "ndim", 1) == 2:  # a DataFrame
        raw = raw.iloc[:, 0]
    if isinstance(raw, dict):
        raw = next(iter(raw.values()))
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"the model returned an output of shape {arr.shape}; expected one value per row")
    return arr.tolist()  # Python scalars, converted in one C loop
