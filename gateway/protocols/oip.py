"""The Open Inference Protocol (KServe v2, MLServer, Triton) over REST, as pure functions.

Inputs are either one tensor per signature column (shape ``[N]`` or ``[N, 1]``) or a single
``[N, n_columns]`` tensor in signature order. Tensor data may be flat or nested, as JSON, or in the
binary tensor extension that Triton's client uses by default (``Inference-Header-Content-Length``).
Outputs are ``predict`` (labels or values) and, when asked for, ``predict_proba`` ([N, classes]).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gateway.domain.batch import Rows
from gateway.domain.errors import MalformedBody
from gateway.domain.messages import shown
from gateway.protocols.body import json_object, loads_body, plain
from gateway.protocols.limits import LARGE_BODY_BYTES, RequestShape, count_json_arrays

HEADER_LENGTH = "inference-header-content-length"
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}


def split_binary(body: bytes, header_length: str | None,
                 limits: RequestShape | None = None) -> tuple[dict[str, Any], bytes]:
    """The JSON part of a request and the binary tensor bytes that follow it (if any)."""
    if header_length is None:
        json_part, rest = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise MalformedBody(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise MalformedBody(f"Inference-Header-Content-Length {n} is outside the body ({len(body)} bytes)")
        json_part, rest = body[:n], body[n:]
    if limits is not None and len(json_part) > LARGE_BODY_BYTES:
        # Each input's data, counted while streaming: a JSON tensor of 400,000 rows is refused from
        # its first values, not parsed whole.
        counts = count_json_arrays(json_part, ("inputs", "inputs.item.data"), limits.max_rows * len(limits.columns))
        for prefix, n in counts.items():
            if prefix == "inputs.item":
                limits.width(n, "inputs")
            elif prefix == "inputs.item.data.item":
                nested = counts.get(prefix + "[]", 0) > 0  # [[row], [row], ...] or flat values
                limits.rows_past(n, per_row=1 if nested else len(limits.columns))
    payload = loads_body(json_part)
    if not isinstance(payload, dict):
        raise MalformedBody("an inference request must be a JSON object with 'inputs'")
    return payload, rest


def tensor_size(name: str, shape: Any, limits: RequestShape) -> int:
    """The number of values a tensor of ``shape`` holds, once the shape is one this gateway takes:
    [N], [N, 1] or [N, columns], within the row and column limits (checked from the shape alone,
    before any data is read)."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise MalformedBody(f"input {name!r}: shape must be a list of non-negative integers")
    if len(shape) > 2:
        raise MalformedBody(f"input {name!r}: shape must be [N], [N, 1] or [N, columns], got {shape}")
    if shape:
        limits.rows(shape[0])
        if len(shape) == 2:
            limits.width(shape[1], f"input {name!r}")
    return math.prod(shape)


def _tensor(spec: Any, binary: memoryview, offset: int, limits: RequestShape) -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict) or "name" not in spec:
        raise MalformedBody("each input must be an object with name, shape, datatype and data")
    name, datatype = str(spec["name"]), str(spec.get("datatype", "")).upper()
    shape = spec.get("shape")
    expected = tensor_size(name, shape, limits)
    size = json_object(spec.get("parameters"), f"input {name!r}: parameters").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise MalformedBody(f"input {name!r}: parameters.binary_data_size must be a non-negative integer, "
                                f"got {size!r}")
        raw = bytes(binary[offset:offset + size])
        if len(raw) != size:
            raise MalformedBody(f"input {name!r}: binary_data_size {size} runs past the end of the body")
        offset += size
        data = binary_tensor(name, datatype, raw, expected)
        if "data" in spec:
            raise MalformedBody(f"input {name!r} has both data and parameters.binary_data_size; send one")
    else:
        if "data" not in spec:
            raise MalformedBody(f"input {name!r} has no data")
        data = typed_values(name, datatype, spec["data"])
    if data.size != expected:
        raise MalformedBody(f"input {name!r}: shape {shape} needs {expected} values, got {data.size}")
    return name, data.reshape(shape) if shape else data, offset


