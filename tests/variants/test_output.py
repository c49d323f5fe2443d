"""The output decoder answers in columns what a row-by-row decode would: each row's label, class
index and probabilities, for class names, a model's own classes, integers, booleans and regressors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.variants.output import ModelKind, OutputDecoder, Prediction, Predictions

NAMES = ["Setosa", "Versicolor", "Virginica"]


def _row_by_row(decoder: OutputDecoder, values: list[Any], proba: np.ndarray | None) -> list[Prediction]:
    """The reference: one value at a time, as the decoder's own helpers define it."""
    if decoder.kind is ModelKind.REGRESSOR:
        return [Prediction(float(v)) for v in values]
    names = [str(x) for x in (decoder.labels or range(proba.shape[1]))] if proba is not None else None
    out = []
    for i, v in enumerate(values):
        label = decoder._label(v)
        probs = {n: round(float(p), 6) for n, p in zip(names, proba[i], strict=True)} if names else None
        out.append(Prediction(label, decoder._index(v, label), probs))
    return out


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(1, 50), with_proba=st.booleans(),
       kind=st.sampled_from(["names", "classes", "strings", "bools", "regressor"]))
def test_columns_match_a_row_by_row_decode(data: Any, n: int, kind: str, with_proba: bool) -> None:
    if kind == "names":
        decoder, raw = OutputDecoder(ModelKind.CLASSIFIER, NAMES), np.array(data.draw(
            st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    elif kind == "classes":
        decoder = OutputDecoder(ModelKind.CLASSIFIER, NAMES, classes=np.array([0, 1, 2]))
        raw = np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=n, max_size=n)))
    elif kind == "strings":
        decoder = OutputDecoder(ModelKind.CLASSIFIER, classes=np.array(["a", "b", "c"]))
        raw = np.array(data.draw(st.lists(st.sampled_from(["a", "b", "c", "z"]), min_size=n, max_size=n)))
    elif kind == "bools":
        decoder, raw = OutputDecoder(ModelKind.CLASSIFIER), np.array(data.draw(st.lists(st.booleans(), min_size=n,
                                                                                        max_size=n)))
    else:
        decoder = OutputDecoder(ModelKind.REGRESSOR)
        raw = np.array(data.draw(st.lists(st.floats(-1e9, 1e9), min_size=n, max_size=n)))
    proba = None
    if with_proba and kind != "regressor":
        proba = np.array(data.draw(st.lists(st.floats(0, 1), min_size=3 * n, max_size=3 * n))).reshape(n, 3)
    got = decoder.decode(raw, n, proba)
    assert isinstance(got, Predictions)
    assert list(got) == _row_by_row(decoder, raw.tolist(), proba)
    assert list(got[1:]) == list(got)[1:] and isinstance(got[1:], Predictions)


def test_a_class_without_a_name_and_a_short_answer_are_errors() -> None:
    with pytest.raises(ValueError, match="class 7 has no name"):
        OutputDecoder(ModelKind.CLASSIFIER, NAMES).decode(np.array([0, 7]), 2)
    with pytest.raises(ValueError, match="1 predictions for 2 rows"):
        OutputDecoder(ModelKind.CLASSIFIER, NAMES).decode(np.array([0]), 2)
