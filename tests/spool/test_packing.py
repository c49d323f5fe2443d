"""A request's records packed into one entry come back as the same records, whichever way they came:
a batch from the columnar path (a matrix), a batch of row dicts, or records built one by one."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.batch import Rows
from gateway.domain.records import SHARED_FIELDS, PredictionRecord, RecordBatch
from gateway.spool.packing import pack, unpack
from tests.harness.records import rec

NAMES = ("sepal length (cm)", "b.c", "d/e f")
shared_values = st.fixed_dictionaries({
    "request_id": st.text("abc-123", min_size=1, max_size=8), "role": st.sampled_from(["primary", "shadow"]),
    "model_version": st.sampled_from(["v1.0", "v2.0"]), "inference_time_ms": st.floats(0, 100),
    "ts_ms": st.integers(0, 2**41), "routing": st.sampled_from(["weighted", "sticky", "forced"]),
    "config_hash": st.just("abc"), "weights": st.just("v1.0=1"), "kind": st.just("classifier"),
    "batch_rows": st.integers(1, 2000), "request_time_ms": st.none() | st.floats(0, 100),
    "user": st.none() | st.text("0123456789abcdef", min_size=16, max_size=16),
    "headers": st.sampled_from(["", '{"x-country":"de"}'])})
labels = st.sampled_from(["Setosa", "Versicolor", "Virginica"])


def _round_trip(records: Any) -> list[PredictionRecord]:
    entries = pack(records)
    return [r for e in entries for r in unpack(e.shared, e.rows, e.first_row).records()]


@settings(max_examples=80, deadline=None)
@given(shared=shared_values, data=st.data(), n=st.integers(1, 20), matrix=st.booleans())
def test_a_batch_packs_into_one_entry_and_unpacks_into_its_records(shared: dict[str, Any], data: Any, n: int,
                                                                    matrix: bool) -> None:
    values = np.array(data.draw(st.lists(st.floats(-1e9, 1e9), min_size=3 * n, max_size=3 * n))).reshape(n, 3)
    rows: Any = Rows(NAMES, values) if matrix else [dict(zip(NAMES, r, strict=True)) for r in values.tolist()]
    predictions = data.draw(st.lists(labels, min_size=n, max_size=n))
    classes = ["Setosa", "Versicolor", "Virginica"]
    batch = RecordBatch(shared, rows, predictions, [classes.index(p) for p in predictions])
    (entry,) = pack(batch)
    assert (entry.request_id, entry.role, entry.n_rows, entry.first_row) == (shared["request_id"], shared["role"], n, 0)
    assert _round_trip(batch) == list(batch)
    assert [r.row_index for r in batch] == list(range(n))
    columns = unpack(entry.shared, entry.rows, entry.first_row)
    assert columns.features == [orjson.dumps(r.features).decode() for r in batch]  # the window table's text


def test_records_built_one_by_one_pack_by_request_and_keep_odd_rows() -> None:
    odd = rec(1, row=1, features={"a": 1.0})  # a row with other columns than its neighbours
    records = [rec(1, row=0), odd, rec(1, row=2), rec(2, row=0), rec(2, row=5, prediction="Virginica")]
    entries = pack(records)
    assert [(e.request_id, e.first_row, e.n_rows) for e in entries] == [("r1", 0, 3), ("r2", 0, 1), ("r2", 5, 1)]
    assert _round_trip(records) == records
    mixed = RecordBatch({name: getattr(odd, name) for name in SHARED_FIELDS},
                        [rec(1).features, odd.features], ["Setosa", "Setosa"], [0, 0])
    assert _round_trip(mixed) == list(mixed)  # rows with different columns: each row's own text
    assert pack(RecordBatch(mixed.shared, [], [], [])) == []


def test_matrix_rows_are_stored_as_a_blob_beside_entries_of_the_json_form(tmp_path: Any) -> None:
    """A columnar batch is stored in the binary form (a blob), an entry written as JSON text by the
    release before it (same table) still reads: the spool needs no migration for it."""
    import sqlite3

    from gateway.spool.packing import MATRIX
    from gateway.spool.store import PredictionSpool

    base = {name: getattr(rec(1), name) for name in SHARED_FIELDS}
    matrix = np.array([[5.1, 3.5, 1.4], [6.7, 3.0, 5.2]])
    batch = RecordBatch(base, Rows(NAMES, matrix), ["Setosa", "Virginica"], [0, 2])
    old = RecordBatch({**base, "request_id": "old"}, [dict(zip(NAMES, r, strict=True)) for r in matrix.tolist()],
                      ["Setosa", "Virginica"], [0, 2])
    spool = PredictionSpool(tmp_path)
    spool.append_many(batch)
    spool.append_many(old)
    spool.close()
    conn = sqlite3.connect(tmp_path / PredictionSpool.FILENAME)
    stored = conn.execute("SELECT typeof(rows), substr(rows, 1, 13) FROM entry_rows ORDER BY entry_id").fetchall()
    conn.close()
    assert stored[0] == ("blob", MATRIX) and stored[1][0] == "text"
    spool = PredictionSpool(tmp_path)
    assert spool.find_request("r1") == list(batch) and spool.find_request("old") == list(old)
    rows = spool.queue.claim(10)
    assert [r.record.features for r in rows] == [dict(zip(NAMES, v, strict=True)) for v in matrix.tolist()] * 2
    spool.close()
