"""Too many rows, too many columns and no rows at all are refused by the wire formats from their
counts, before anything is built per row: the second attack's bodies, each a clear 4xx."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from gateway.domain.errors import MalformedBody, TooManyColumns, TooManyRows
from gateway.protocols import mlflow_scoring, oip
from gateway.protocols.limits import RequestShape

COLUMNS = ("a", "b", "c", "d")
SHAPE = RequestShape(COLUMNS, max_rows=1000)
JSON = "application/json"


def _quick(call, error: type[Exception], seconds: float = 2.0) -> Exception:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    with pytest.raises(error) as info:
        call()
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"{error.__name__} took {elapsed:.2f} s"
    return info.value


def test_a_csv_of_a_hundred_thousand_columns_is_refused_from_its_header() -> None:
    body = (",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("1" * 100_000) + "\n").encode()
    err = _quick(lambda: mlflow_scoring.decode(body, "text/csv", SHAPE), TooManyColumns)
    assert err.status == 422 and "100000 columns" in str(err) and "a, b, c, d" in str(err)


def test_a_csv_of_a_million_rows_is_refused_from_its_line_breaks() -> None:
    body = ("a,b,c,d\n" + "1,2,3,4\n" * 1_000_000).encode()
    err = _quick(lambda: mlflow_scoring.decode(body, "text/csv", SHAPE), TooManyRows)
    assert err.status == 413 and "1000000 rows" in str(err)


def test_line_breaks_inside_quotes_are_not_rows() -> None:
    body = ("a,b,c,d\n" + '1,2,3,"x\ny"\n' * 1000).encode()  # 2,000 line breaks, 1,000 records: the limit
    rows, _ = mlflow_scoring.decode(body, "text/csv", SHAPE)
    assert len(rows) == 1000 and rows[0]["d"] == "x\ny"


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": list(COLUMNS), "data": [[1, 2, 3, 4]] * 550_000}},
    {"dataframe_records": [dict.fromkeys(COLUMNS, 1)] * 550_000},
    {"instances": [[1, 2, 3, 4]] * 550_000},
    {"inputs": {c: [1] * 550_000 for c in COLUMNS}},
])
def test_json_formats_of_half_a_million_rows_are_refused_from_their_lengths(payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    err = _quick(lambda: mlflow_scoring.decode(body, JSON, SHAPE), TooManyRows)
    assert "more than 1000 rows" in str(err)  # counted while streaming, as far as the limit


def test_json_columns_past_the_signature_are_refused() -> None:
    body = json.dumps({"dataframe_split": {"columns": [f"c{i}" for i in range(5000)], "data": [[0] * 5000]}})
    assert "5000 columns" in str(_quick(lambda: mlflow_scoring.decode(body.encode(), JSON, SHAPE), TooManyColumns))


@pytest.mark.parametrize("body, ctype", [
    (json.dumps({"dataframe_split": {"columns": list(COLUMNS), "data": []}}), JSON),
    (json.dumps({"dataframe_records": []}), JSON),
    (json.dumps({"instances": []}), JSON),
    (json.dumps({"inputs": []}), JSON),
    ("a,b,c,d\n", "text/csv"),
])
def test_zero_rows_are_a_client_error(body: str, ctype: str) -> None:
    with pytest.raises(MalformedBody, match="no rows"):
        mlflow_scoring.decode(body.encode(), ctype, SHAPE)


def _binary(rows: int) -> tuple[dict[str, object], bytes]:
    raw = np.ones((rows, 4), dtype=np.float64).tobytes()
    spec = {"name": "x", "shape": [rows, 4], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}
    return {"inputs": [spec]}, raw


def test_an_oip_binary_body_of_400_000_rows_is_refused_from_its_shape() -> None:
    payload, raw = _binary(400_000)
    assert "400000 rows" in str(_quick(lambda: oip.decode_inputs(payload, raw, SHAPE), TooManyRows))


@pytest.mark.parametrize("spec, match", [
    ({"name": "x", "shape": [0, 4], "datatype": "FP64", "data": []}, "no rows"),
    ({"name": "x", "shape": [2**62, 4], "datatype": "FP64", "data": []}, "rows"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": "abc"}},
     "binary_data_size must be a non-negative integer"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": [1]}},
     "binary_data_size must be a non-negative integer"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 23}},
     "not a whole number of FP64"),
    ({"name": "x", "shape": [1, 4], "datatype": "FP64", "parameters": "x", "data": [1, 2, 3, 4]},
     "parameters must be a JSON object"),
    ({"name": "x", "shape": [1, 9], "datatype": "FP64", "data": [0] * 9}, "9 columns"),
    ({"name": "x", "shape": [1, 2, 2], "datatype": "FP64", "data": [0] * 4}, "shape must be"),
])
def test_malformed_oip_tensors_are_4xx_naming_the_field(spec: dict[str, object], match: str) -> None:
    with pytest.raises((MalformedBody, TooManyRows, TooManyColumns), match=match) as info:
        oip.decode_inputs({"inputs": [spec]}, b"\x00" * 32, SHAPE)
    assert 400 <= info.value.status < 500  # type: ignore[attr-defined]


@pytest.mark.parametrize("payload, match", [
    ({"parameters": "x"}, "parameters must be a JSON object"),
    ({"parameters": [1]}, "parameters must be a JSON object"),
    ({"outputs": "x"}, "outputs must be a list"),
    ({"outputs": [{"name": "predict", "parameters": [1]}]}, "parameters must be a JSON object"),
])
def test_malformed_oip_request_fields_are_400(payload: dict[str, object], match: str) -> None:
    full = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}], **payload}
    with pytest.raises(MalformedBody, match=match):
        oip.decode_inputs(full, b"", SHAPE)
        oip.requested_outputs(full)
        oip.wants_probabilities(full)


@pytest.mark.parametrize("nested", [True, False])
def test_an_oip_json_tensor_of_400_000_rows_is_refused_while_streaming(nested: bool) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]] * 400_000
    data = rows if nested else [v for r in rows for v in r]
    body = json.dumps({"inputs": [{"name": "x", "shape": [400_000, 4], "datatype": "FP64", "data": data}]}).encode()
    err = _quick(lambda: oip.split_binary(body, None, SHAPE), TooManyRows, seconds=0.5)
    assert "more than 1000 rows" in str(err)


def test_a_large_dataframe_split_is_refused_while_streaming() -> None:
    body = json.dumps({"dataframe_split": {"columns": list(COLUMNS), "data": [[1, 2, 3, 4]] * 550_000}}).encode()
    _quick(lambda: mlflow_scoring.decode(body, JSON, SHAPE), TooManyRows, seconds=0.2)  # the full parse: 0.3 s


def test_a_large_valid_body_still_decodes() -> None:
    body = json.dumps({"dataframe_split": {"columns": list(COLUMNS), "data": [[1.5, 2, 3, 4]] * 1000},
                       "params": {"note": "x" * 100_000}}).encode()  # past the streaming threshold, within limits
    rows, params = mlflow_scoring.decode(body, JSON, SHAPE)
    assert len(rows) == 1000 and rows[0] == {"a": 1.5, "b": 2, "c": 3, "d": 4} and params["note"] == "x" * 100_000


def test_the_streaming_count_gives_up_on_deep_nesting_at_once() -> None:
    from gateway.protocols.limits import count_json_arrays

    nested = b"[" * 100_000 + b"]" * 100_000  # a prefix-tracking parser needed gigabytes for this
    start = time.perf_counter()
    assert count_json_arrays(nested, ["inputs"], 1000) == {}
    assert time.perf_counter() - start < 1.0
