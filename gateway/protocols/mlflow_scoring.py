"""MLflow's scoring protocol (``mlflow models serve``'s ``/invocations``), as pure functions.

The request is parsed by MLflow's own parser, so every format it takes is taken the same way:
``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` (with optional ``params``) as
JSON, and ``text/csv``. The result is plain rows for the gateway's validator, which names the row
and column of any bad value; a ``dataframe_split`` of plain numbers in the signature's column order,
and ``inputs``/``instances`` given as one list of plain numbers per signature column, skip the parser
and become one matrix for the columnar path (gateway/variants/columns.py).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from typing import Any

# Imported with the module, before the gateway serves: a request importing mlflow while the model
# loader's thread imports it too can deadlock on the import lock (seen at start-up under traffic).
import numpy as np
import pandas as pd

from gateway.domain.batch import Rows, numbers
from gateway.domain.errors import MalformedBody
from gateway.domain.messages import first_line
from gateway.mlflow.entities import MlflowException, infer_and_parse_data
from gateway.protocols.body import json_object, loads_body, plain
from gateway.protocols.limits import LARGE_BODY_BYTES, RequestShape, count_json_arrays

CSV = "text/csv"
JSON = "application/json"
PROBABILITIES_PARAM = "probabilities"  # reserved by the gateway: also return class probabilities


def decode(body: bytes, content_type: str,
           shape: RequestShape) -> tuple[Rows, dict[str, Any]]:
    """(the rows: a matrix for a block of plain numbers, else row dicts; params) from an /invocations
    body. MalformedBody says what is wrong with it, and TooManyRows or TooManyColumns what is too
    large, before anything is built per row."""
    mime, _, options = content_type.partition(";")
    mime = mime.strip().lower() or JSON
    charset = options.partition("charset=")[2].strip().lower() or "utf-8"
    if charset not in ("utf-8", "utf8"):
        raise MalformedBody(f"only UTF-8 bodies are supported, not {charset}")
    if mime == CSV:
        _csv_counts(body, shape)
        return _counted(_csv_rows(body), shape), {}
    if mime != JSON and not mime.endswith("+json"):
        raise MalformedBody(f"unsupported content type {mime!r}; send application/json or text/csv")
    if len(body) > LARGE_BODY_BYTES:
        _streamed_counts(body, shape)
    payload = loads_body(body)
    if not isinstance(payload, dict):
        raise MalformedBody("the body must be a JSON object with one of dataframe_split, dataframe_records, "
                            f"instances or inputs; got a {type(payload).__name__}")
    params = json_object(payload.get("params"), "params")
    formats = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in payload]
    if len(formats) != 1:
        raise MalformedBody("the body must have exactly one of dataframe_split, dataframe_records, instances or "
                            f"inputs; got keys {sorted(payload)}")
    _json_counts(formats[0], payload[formats[0]], shape)
    block = (_split_block(payload[formats[0]], shape.columns) if formats[0] == "dataframe_split"
             else _columns_block(payload[formats[0]], shape.columns) if formats[0] in ("inputs", "instances")
             else None)
    if block is not None:
        shape.rows(len(block))
        return block, params
    try:
        parsed = infer_and_parse_data({formats[0]: payload[formats[0]]})
    except (MlflowException, ValueError, TypeError, KeyError, IndexError) as exc:
        raise MalformedBody(f"cannot read {formats[0]}: {first_line(exc)}") from None
    return _counted(_rows(parsed, shape.columns), shape), params


def _split_block(value: Any, columns: Sequence[str]) -> Rows | None:
    """A ``dataframe_split`` of plain numbers under the signature's columns, in its order, as a block
    for the columnar path; None sends anything else through MLflow's parser."""
    if not isinstance(value, dict) or set(value) - {"columns", "data"} or value.get("columns") != list(columns):
        return None
    data, k = value.get("data"), len(columns)
    if not isinstance(data, list) or not data or not all(type(row) is list and len(row) == k for row in data):
        return None
    return numbers(columns, list(itertools.chain.from_iterable(data)), int64_only=True)


def _columns_block(value: Any, columns: Sequence[str]) -> Rows | None:
    """``inputs`` (or ``instances``) as one list per column, under the signature's column names (in
    any order), of plain numbers and equal lengths, as a block in signature order; None sends
    anything else through MLflow's parser."""
    if not isinstance(value, dict) or set(value) != set(columns):
        return None
    lists = [value[c] for c in columns]
    if not all(type(v) is list for v in lists) or not lists[0] or len({len(v) for v in lists}) != 1:
        return None
    return numbers(columns, list(itertools.chain.from_iterable(zip(*lists, strict=True))), int64_only=True)


def _counted(rows: list[dict[str, Any]], shape: RequestShape) -> Rows:
    shape.rows(len(rows))
    return Rows.of_dicts(rows)


