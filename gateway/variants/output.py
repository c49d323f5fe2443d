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
from gateway.domain.sequences import OnDemand


class ModelKind(StrEnum):
    CLASSIFIER = "classifier"
    REGRESSOR = "regressor"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One row's answer: ``label`` is what the client sees (a class name, an int class or a number)."""

    label: str | int | float
    class_index: int | None = None
    probabilities: dict[str, float] | None = None


class Predictions(OnDemand[Prediction]):
    """A model call's answers in columns: ``labels``, ``class_indexes`` and, when asked for,
    ``probabilities`` (one {label: p} per row). As a sequence, one Prediction per row, built when
    asked for; a slice is Predictions again (a request's share of a batched call)."""

    __slots__ = ("class_indexes", "labels", "probabilities")

    def __init__(self, labels: list[Any], class_indexes: list[int | None] | None = None,
                 probabilities: list[dict[str, float]] | None = None) -> None:
        self.labels = labels
        self.class_indexes = class_indexes if class_indexes is not None else [None] * len(labels)
        self.probabilities = probabilities

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, i: int) -> Prediction:
        probs = self.probabilities
        return Prediction(self.labels[i], self.class_indexes[i], probs[i] if probs else None)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):  # a request's share of a batched call: columns again
            probs = self.probabilities
            return Predictions(self.labels[index], self.class_indexes[index], probs[index] if probs else probs)
        return super().__getitem__(index)

    def __repr__(self) -> str:
        return f"Predictions({self.labels!r}, {self.class_indexes!r}, {self.probabilities!r})"


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

    def decode(self, raw: Any, n_rows: int, probabilities: np.ndarray | None = None) -> Predictions:
        """The batch's answers in columns: each distinct value is turned into its label and class
        index once, then looked up per row (in C: ``map``), with no object per row."""
        values = _column(raw)
        if len(values) != n_rows:
            raise ValueError(f"the model returned {len(values)} predictions for {n_rows} rows")
        if self.kind is ModelKind.REGRESSOR:
            return Predictions(list(map(float, values)))
        decoded = {value: self._label(value) for value in set(values)}  # a batch holds few distinct classes
        index_of = {value: self._index(value, label) for value, label in decoded.items()}
        probs = None
        if probabilities is not None:
            # the columns of predict_proba by their labels; by their positions when the labels are unknown
            names = [str(label) for label in (self.labels or range(probabilities.shape[1]))]
            probs = [{name: round(p, 6) for name, p in zip(names, row, strict=True)}
                     for row in np.asarray(probabilities, dtype=float).tolist()]
        return Predictions(list(map(decoded.__getitem__, values)), list(map(index_of.__getitem__, values)), probs)


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
