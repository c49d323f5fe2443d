"""The Open Inference Protocol as pure functions: tensors split into rows and predictions join back,
in JSON and in the binary tensor extension."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.errors import MalformedBody
from gateway.protocols import oip
from gateway.protocols.limits import RequestShape

COLUMNS = ["x", "y z", "w/v"]
SHAPE = RequestShape(tuple(COLUMNS), max_rows=1000)
matrices = st.integers(1, 30).flatmap(lambda n: st.lists(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=3, max_size=3), min_size=n, max_size=n))


@settings(max_examples=50, deadline=None)
@given(matrix=matrices, layout=st.sampled_from(["columns", "columns_n1", "matrix", "nested", "binary"]))
def test_tensors_split_into_rows_in_order(matrix: list[list[float]], layout: str) -> None:
    arr = np.array(matrix, dtype=np.float64)
    n = len(arr)
    binary = b""
    if layout == "matrix":
        inputs = [{"name": "input-0", "shape": [n, 3], "datatype": "FP64", "data": arr.reshape(-1).tolist()}]
    elif layout == "nested":
        inputs = [{"name": "input-0", "shape": [n, 3], "datatype": "FP64", "data": arr.tolist()}]
    elif layout == "binary":
        inputs, chunks = [], []
        for i, c in enumerate(COLUMNS):
            raw = arr[:, i].tobytes()
            inputs.append({"name": c, "shape": [n], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}})
            chunks.append(raw)
        binary = b"".join(chunks)
    else:
        shape = [n, 1] if layout == "columns_n1" else [n]
        inputs = [{"name": c, "shape": shape, "datatype": "FP64", "data": arr[:, i].tolist()}
                  for i, c in enumerate(COLUMNS)]
    rows = oip.decode_inputs({"inputs": inputs}, binary, SHAPE)
    assert rows == [dict(zip(COLUMNS, r, strict=True)) for r in arr.tolist()]


def test_binary_request_as_triton_client_sends_it() -> None:
    import tritonclient.http as triton
    from tritonclient.http._utils import _get_inference_request

    arr = np.array([1.5, 2.5], dtype=np.float64)
    inputs = []
    for c in COLUMNS:
        t = triton.InferInput(c, [2], "FP64")
        t.set_data_from_numpy(arr, binary_data=True)
        inputs.append(t)
    body, header_length = _get_inference_request(inputs, "rid", None, 0, 0, None, None, None, None)
    payload, rest = oip.split_binary(body if isinstance(body, bytes) else body.encode(),
                                     None if header_length is None else str(header_length))
    assert payload["id"] == "rid" and oip.decode_inputs(payload, rest, SHAPE) == [
        dict.fromkeys(COLUMNS, 1.5), dict.fromkeys(COLUMNS, 2.5)]


def test_outputs_join_back_and_encode_binary() -> None:
    body = oip.encode("M", "v2.0", "rid", ["a", "b"], [{"a": 0.9, "b": 0.1}, {"a": 0.2, "b": 0.8}], None)
    assert body["model_version"] == "v2.0" and body["id"] == "rid"
    predict, proba = body["outputs"]
    assert predict == {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}
    assert proba["shape"] == [2, 2] and proba["data"] == [0.9, 0.1, 0.2, 0.8]
    numbers = oip.encode("M", "v1.0", "r", [1.5, 2.5], None, ["predict"])
    packed = oip.binary_outputs({"parameters": {"binary_data_output": True}}, numbers)
    assert packed is not None
    content, header_length = packed
    header: dict[str, Any] = json.loads(content[:header_length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert np.frombuffer(content[header_length:], dtype=np.float64).tolist() == [1.5, 2.5]
    assert oip.binary_outputs({}, oip.encode("M", "v1.0", "r", [1], None, None)) is None


@pytest.mark.parametrize(("payload", "match"), [
    ({}, "non-empty 'inputs'"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0]}]}, "needs 2 values"),
    ({"inputs": [{"name": "q", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, "unknown input"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]},
                 {"name": "y z", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]}, "different lengths"),
    ({"inputs": [{"name": "x", "shape": "2", "datatype": "FP64", "data": [1.0]}]}, "shape must be"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64"}]}, "has no data"),
])
def test_bad_requests_say_what_is_wrong(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(MalformedBody, match=match):
        oip.decode_inputs(payload, b"", SHAPE)


def test_binary_sizes_are_checked() -> None:
    with pytest.raises(MalformedBody, match="outside the body"):
        oip.split_binary(b"{}", "10")
    inputs = [{"name": "x", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]
    with pytest.raises(MalformedBody, match="runs past the end"):
        oip.decode_inputs({"inputs": inputs}, b"\x00" * 8, SHAPE)


def _datatype_per_value(values: list[Any]) -> str:  # the definition, value by value
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=3)),
                       max_size=12))
def test_the_output_datatype_is_decided_once_from_the_distinct_types(values: list[Any]) -> None:
    assert oip.datatype_of(values) == _datatype_per_value(values)
    body = oip.encode("m", "v1.0", "r", values, None, None)
    (out,) = body["outputs"]
    assert out["datatype"] == _datatype_per_value(values)
    assert out["data"] == ([str(v) for v in values] if out["datatype"] == "BYTES" else values)


def _decode(inputs: list[dict[str, Any]], binary: bytes = b"") -> Any:
    return oip.decode_inputs({"inputs": inputs}, binary, SHAPE)


@pytest.mark.parametrize("datatype,values,why", [
    ("INT8", [5.7, 1, 2], "whole numbers, got 5.7"),
    ("UINT8", [5.7, 1, 2], "whole numbers"),
    ("UINT8", [256, 1, 2], "holds 0 to 255, got 256"),
    ("INT8", [-129, 1, 2], "holds -128 to 127, got -129"),
    ("BOOL", [0.5, 1.0, 2.0], "true or false, got 0.5"),
    ("BYTES", [1.5, 2.0, 3.0], "holds strings, got 1.5"),
    ("FP16", [1e6, 1.0, 2.0], "does not fit datatype FP16"),
    ("FP32", [True, 1.0, 2.0], "holds numbers, got True"),
    ("FP64", ["1", 1.0, 2.0], "holds numbers, got '1'"),
    ("COMPLEX", [1.0, 1.0, 2.0], "unsupported datatype 'COMPLEX'"),
])
def test_json_tensors_hold_only_what_their_datatype_holds(datatype: str, values: list[Any], why: str) -> None:
    with pytest.raises(MalformedBody, match="input 'input-0'") as err:
        _decode([{"name": "input-0", "shape": [1, 3], "datatype": datatype, "data": values}])
    assert why in str(err.value)


def test_json_and_binary_carry_the_same_values() -> None:
    """FP16 1e-8 is 0.0 in binary; as JSON it is now the same 0.0 (the bounds then refuse it alike), and
    5.0 for an INT32 is 5."""
    block = _decode([{"name": "input-0", "shape": [1, 3], "datatype": "FP16", "data": [1e-8, 1.5, 2.0]}])
    raw = np.array([1e-8, 1.5, 2.0], dtype=np.float16).tobytes()
    binary = _decode([{"name": "input-0", "shape": [1, 3], "datatype": "FP16",
                       "parameters": {"binary_data_size": len(raw)}}], raw)
    assert block.dicts() == binary.dicts() == [{"x": 0.0, "y z": 1.5, "w/v": 2.0}]
    ints = _decode([{"name": "input-0", "shape": [1, 3], "datatype": "INT32", "data": [5.0, 1, 2]}])
    assert ints.dicts() == [{"x": 5.0, "y z": 1.0, "w/v": 2.0}]


def test_binary_bodies_must_add_up() -> None:
    raw = np.array([1.0, 2.0, 3.0]).tobytes()
    spec = {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}
    with pytest.raises(MalformedBody, match=r"4 byte\(s\) after the last binary tensor"):
        _decode([spec], raw + b"\0\0\0\0")
    with pytest.raises(MalformedBody, match=r"both data and parameters\.binary_data_size"):
        _decode([{**spec, "data": [1.0, 2.0, 3.0]}], raw)


def test_a_tensor_of_the_wrong_width_names_the_column_count() -> None:
    with pytest.raises(MalformedBody, match=r"shape \[1, 2\] has 2 columns; the model has 3 \(x, y z, w/v\)"):
        _decode([{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}])


@given(values=st.dictionaries(st.sampled_from(["x-a", "x-b"]), st.lists(st.text(max_size=200), min_size=1,
                                                                          max_size=3)))
def test_logged_values_join_a_names_lines_and_cut_them(values: dict[str, list[str]]) -> None:
    """One rule for logged HTTP headers and gRPC metadata."""
    from gateway.protocols.body import LOGGED_VALUE_CHARS, logged_values

    text = logged_values(values)
    assert text == "" if not values else json.loads(text) == {
        k: ", ".join(v)[:LOGGED_VALUE_CHARS] for k, v in values.items()}


def test_a_request_id_is_checked_by_one_rule() -> None:
    from gateway.protocols.body import request_id

    assert request_id(None, "x") is None and request_id("a.b_c:1-2", "x") == "a.b_c:1-2"
    for bad in ("has space", "", "x" * 129, 5):
        with pytest.raises(MalformedBody, match="where must be 1-128"):
            request_id(bad, "where")
