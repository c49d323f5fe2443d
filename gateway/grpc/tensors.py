"""``ModelInferRequest`` in, rows out; the answer back as a ``ModelInferResponse``.

An input's values come either in its ``contents`` (the typed field its datatype names: FP64 in
``fp64_contents``, INT8 to INT32 in ``int_contents``, ...) or as bytes in the request's
``raw_input_contents``, one entry per input in order, as Triton's client sends them. Either way the
values are held to the same rules as the REST protocol's (gateway/protocols/oip.py): the shape
checked against the limits before any value is read, integers within their type, floats narrowed
to their width, the same messages naming the input. The answer's outputs come back as
``raw_output_contents`` when the request sent raw inputs or asks with the ``raw_output`` parameter,
else in ``contents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from tritonclient.grpc import service_pb2 as pb

from gateway.domain.batch import Rows
from gateway.domain.errors import MalformedBody
from gateway.protocols import oip
from gateway.protocols.limits import RequestShape

# The contents field that carries each datatype's values (FP16 has none: it travels raw only).
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}


@dataclass(frozen=True, slots=True)
class InferAsk:
    """What a request asks for beside its rows."""

    probabilities: bool
    requested: list[str] | None  # output names; None: every output
    raw: bool  # answer in raw_output_contents


def parameter(value: pb.InferParameter) -> Any:
    """An InferParameter's value, whichever of its fields is set (None when none is)."""
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def decode(request: pb.ModelInferRequest, limits: RequestShape) -> tuple[Rows, InferAsk]:
    """The request's rows and what it asks for; MalformedBody naming the field that is wrong."""
    inputs = request.inputs
    if not inputs:
        raise MalformedBody("an inference request needs at least one input in 'inputs'")
    limits.width(len(inputs), "inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise MalformedBody(f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; send one per "
                            "input, in the order of 'inputs'")
    tensors: dict[str, np.ndarray] = {}
    for i, spec in enumerate(inputs):
        name, datatype = spec.name, spec.datatype.upper()
        if name in tensors:
            raise MalformedBody(f"input {name!r} is given twice")
        shape = list(spec.shape)
        expected = oip.tensor_size(name, shape, limits)
        if raw:
            if spec.HasField("contents"):
                raise MalformedBody(f"input {name!r} has contents and the request has raw_input_contents; "
                                    "send one")
            data = oip.binary_tensor(name, datatype, raw[i], expected)
        else:
            data = oip.typed_values(name, datatype, _contents(name, datatype, spec.contents))
        if data.size != expected:
            raise MalformedBody(f"input {name!r}: shape {shape} needs {expected} values, got {data.size}")
        tensors[name] = data.reshape(shape) if shape else data
    return oip.rows_of(tensors, limits), _ask(request, bool(raw))


def _contents(name: str, datatype: str, contents: pb.InferTensorContents) -> list[Any]:
    field = CONTENTS.get(datatype)
    if field is None:
        if datatype == "FP16":
            raise MalformedBody(f"input {name!r}: FP16 has no contents field; send it in raw_input_contents")
        raise MalformedBody(f"input {name!r}: unsupported datatype {datatype!r}; one of {', '.join(CONTENTS)} "
                            "or FP16")
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise MalformedBody(f"input {name!r}: datatype {datatype} carries its values in contents.{field}, "
                            f"got contents.{others[0]}")
    values = list(getattr(contents, field))
    if datatype == "BYTES":
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise MalformedBody(f"input {name!r}: bytes_contents holds bytes that are not UTF-8 text") from None
    return values


def _ask(request: pb.ModelInferRequest, raw_inputs: bool) -> InferAsk:
    params = {key: parameter(value) for key, value in request.parameters.items()}
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in (oip.PREDICT, oip.PREDICT_PROBA)]
    if unknown:
        raise MalformedBody(f"unknown output(s) {unknown}; this model has {oip.PREDICT} and {oip.PREDICT_PROBA}")
    raw_output = params.get("raw_output")
    if raw_output is not None and not isinstance(raw_output, bool):
        raise MalformedBody(f"parameters.raw_output must be a bool_param, got {raw_output!r}")
    return InferAsk(probabilities=bool(params.get("probabilities")) or oip.PREDICT_PROBA in names,
                    requested=names or None, raw=raw_inputs if raw_output is None else raw_output)


def encode(model_name: str, version: str | None, request_id: str, labels: list[Any],
           probabilities: list[dict[str, float]] | None, ask: InferAsk,
           parameters: dict[str, str]) -> pb.ModelInferResponse:
    """The answer: ``predict`` (and ``predict_proba`` when asked), as the REST protocol builds them."""
    body = oip.encode(model_name, version, request_id, labels, probabilities if ask.probabilities else None,
                      ask.requested)
    response = pb.ModelInferResponse(model_name=model_name, model_version=version or "", id=request_id)
    for key, value in parameters.items():
        response.parameters[key].string_param = value
    for out in body["outputs"]:
        tensor = response.outputs.add(name=out["name"], datatype=out["datatype"], shape=out["shape"])
        if "classes" in out.get("parameters", {}):
            tensor.parameters["classes"].string_param = orjson.dumps(out["parameters"]["classes"]).decode()
        data, datatype = out["data"], out["datatype"]
        if ask.raw:
            response.raw_output_contents.append(oip.output_bytes(datatype, data))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in data)
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(data)
    return response

