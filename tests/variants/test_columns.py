"""The columnar path gives what the row path gives: every protocol's block decodes into the same rows,
and the NumPy checks accept and refuse exactly what the row validator does, naming the same row and
column. The row path is computed here as it was before the columnar path existed: ``plain`` on each
decoded value, MLflow's own parser for ``dataframe_split``."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.pyfunc.scoring_server import infer_and_parse_data

from gateway.domain.batch import Rows, join, numbers
from gateway.domain.errors import InvalidFeatures, MalformedBody
from gateway.protocols import oip
from gateway.protocols.body import loads_body, plain
from gateway.protocols.limits import RequestShape
from gateway.protocols.mlflow_scoring import _rows, decode
from gateway.variants.columns import prepare
from gateway.variants.schema import Bounds, Column, ModelSchema

NAMES = ("a", "b.c", "d/e f")
EDGES = [-1.0, 0.0, 0.5, 1.0, 2.5]  # bounds and values are drawn near these, so both sides are hit

plain_numbers = st.one_of(st.sampled_from(EDGES), st.floats(-5, 5), st.integers(-3, 3))
awkward = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.booleans(), st.none(),
                    st.text(max_size=3), st.just("1.5"), st.integers(2**63, 2**64), st.just(10**400))
values = st.one_of(plain_numbers, plain_numbers, plain_numbers, awkward)


@st.composite
def bounds(draw: Any) -> Bounds | None:
    if draw(st.booleans()):
        return None
    low, high = draw(st.sampled_from([None, *EDGES])), draw(st.sampled_from([None, *EDGES]))
    gt, ge = (low, None) if draw(st.booleans()) else (None, low)
    lt, le = (high, None) if draw(st.booleans()) else (None, high)
    return Bounds(gt=gt, ge=ge, lt=lt, le=le)


@st.composite
def schemas(draw: Any, k: int = len(NAMES)) -> ModelSchema:
    """Float columns (the columnar checks), now and then an integer one (the row validator does all)."""
    types = st.sampled_from(["double", "double", "float", "long"]) if draw(st.booleans()) else st.just("double")
    columns = []
    for name in NAMES[:k]:
        kind, limits = draw(types), draw(bounds())
        if kind == "long" and limits is not None:  # an integer column's bounds are whole numbers (with_bounds)
            limits = Bounds(*(None if v is None else math.floor(v)
                              for v in (limits.gt, limits.ge, limits.lt, limits.le)))
        columns.append(Column(name, kind, draw(st.booleans()), limits))
    return ModelSchema(tuple(columns))


def strict(rows: Any) -> list[list[tuple[str, str, Any]]]:
    """Rows compared with their value types (1 == 1.0 == True in Python, not here)."""
    return [[(k, type(v).__name__, repr(v)) for k, v in row.items()] for row in rows]


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", strict(call())
    except InvalidFeatures as exc:
        return "refused", (str(exc), exc.errors)


def row_path_oip(data: np.ndarray) -> list[dict[str, Any]]:
    return [{c: plain(v) for c, v in zip(NAMES, row, strict=True)} for row in data]


# -- decoding --------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 12), data=st.data(), layout=st.sampled_from(["flat", "nested"]))
def test_an_oip_json_tensor_decodes_into_the_row_paths_rows(n: int, data: Any, layout: str) -> None:
    """An FP64 JSON tensor holds numbers, as the binary one does, and decodes to the same float64 rows
    the row path gives; anything else (a string, a boolean, a null, an integer past a float) is a 400
    naming the input."""
    flat = data.draw(st.lists(values, min_size=n * 3, max_size=n * 3))
    data_field = flat if layout == "flat" else [flat[i:i + 3] for i in range(0, len(flat), 3)]
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [n, 3], "datatype": "FP64", "data": data_field}]})
    payload, _ = oip.split_binary(body.encode(), None)
    sent = loads_body(body)["inputs"][0]["data"]
    sent = list(itertools.chain.from_iterable(sent)) if layout == "nested" else sent
    numbers = all(type(v) in (int, float) for v in sent) and all(abs(v) < 1.7e308 for v in sent if type(v) is int)
    if not numbers:
        with pytest.raises(MalformedBody, match="input 'input-0'"):
            oip.decode_inputs(payload, b"", RequestShape(NAMES, max_rows=100))
        return
    decoded = oip.decode_inputs(payload, b"", RequestShape(NAMES, max_rows=100))
    assert decoded.matrix is not None
    as_binary = np.array(sent, dtype=np.float64).reshape(n, 3)
    assert strict(decoded) == strict(row_path_oip(as_binary))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 12), dtype=st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT32", "UINT8"]),
       data=st.data())
def test_an_oip_binary_tensor_decodes_into_the_row_paths_rows_without_a_copy(n: int, dtype: str, data: Any) -> None:
    numpy_type = oip._NUMPY[dtype]
    if np.dtype(numpy_type).kind == "f":
        element = st.floats(width=np.dtype(numpy_type).itemsize * 8)
    else:
        info = np.iinfo(numpy_type)
        element = st.integers(int(info.min), int(info.max))
    arr = np.array(data.draw(st.lists(element, min_size=n * 3, max_size=n * 3)), dtype=numpy_type)
    raw = arr.tobytes()
    payload = {"inputs": [{"name": "input-0", "shape": [n, 3], "datatype": dtype,
                           "parameters": {"binary_data_size": len(raw)}}]}
    decoded = oip.decode_inputs(payload, raw, RequestShape(NAMES, max_rows=100))
    assert decoded.matrix is not None
    assert strict(decoded) == strict(row_path_oip(arr.reshape(n, 3)))
    if dtype == "FP64":
        assert np.shares_memory(decoded.matrix, np.frombuffer(raw, dtype=np.float64)) or decoded.matrix.base is not None


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 12), data=st.data(), schema=schemas())
def test_a_dataframe_split_validates_as_mlflows_parser_and_the_row_validator_would(
        n: int, data: Any, schema: ModelSchema) -> None:
    rows = data.draw(st.lists(st.lists(values, min_size=3, max_size=3), min_size=n, max_size=n))
    split = {"columns": list(NAMES), "data": rows}
    body = json.dumps({"dataframe_split": split}).encode()
    shape = RequestShape(NAMES, max_rows=100)
    try:
        decoded, _ = decode(body, "application/json", shape)
    except MalformedBody:  # MLflow's parser refuses the body: the fast path never built a block for it
        with pytest.raises(Exception):  # noqa: B017 (whatever MLflow raises, decode reports as MalformedBody)
            _rows(infer_and_parse_data({"dataframe_split": loads_body(body)["dataframe_split"]}), NAMES)
        return
    reference = _rows(infer_and_parse_data({"dataframe_split": loads_body(body)["dataframe_split"]}), NAMES)
    assert outcome(lambda: prepare(schema, decoded)) == outcome(lambda: schema.validate_rows(reference))


# -- validating ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 10), data=st.data(), schema=schemas())
def test_the_numpy_checks_accept_and_refuse_exactly_what_the_row_validator_does(
        n: int, data: Any, schema: ModelSchema) -> None:
    flat = data.draw(st.lists(st.one_of(plain_numbers, plain_numbers, plain_numbers, st.just(math.nan),
                                        st.just(math.inf), st.just(-math.inf), st.integers(2**63, 2**70)),
                              min_size=n * 3, max_size=n * 3))
    block = numbers(NAMES, flat)
    assert block is not None
    reference = [{c: None if v != v else v for c, v in zip(NAMES, flat[i:i + 3], strict=True)}
                 for i in range(0, len(flat), 3)]
    got, want = outcome(lambda: prepare(schema, block)), outcome(lambda: schema.validate_rows(reference))
    assert got == want
    if got[0] == "ok":
        result = prepare(schema, block)
        if result.matrix is not None:  # what the model is given is what was validated
            assert np.array_equal(result.matrix, np.array([list(r.values()) for r in result], dtype=np.float64))


def test_the_fast_path_is_taken_for_plain_float_rows_and_refusals_name_the_row_and_column() -> None:
    schema = ModelSchema(tuple(Column(n, "double", True, Bounds(ge=0.0) if n == "b.c" else None) for n in NAMES))
    block = numbers(NAMES, [1.0, 2.0, 3.0, 4, 5.0, 6.0])
    result = prepare(schema, block)
    assert result.matrix is not None and result.matrix.shape == (2, 3)
    assert result == [{"a": 1.0, "b.c": 2.0, "d/e f": 3.0}, {"a": 4.0, "b.c": 5.0, "d/e f": 6.0}]
    assert type(result[1]["a"]) is float
    with pytest.raises(InvalidFeatures) as refused:
        prepare(schema, numbers(NAMES, [1.0, 2.0, 3.0, 4.0, -5.0, math.inf]))
    assert refused.value.errors == [
        {"row": 1, "field": "b.c", "message": "Input should be greater than or equal to 0"},
        {"row": 1, "field": "d/e f", "message": "must be a finite number (NaN and infinity are not accepted)"}]
    assert str(refused.value) == "invalid features: row 1 b.c, row 1 d/e f"


def test_anything_but_plain_numbers_goes_the_row_path() -> None:
    assert numbers(NAMES, [1.0, True, 3.0]) is None
    assert numbers(NAMES, [1.0, None, 3.0]) is None
    assert numbers(NAMES, [1.0, "2", 3.0]) is None
    assert numbers(NAMES, [1.0, 10**400, 3.0]) is None  # past a float: the validator says so
    assert numbers(NAMES, []) is None


def test_requests_joined_into_one_model_call_keep_their_matrix_only_when_all_have_one() -> None:
    schema = ModelSchema(tuple(Column(n, "double") for n in NAMES))
    one = prepare(schema, numbers(NAMES, [1.0, 2.0, 3.0]))
    two = prepare(schema, numbers(NAMES, [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]))
    both = join([one, two])
    assert both.matrix is not None and both.matrix.shape == (3, 3)
    assert both == [*one, *two]
    mixed = join([one, Rows.of_dicts(schema.validate_rows([{"a": 1, "b.c": 2, "d/e f": 3}]))])
    assert getattr(mixed, "matrix", None) is None and len(mixed) == 2


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 12), data=st.data(), schema=schemas(), fmt=st.sampled_from(["inputs", "instances"]),
       order=st.permutations(NAMES))
def test_inputs_as_columns_validate_as_mlflows_parser_and_the_row_validator_would(
        n: int, data: Any, schema: ModelSchema, fmt: str, order: list[str]) -> None:
    columns = {name: data.draw(st.lists(values, min_size=n, max_size=n)) for name in order}
    body = json.dumps({fmt: columns}).encode()
    try:
        decoded, _ = decode(body, "application/json", RequestShape(NAMES, max_rows=100))
    except MalformedBody:
        with pytest.raises(Exception):  # noqa: B017 (whatever MLflow raises, decode reports as MalformedBody)
            _rows(infer_and_parse_data({fmt: loads_body(body)[fmt]}), NAMES)
        return
    reference = _rows(infer_and_parse_data({fmt: loads_body(body)[fmt]}), NAMES)
    assert outcome(lambda: prepare(schema, decoded)) == outcome(lambda: schema.validate_rows(reference))
    flat = [v for c in columns.values() for v in c]
    plain_only = all(type(v) is float or (type(v) is int and abs(v) < 10**300) for v in flat)
    # with integers in the body, a value past the 64-bit range goes MLflow's parser (it reads it its own way)
    past_int64 = any(type(v) is int for v in flat) and any(abs(v) >= 2**63 for v in flat
                                                          if type(v) is int or (type(v) is float and math.isfinite(v)))
    assert (decoded.matrix is not None) == (plain_only and not past_int64)