def binary_tensor(name: str, datatype: str, raw: bytes, expected: int) -> np.ndarray:
    """A tensor's values from its bytes, little-endian, as the binary extension and gRPC's
    ``raw_input_contents`` carry them (BYTES: each element a 4-byte length, then its bytes)."""
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
        items, i = [], 0
        while i < len(raw) and len(items) <= expected:
            n = int.from_bytes(raw[i:i + 4], "little")
            items.append(raw[i + 4:i + 4 + n].decode("utf-8", errors="replace"))
            i += 4 + n
        data = np.array(items, dtype=object)
    elif datatype in _NUMPY:
        itemsize = np.dtype(_NUMPY[datatype]).itemsize
        if len(raw) % itemsize:
            raise MalformedBody(f"input {name!r}: {len(raw)} bytes of data are not a whole number of {datatype} "
                                f"values ({itemsize} bytes each)")
        data = np.frombuffer(raw, dtype=_NUMPY[datatype])
    else:
        raise MalformedBody(f"input {name!r}: unsupported datatype {datatype!r}")
    return data


def typed_values(name: str, datatype: str, values: Any) -> np.ndarray:
    """A JSON tensor's values as its datatype holds them, exactly as the binary extension would carry
    them: BOOL true/false, integers within their type's range (5.0 is 5; 5.7 is refused), floats cast
    to their width (an FP16 1e-8 is 0.0, as in binary; 1e6 does not fit), BYTES strings."""
    flat = values if type(values) is list else [values]
    if any(type(v) is list for v in flat):
        if not all(type(v) is list for v in flat):
            raise MalformedBody(f"input {name!r}: data mixes lists and values; send it flat or one list per row")
        flat = list(itertools.chain.from_iterable(flat))  # [[row], [row], ...]
    kinds = set(map(type, flat))
    if datatype == "BYTES":
        if kinds - {str}:
            raise MalformedBody(f"input {name!r}: datatype BYTES holds strings, got {_first_not(flat, str)}")
        return np.array(flat, dtype=object)
    dtype = _NUMPY.get(datatype)
    if dtype is None:
        raise MalformedBody(f"input {name!r}: unsupported datatype {datatype!r}; one of {', '.join(_NUMPY)} or BYTES")
    if datatype == "BOOL":
        if kinds - {bool}:
            raise MalformedBody(f"input {name!r}: datatype BOOL holds true or false, got {_first_not(flat, bool)}")
        return np.array(flat, dtype=np.bool_)
    if kinds - {int, float}:
        raise MalformedBody(f"input {name!r}: datatype {datatype} holds numbers, got {_first_not(flat, int, float)}")
    if np.dtype(dtype).kind in "iu":
        fraction = next((v for v in flat if type(v) is float and not v.is_integer()), None)
        if fraction is not None:
            raise MalformedBody(f"input {name!r}: datatype {datatype} holds whole numbers, got {fraction!r}")
        whole = [int(v) for v in flat] if float in kinds else flat
        info = np.iinfo(dtype)
        for v in (min(whole, default=0), max(whole, default=0)):
            if not info.min <= v <= info.max:
                raise MalformedBody(f"input {name!r}: datatype {datatype} holds {info.min} to {info.max}, got {v}")
        return np.array(whole, dtype=dtype)
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError:  # an integer past a float's range
        raise MalformedBody(f"input {name!r}: a value does not fit datatype {datatype}") from None
    with np.errstate(over="ignore"):  # checked below, with the input named
        narrow = wide.astype(dtype)
    if (np.isfinite(wide) & ~np.isfinite(narrow)).any():
        raise MalformedBody(f"input {name!r}: a value does not fit datatype {datatype} (largest "
                            f"{float(np.finfo(dtype).max):g})")
    return narrow


def _first_not(values: list[Any], *kinds: type) -> str:
    """The first value not of ``kinds`` (bool is not an int here), as an error shows it."""
    bad = next(v for v in values if type(v) not in kinds)
    return shown(bad, 40)