def _streamed_counts(body: bytes, shape: RequestShape) -> None:
    """A large JSON body's rows and columns, counted while streaming it (see limits.py)."""
    budget = max(shape.max_rows, len(shape.columns))
    counts = count_json_arrays(body, ("dataframe_split.data", "dataframe_split.columns", "dataframe_records",
                                      "instances", "inputs", "instances.*", "inputs.*"), budget)
    for prefix, n in counts.items():
        if prefix == "dataframe_split.columns.item":
            shape.width(n, "dataframe_split.columns")
        elif not prefix.endswith("[]"):
            shape.rows_past(n)


def _csv_counts(body: bytes, shape: RequestShape) -> None:
    """The header's columns, and the rows by their line breaks: counted before pandas reads anything."""
    header, _, rest = body.partition(b"\n")
    if header.count(b",") >= len(shape.columns) * 4 + 16:  # far past the signature, quoted commas or not
        shape.width(header.count(b",") + 1, "the CSV header")
    try:
        names = next(csv.reader([header.decode("utf-8")]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MalformedBody(f"malformed CSV header: {first_line(exc)}") from None
    shape.width(len(names), "the CSV header")
    lines = rest.count(b"\n") + (0 if rest.endswith(b"\n") or not rest else 1)
    if lines > shape.max_rows:
        # A quoted field may hold a line break: count records exactly, but only as far as the limit.
        records = csv.reader(io.TextIOWrapper(io.BytesIO(rest), encoding="utf-8", errors="replace", newline=""))
        if sum(1 for _ in itertools.islice(records, shape.max_rows + 1)) > shape.max_rows:
            shape.rows(lines)


def _json_counts(fmt: str, value: Any, shape: RequestShape) -> None:
    """Rows and columns of a JSON format, from its lists' lengths alone."""
    if fmt == "dataframe_split" and isinstance(value, dict):
        data, names = value.get("data"), value.get("columns")
        if isinstance(data, list):
            shape.rows(len(data))
            if names is None and data and isinstance(data[0], list):
                shape.width(len(data[0]), "dataframe_split.data[0]")
        if isinstance(names, list):
            shape.width(len(names), "dataframe_split.columns")
        return
    if isinstance(value, list):
        shape.rows(len(value))
        first = value[0]
        if isinstance(first, dict | list):
            shape.width(len(first), f"{fmt}[0]")
    elif isinstance(value, dict):  # one list per column
        shape.width(len(value), fmt)
        for column in value.values():
            if isinstance(column, list):
                shape.rows(len(column))


def _csv_rows(body: bytes) -> list[dict[str, Any]]:
    try:
        frame = pd.read_csv(io.BytesIO(body))
    except Exception as exc:
        raise MalformedBody(f"malformed CSV body: {first_line(exc)}") from None
    return _rows(frame, ())


def _frame_rows(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as dicts of plain values, column by column (``tolist`` gives Python
    scalars in one C loop per column; pandas' missing values become None)."""
    names = [str(c) for c in frame.columns]
    columns = []
    for _, column in frame.items():
        values = column.tolist()
        if column.dtype.kind == "O" or (column.dtype.kind == "f" and column.isna().any()):
            values = [plain(v) for v in values]
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)] if columns else \
        [{} for _ in range(len(frame))]


def _rows(parsed: Any, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Whatever MLflow's parser returned (DataFrame, column dict, list of row dicts, 2-D array) as rows."""
    if hasattr(parsed, "to_dict") and hasattr(parsed, "columns"):
        return _frame_rows(parsed)
    if isinstance(parsed, dict):
        arrays = {str(k): np.asarray(v).reshape(-1) for k, v in parsed.items()}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) > 1:
            raise MalformedBody(f"columns have different lengths: { {k: len(a) for k, a in arrays.items()} }")
        n = lengths.pop() if lengths else 0
        return [{k: plain(a[i]) for k, a in arrays.items()} for i in range(n)]
    if isinstance(parsed, list) and all(isinstance(r, dict) for r in parsed):
        return [{str(k): plain(v) for k, v in r.items()} for r in parsed]
    arr = np.asarray(parsed, dtype=object)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != len(columns):
        raise MalformedBody(f"positional rows must have {len(columns)} values in signature order {list(columns)}; "
                            f"got shape {list(arr.shape)}")
    return [{c: plain(v) for c, v in zip(columns, row, strict=True)} for row in arr]



def encode(labels: list[Any], probabilities: list[dict[str, float]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"predictions": labels}
    if probabilities is not None:
        out["probabilities"] = probabilities
    return out


ERROR_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "INVALID_PARAMETER_VALUE",
               422: "INVALID_PARAMETER_VALUE", 503: "TEMPORARILY_UNAVAILABLE",
               504: "DEADLINE_EXCEEDED"}


def error_body(status: int, message: str, **detail: Any) -> dict[str, Any]:
    """MLflow's error shape: ``{"error_code": ..., "message": ...}`` (plus the gateway's details), its
    code from the HTTP status as MLflow's own scoring server names them."""
    return {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message, **detail}
