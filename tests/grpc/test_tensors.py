"""gRPC's ModelInferRequest into rows and the answer back, as pure functions: ``contents`` and raw
bytes give the rows REST gives for the same tensors, each datatype's values in its own field, the
answer raw when the request was, and every bad field refused by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from gateway.domain.errors import MalformedBody
from gateway.grpc import tensors
from gateway.protocols import oip
from gateway.protocols.limits import RequestShape

COLUMNS = ["x", "y z", "w/v"]
SHAPE = RequestShape(tuple(COLUMNS), max_rows=1000)
matrices = st.integers(1, 30).flatmap(lambda n: st.lists(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=3, max_size=3), min_size=n, max_size=n))


def request_of(arr: np.ndarray, layout: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    if layout in ("matrix", "matrix_raw"):
        t = request.inputs.add(name="input-0", datatype="FP64", shape=list(arr.shape))
        if layout == "matrix_raw":
            request.raw_input_contents.append(arr.astype("<f8").tobytes())
        else:
            t.contents.fp64_contents.extend(arr.ravel().tolist())
        return request
    for j, c in enumerate(COLUMNS):
        t = request.inputs.add(name=c, datatype="FP64", shape=[len(arr)])
        if layout == "columns_raw":
            request.raw_input_contents.append(arr[:, j].astype("<f8").tobytes())
        else:
            t.contents.fp64_contents.extend(arr[:, j].tolist())
    return request


@settings(max_examples=50, deadline=None)
@given(matrix=matrices, layout=st.sampled_from(["matrix", "matrix_raw", "columns", "columns_raw"]))
def test_contents_and_raw_give_the_rows_rest_gives(matrix: list[list[float]], layout: str) -> None:
    arr = np.array(matrix, dtype=np.float64)
    rows, ask = tensors.decode(request_of(arr, layout), SHAPE)
    rest = oip.decode_inputs({"inputs": [{"name": "input-0", "shape": list(arr.shape), "datatype": "FP64",
                                          "data": arr.tolist()}]}, b"", SHAPE)
    assert rows == rest == [dict(zip(COLUMNS, r, strict=True)) for r in arr.tolist()]
    assert ask.raw is layout.endswith("raw") and not ask.probabilities and ask.requested is None


@pytest.mark.parametrize(("datatype", "field", "values"), [
    ("INT8", "int_contents", [1, -2, 3]), ("INT32", "int_contents", [7, 8, 9]), ("INT64", "int64_contents", [1, 2, 3]),
    ("UINT8", "uint_contents", [1, 2, 255]), ("UINT64", "uint64_contents", [1, 2, 3]),
    ("FP32", "fp32_contents", [0.5, 1.5, 2.5]), ("BOOL", "bool_contents", [True, False, True]),
])
def test_each_datatype_reads_its_own_contents_field(datatype: str, field: str, values: list[Any]) -> None:
    request = pb.ModelInferRequest(model_name="m")
    getattr(request.inputs.add(name="input", datatype=datatype, shape=[1, 3]).contents, field).extend(values)
    rows, _ = tensors.decode(request, SHAPE)
    assert [rows[0][c] for c in COLUMNS] == values


def _request(**tensor: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(**tensor)
    return request


def _with(request: pb.ModelInferRequest, change: Any) -> pb.ModelInferRequest:
    change(request)
    return request


def test_too_many_rows_are_refused_from_the_shape_before_any_value() -> None:
    from gateway.domain.errors import TooManyRows

    with pytest.raises(TooManyRows, match="1001 rows"):
        tensors.decode(_request(name="input", datatype="FP64", shape=[1001, 3]), SHAPE)


@pytest.mark.parametrize(("build", "says"), [
    (lambda: pb.ModelInferRequest(model_name="m"), "at least one input"),
    (lambda: _with(_request(name="input", datatype="INT8", shape=[1, 3]),
                   lambda r: r.inputs[0].contents.int_contents.extend([1, 2, 300])), "INT8 holds -128 to 127"),
    (lambda: _with(_request(name="input", datatype="FP64", shape=[1, 3]),
                   lambda r: r.inputs[0].contents.int64_contents.extend([1, 2, 3])), "contents.int64_contents"),
    (lambda: _request(name="input", datatype="FP16", shape=[1, 3]), "raw_input_contents"),
    (lambda: _request(name="input", datatype="COMPLEX", shape=[1, 3]), "unsupported datatype 'COMPLEX'"),
    (lambda: _request(name="input", datatype="FP64", shape=[-1, 3]), "non-negative"),
    (lambda: _with(_request(name="input", datatype="FP64", shape=[1, 3]),
                   lambda r: r.raw_input_contents.extend([b"", b""])), "2 entries for 1 inputs"),
    (lambda: _with(_request(name="input", datatype="BYTES", shape=[1, 3]),
                   lambda r: r.inputs[0].contents.bytes_contents.extend([b"\xff", b"a", b"b"])), "not UTF-8"),
    (lambda: _with(_request(name="x", datatype="FP64", shape=[1]),
                   lambda r: (r.inputs[0].contents.fp64_contents.append(1.0),
                              r.inputs.add(name="x", datatype="FP64", shape=[1]))), "given twice"),
    (lambda: _with(_request(name="input", datatype="FP64", shape=[1, 3]),
                   lambda r: (r.inputs[0].contents.fp64_contents.extend([1.0, 2.0, 3.0]),
                              r.outputs.add(name="logits"))), "unknown output(s) ['logits']"),
    (lambda: _with(_request(name="input", datatype="FP64", shape=[1, 3]),
                   lambda r: (r.inputs[0].contents.fp64_contents.extend([1.0, 2.0, 3.0]),
                              r.parameters["raw_output"].__setattr__("string_param", "yes"))), "bool_param"),
], ids=["no-inputs", "int-range", "wrong-field", "fp16", "datatype", "negative", "raw-count", "utf8",
        "twice", "output", "raw-output"])
def test_bad_fields_are_refused_by_name(build: Any, says: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        tensors.decode(build(), SHAPE)
    assert says in str(caught.value)


@given(labels=st.lists(st.sampled_from(["a", "bé", "c"]), min_size=1, max_size=20), raw=st.booleans())
def test_the_answer_carries_the_labels_and_probabilities_raw_or_in_contents(labels: list[str], raw: bool) -> None:
    probabilities = [{"a": 0.5, "bé": 0.25, "c": 0.25} for _ in labels]
    ask = tensors.InferAsk(probabilities=True, requested=None, raw=raw)
    response = tensors.encode("m", "v1", "rid", labels, probabilities, ask, {"routing_reason": "weighted"})
    assert [o.name for o in response.outputs] == ["predict", "predict_proba"]
    assert response.model_version == "v1" and response.parameters["routing_reason"].string_param == "weighted"
    if raw:
        got = oip.binary_tensor("predict", "BYTES", response.raw_output_contents[0], len(labels)).tolist()
        proba = np.frombuffer(response.raw_output_contents[1], "<f8")
    else:
        got = [b.decode() for b in response.outputs[0].contents.bytes_contents]
        proba = np.array(response.outputs[1].contents.fp64_contents)
    assert got == labels
    assert proba.reshape(len(labels), 3).tolist() == [[0.5, 0.25, 0.25]] * len(labels)
