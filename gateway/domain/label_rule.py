"""How a ground-truth label is judged against a prediction: one rule for the gateway's own feedback,
the exporter's labels for another replica's prediction, and the report's join in MLflow."""

from __future__ import annotations

from typing import Any


def is_correct(prediction: object, true_label: object) -> bool:
    """A class label is right when its text equals the prediction's: labels arrive as JSON (a class
    name or index) and predictions as what the model gave (numpy scalars, strings)."""
    return str(prediction) == str(true_label)


def correct_column(predictions: Any, true_labels: Any) -> Any:
    """``is_correct`` over two aligned columns (pandas Series), element by element."""
    return predictions.astype(str) == true_labels.astype(str)


def absolute_error(prediction: object, true_value: object) -> float:
    """A regressor's error on one row; ValueError when either side is not a number."""
    return abs(float(true_value) - float(prediction))  # type: ignore[arg-type]