def _block(columns: Sequence[str], data: np.ndarray) -> Rows | None:
    """One numeric [N, columns] tensor (binary, or JSON typed by its datatype) as a block for the
    columnar path; None for BOOL and BYTES (the row path, whose validator names what is wrong)."""
    if data.dtype.kind not in "fiu":
        return None
    return Rows(columns, data.astype(np.float64, copy=False), values=data)


def decode_inputs(payload: dict[str, Any], binary: bytes,
                  limits: RequestShape) -> Rows:
    """Rows from an inference request's ``inputs`` (one numeric [N, columns] tensor: a matrix for the
    columnar path, else row dicts); too many rows or columns are refused from the shapes, before any
    tensor is decoded."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise MalformedBody("an inference request needs a non-empty 'inputs' list")
    limits.width(len(inputs), "inputs")
    json_object(payload.get("parameters"), "parameters")
    view, offset = memoryview(binary), 0
    tensors: dict[str, np.ndarray] = {}
    for spec in inputs:
        name, data, offset = _tensor(spec, view, offset, limits)
        tensors[name] = data
    if offset != len(binary):
        raise MalformedBody(f"{len(binary) - offset} byte(s) after the last binary tensor: the inputs' "
                            f"binary_data_size add up to {offset}, the body carries {len(binary)}")
    return rows_of(tensors, limits)


def rows_of(tensors: dict[str, np.ndarray], limits: RequestShape) -> Rows:
    """Rows from decoded tensors, by name: one numeric [N, columns] tensor is a matrix for the columnar
    path; else one [N] or [N, 1] tensor per signature column, as row dicts."""
    columns = limits.columns
    if len(tensors) == 1:
        (name, data), = tensors.items()
        if data.ndim == 2 and data.shape[1] == len(columns) and (name not in columns or len(columns) > 1):
            block = _block(columns, data)
            if block is not None:
                return block
            return Rows.of_dicts([{c: plain(v) for c, v in zip(columns, row, strict=True)} for row in data])
        if data.ndim == 2 and data.shape[1] != 1 and name not in columns:
            raise MalformedBody(f"input {name!r}: shape {list(data.shape)} has {data.shape[1]} columns; the model "
                                f"has {len(columns)} ({', '.join(columns)}): send [N, {len(columns)}], or one "
                                "tensor per input")
    unknown = [n for n in tensors if n not in columns]
    if unknown:
        raise MalformedBody(f"unknown input(s) {unknown}; the model's inputs are {list(columns)}, or send one "
                            f"[N, {len(columns)}] tensor in that order")
    lengths = set()
    for name, data in tensors.items():
        if data.ndim == 2 and data.shape[1] == 1:
            tensors[name] = data = data[:, 0]
        if data.ndim != 1:
            raise MalformedBody(f"input {name!r}: shape must be [N] or [N, 1], got {list(data.shape)}")
        lengths.add(len(data))
    if len(lengths) != 1:
        raise MalformedBody(f"inputs have different lengths: { {n: len(d) for n, d in tensors.items()} }")
    n = lengths.pop()
    limits.rows(n)
    return Rows.of_dicts([{name: plain(data[i]) for name, data in tensors.items()} for i in range(n)])


def wants_probabilities(payload: dict[str, Any]) -> bool:
    params = json_object(payload.get("parameters"), "parameters")
    outputs = payload.get("outputs") or []
    return bool(params.get("probabilities")) or any(
        isinstance(o, dict) and o.get("name") == PREDICT_PROBA for o in outputs)


def datatype_of(values: list[Any]) -> str:
    """The tensor datatype that holds every value: decided from their distinct types, once."""
    kinds = set(map(type, values))
    if all(issubclass(k, bool) for k in kinds):
        return "BOOL"
    if all(issubclass(k, int) and not issubclass(k, bool) for k in kinds):
        return "INT64"
    if all(issubclass(k, int | float) and not issubclass(k, bool) for k in kinds):
        return "FP64"
    return "BYTES"


def encode(model_name: str, variant: str | None, request_id: str, labels: list[Any],
           probabilities: list[dict[str, float]] | None, requested: list[str] | None) -> dict[str, Any]:
    outputs = []
    if requested is None or PREDICT in requested:
        datatype = datatype_of(labels)
        outputs.append({"name": PREDICT, "shape": [len(labels)], "datatype": datatype,
                        "data": [str(v) for v in labels] if datatype == "BYTES" else labels})
    if probabilities is not None and (requested is None or PREDICT_PROBA in requested):
        classes = list(probabilities[0]) if probabilities else []
        outputs.append({"name": PREDICT_PROBA, "shape": [len(labels), len(classes)], "datatype": "FP64",
                        "parameters": {"classes": classes},
                        "data": [p[c] for p in probabilities for c in classes]})
    head = {"model_name": model_name, "model_version": variant} if variant is not None else {"model_name": model_name}
    return {**head, "id": request_id, "outputs": outputs}


def requested_outputs(payload: dict[str, Any]) -> list[str] | None:
    outputs = payload.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise MalformedBody(f"outputs must be a list of {{\"name\": ...}} objects, got {type(outputs).__name__}")
    if not outputs:
        return None
    for i, o in enumerate(outputs):
        if not isinstance(o, dict):
            raise MalformedBody(f"outputs[{i}] must be an object with a name, got {type(o).__name__}")
        json_object(o.get("parameters"), f"outputs[{i}].parameters")
    names = [o.get("name") for o in outputs]
    unknown = [n for n in names if n not in (PREDICT, PREDICT_PROBA)]
    if unknown:
        raise MalformedBody(f"unknown output(s) {unknown}; this model has {PREDICT} and {PREDICT_PROBA}")
    return [str(n) for n in names]


def output_bytes(datatype: str, data: list[Any]) -> bytes:
    """An output's values as bytes, little-endian, as the binary extension and gRPC's
    ``raw_output_contents`` carry them (BYTES: each element a 4-byte length, then its UTF-8)."""
    if datatype == "BYTES":
        return b"".join(len(b).to_bytes(4, "little") + b for b in (str(v).encode() for v in data))
    dtype = {"BOOL": np.bool_, "INT64": np.int64, "FP64": np.float64}[datatype]
    return np.asarray(data, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def binary_outputs(payload: dict[str, Any], body: dict[str, Any]) -> tuple[bytes, int] | None:
    """Re-encode outputs in the binary extension when the request asks for it (Triton's default).
    Returns (full body, JSON header length) or None for a plain JSON answer."""
    params = json_object(payload.get("parameters"), "parameters")
    asked = {o.get("name"): bool(json_object(o.get("parameters"), "outputs[].parameters").get("binary_data"))
             for o in payload.get("outputs") or [] if isinstance(o, dict)}
    default = bool(params.get("binary_data_output"))
    chunks = []
    for out in body["outputs"]:
        if not asked.get(out["name"], default):
            continue
        raw = output_bytes(out["datatype"], out["data"])
        out["parameters"] = {**out.get("parameters", {}), "binary_data_size": len(raw)}
        del out["data"]
        chunks.append(raw)
    if not chunks:
        return None
    header = json.dumps(body).encode()
    return header + b"".join(chunks), len(header)


def metadata(model_name: str, versions: list[str], columns: Sequence[tuple[str, str]], output_datatype: str,
             n_classes: int | None) -> dict[str, Any]:
    outputs = [{"name": PREDICT, "datatype": output_datatype, "shape": [-1]}]
    if n_classes:
        outputs.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, n_classes]})
    return {"name": model_name, "versions": versions, "platform": "mlflow",
            "inputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in columns], "outputs": outputs}


def error_body(message: str, **detail: Any) -> dict[str, Any]:
    """The Open Inference Protocol's error shape: ``{"error": message}`` (plus the gateway's details)."""
    return {"error": message, **detail}
