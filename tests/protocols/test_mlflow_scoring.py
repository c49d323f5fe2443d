"""MLflow's scoring protocol as pure functions: every input format gives the same rows, in order."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.errors import MalformedBody
from gateway.protocols.limits import RequestShape
from gateway.protocols.mlflow_scoring import decode

COLUMNS = ["a", "b.c", "d/e f"]
SHAPE = RequestShape(tuple(COLUMNS), max_rows=1000)
rows_strategy = st.lists(st.fixed_dictionaries({c: st.floats(-1e6, 1e6, allow_nan=False) for c in COLUMNS}),
                         min_size=1, max_size=20)


def _bodies(rows: list[dict[str, Any]]) -> dict[str, tuple[bytes, str]]:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    csv = io.StringIO()
    frame.to_csv(csv, index=False)
    as_json = {
        "dataframe_split": {"dataframe_split": {"columns": COLUMNS, "data": frame.to_numpy().tolist()}},
        "dataframe_split_orient": {"dataframe_split": json.loads(frame.to_json(orient="split", double_precision=15))},
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "inputs_columns": {"inputs": {c: [r[c] for r in rows] for c in COLUMNS}},
        "inputs_rows": {"inputs": rows},
        "instances_positional": {"instances": [[r[c] for c in COLUMNS] for r in rows]},
    }
    out = {k: (json.dumps(v).encode(), "application/json") for k, v in as_json.items()}
    out["csv"] = (csv.getvalue().encode(), "text/csv")
    return out


@settings(max_examples=40, deadline=None)
@given(rows=rows_strategy)
def test_every_format_splits_into_the_same_rows_in_order(rows: list[dict[str, Any]]) -> None:
    for name, (body, ctype) in _bodies(rows).items():
        decoded, params = decode(body, ctype, SHAPE)
        assert params == {}
        assert len(decoded) == len(rows), name
        for got, want in zip(decoded, rows, strict=True):
            assert got.keys() == want.keys(), name
            lossy = name in ("csv", "dataframe_split_orient")  # text with 15 significant digits
            for c in COLUMNS:
                assert got[c] == pytest.approx(want[c], rel=1e-9 if lossy else 1e-12, abs=1e-15 if lossy else 0), name


def test_params_and_charset() -> None:
    body = json.dumps({"dataframe_records": [{"a": 1, "b.c": 2, "d/e f": 3}], "params": {"probabilities": True}})
    rows, params = decode(body.encode(), "application/json; charset=utf-8", SHAPE)
    assert rows == [{"a": 1, "b.c": 2, "d/e f": 3}] and params == {"probabilities": True}
    with pytest.raises(MalformedBody, match="UTF-8"):
        decode(body.encode(), "application/json; charset=latin-1", SHAPE)


@pytest.mark.parametrize(("body", "ctype", "match"), [
    (b"[1, 2]", "application/json", "JSON object"),
    (b"{}", "application/json", "exactly one of"),
    (b'{"instances": [], "inputs": []}', "application/json", "exactly one of"),
    (b"{nope", "application/json", "malformed JSON"),
    (b'{"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}', "application/json", "cannot read"),
    (b"a,b\n1", "text/plain", "unsupported content type"),
    (b'{"instances": [[1, 2]]}', "application/json", "positional rows must have 3 values"),
])
def test_malformed_bodies_say_what_is_wrong(body: bytes, ctype: str, match: str) -> None:
    with pytest.raises(MalformedBody, match=match):
        decode(body, ctype, SHAPE)
