"""A window's table, built column by column from its entries, holds exactly its records: per-input
columns when the entries agree on their inputs, one JSON text column otherwise; through Parquet too."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain import contract
from gateway.domain.batch import Rows
from gateway.domain.records import SHARED_FIELDS, PredictionRecord, RecordBatch
from gateway.export.table import FIXED_SCHEMA, records_table, table_parquet, window_summary, window_table
from gateway.spool.packing import pack, unpack
from tests.harness.records import rec

NAMES = ("sepal length (cm)", "b.c", "x")


def _rows(table: Any) -> list[dict[str, Any]]:
    """Each row of a window table as (shared fields, features, prediction, class index, row index)."""
    data = table.to_pylist()
    out = []
    for row in data:
        if "features" in row:
            features = orjson.loads(row["features"])
        else:
            features = {k.removeprefix(contract.RECORDS_FEATURE_PREFIX): v for k, v in row.items()
                        if k.startswith(contract.RECORDS_FEATURE_PREFIX)}
        out.append({**{k: row[k] for k in SHARED_FIELDS}, "features": features, "prediction": row["prediction"],
                    "class_index": row["class_index"], "row_index": row["row_index"]})
    return out


def _expected(records: list[PredictionRecord]) -> list[dict[str, Any]]:
    return [{**{k: getattr(r, k) for k in SHARED_FIELDS}, "features": r.features, "prediction": str(r.prediction),
             "class_index": r.class_index, "row_index": r.row_index} for r in records]


def _batch(i: int, n: int, values: np.ndarray, matrix: bool, first_row: int = 0, **shared: Any) -> RecordBatch:
    base = {k: getattr(rec(i, **shared), k) for k in SHARED_FIELDS}
    rows: Any = Rows(NAMES, values) if matrix else [dict(zip(NAMES, r, strict=True)) for r in values.tolist()]
    return RecordBatch(base, rows, ["Setosa"] * n, [0] * n, first_row)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6))
def test_a_window_of_batches_is_its_records_in_per_input_columns(data: Any, sizes: list[int]) -> None:
    batches, records = [], []
    for i, n in enumerate(sizes):
        values = np.array(data.draw(st.lists(st.floats(-1e6, 1e6), min_size=3 * n, max_size=3 * n))).reshape(n, 3)
        batch = _batch(i, n, values, matrix=data.draw(st.booleans()), first_row=data.draw(st.integers(0, 5)),
                       batch_rows=n, request_time_ms=data.draw(st.none() | st.floats(0, 50)),
                       user=data.draw(st.none() | st.just("00ff00ff00ff00ff")))
        batches.append(batch)
        records += list(batch)
    entries = [unpack(e.shared, e.rows, e.first_row) for b in batches for e in pack(b)]
    table = window_table(entries)
    assert "features" not in table.column_names
    assert [f"{contract.RECORDS_FEATURE_PREFIX}{n}" for n in NAMES] == table.column_names[-3:]
    assert table.schema.field(f"{contract.RECORDS_FEATURE_PREFIX}x").type == "double"
    assert _rows(table) == _expected(records)
    assert _rows(pq.read_table(io.BytesIO(table_parquet(table)))) == _expected(records)
    parquet = pq.read_table(io.BytesIO(table_parquet(table)))  # text columns read back as plain text
    assert parquet.select(FIXED_SCHEMA.names).schema == FIXED_SCHEMA


def test_entries_with_other_inputs_keep_json_text() -> None:
    odd = rec(2, features={"a": 1.0})
    records = [*list(_batch(1, 2, np.ones((2, 3)), matrix=True)), odd]
    table = records_table(records)
    assert "features" in table.column_names and not any(n.startswith(contract.RECORDS_FEATURE_PREFIX)
                                                        for n in table.column_names)
    assert _rows(table) == _expected(records)


def test_an_input_of_numbers_in_one_entry_and_text_in_another_keeps_json_text() -> None:
    records = [rec(1, features={"a": 1.5, "b": "x"}), rec(2, features={"a": "high", "b": "y"})]
    table = records_table(records)
    assert "features" in table.column_names
    assert _rows(table) == _expected(records)


def test_integers_and_floats_in_one_input_become_floats() -> None:
    records = [rec(1, features={"a": 1, "b": "x"}), rec(2, features={"a": 2.5, "b": "y"})]
    table = records_table(records)
    assert table.column(f"{contract.RECORDS_FEATURE_PREFIX}a").to_pylist() == [1.0, 2.5]
    assert table.column(f"{contract.RECORDS_FEATURE_PREFIX}b").to_pylist() == ["x", "y"]


def test_regressor_predictions_are_python_text_and_summarised_as_values() -> None:
    records = [rec(i, prediction=v, class_index=None, kind="regressor") for i, v in enumerate([5.0, 151.25, 1e-05])]
    table = records_table(records)
    assert table.column("prediction").to_pylist() == ["5.0", "151.25", "1e-05"]
    summary = window_summary(table)
    assert summary["prediction_value_p50"] == 5.0 and summary["count"] == 3.0
