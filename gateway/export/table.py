"""A window's table of records (``predictions.parquet``), built column by column from its entries.

One column per record field, and the features one column per input (``features.<column>``): an
entry in the binary form (a float64 matrix) gives its columns as slices of that matrix, so a window
of 1,000-row batches becomes its table without a Python object per row or value. The fields an
entry's rows share are built once per entry: text as a dictionary (each entry's value once, an index
per row), numbers repeated with ``take``. A window whose entries do
not all have the same inputs in the same order, or whose values in one column are of kinds that do
not go together (a number here, a string there), keeps one ``features`` column of JSON text per row
instead, as every table did before the per-input columns. ``gateway.mlflow.readback`` reads both.

The prediction is text (a label, or a regressor's number as Python writes it), so that one reader
takes every model's tables.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gateway.domain import contract
from gateway.domain.records import RECORD_FIELDS, SHARED_FIELDS, PredictionRecord
from gateway.spool.packing import Columns
from gateway.variants.output import ModelKind

_TYPES = {"class_index": pa.int64(), "inference_time_ms": pa.float64(), "ts_ms": pa.int64(),
          "row_index": pa.int64(), "batch_rows": pa.int64(), "request_time_ms": pa.float64(),
          "assignment_probability": pa.float64(), "weights_version": pa.int64()}
# The columns every table has, whatever its features: the record's fields but for them.
FIXED_SCHEMA = pa.schema([(name, _TYPES.get(name, pa.string())) for name in RECORD_FIELDS if name != "features"])
_NUMERIC = (pa.types.is_integer, pa.types.is_floating, pa.types.is_null)


def window_table(entries: Sequence[Columns]) -> pa.Table:
    """The records of ``entries`` (decoded spool entries), entry after entry, as one table."""
    sizes = np.fromiter((len(e) for e in entries), dtype=np.int64, count=len(entries))
    owner = pa.array(np.repeat(np.arange(len(entries)), sizes))
    columns: dict[str, pa.Array] = {}
    for name in SHARED_FIELDS:
        kind = FIXED_SCHEMA.field(name).type
        values = pa.array([getattr(e.shared, name) for e in entries], type=kind)
        if pa.types.is_string(kind):  # each entry's text once, and an index per row: no string per row
            encoded = values.dictionary_encode()
            columns[name] = pa.DictionaryArray.from_arrays(encoded.indices.take(owner), encoded.dictionary)
        else:
            columns[name] = values.take(owner)
    columns["prediction"] = _predictions(entries)
    columns["class_index"] = pa.array([i for e in entries for i in e.class_index], type=pa.int64())
    firsts = np.repeat(np.fromiter((e.first_row for e in entries), dtype=np.int64, count=len(entries)), sizes)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    columns["row_index"] = pa.array(firsts + np.arange(int(sizes.sum())) - starts)
    fixed = {field.name: columns[field.name] for field in FIXED_SCHEMA}
    features = _feature_columns(entries)
    if features is None:
        table = pa.table({**fixed, "features": pa.array([t for e in entries for t in e.features], pa.string())})
    else:
        prefix = contract.RECORDS_FEATURE_PREFIX
        table = pa.table({**fixed, **{prefix + name: array for name, array in features.items()}})
    return table


def records_table(records: Sequence[PredictionRecord]) -> pa.Table:
    """Records as a window's table: the table of their packed entries."""
    from gateway.spool.packing import pack, unpack

    return window_table([unpack(e.shared, e.rows, e.first_row) for e in pack(records)])


def table_parquet(table: pa.Table) -> bytes:
    """The table as Parquet: snappy (a 50,000-row window wrote in about half zstd's time, 6% larger,
    measured here), and without the Arrow schema, so that the dictionary-encoded text columns read
    back as plain text (Parquet stores them dictionary-encoded either way)."""
    out = io.BytesIO()
    pq.write_table(table, out, compression="snappy", store_schema=False)
    return out.getvalue()


def window_summary(table: pa.Table) -> dict[str, float]:
    """A window's summary metrics from its table: count, latency quantiles, and class counts or value
    quantiles."""
    latencies = table.column("inference_time_ms").to_numpy()
    out = {
        "count": float(latencies.size),
        "inference_time_ms_mean": float(latencies.mean()),
        "inference_time_ms_p50": float(np.percentile(latencies, 50)),
        "inference_time_ms_p95": float(np.percentile(latencies, 95)),
        "inference_time_ms_p99": float(np.percentile(latencies, 99)),
        f"{contract.METRIC_BATCH_ROWS}_mean": float(np.mean(table.column("batch_rows").to_numpy())),
    }
    own = table.column("request_time_ms").drop_null().to_numpy()
    if own.size:
        out.update({f"{contract.METRIC_REQUEST_TIME}_p50": float(np.percentile(own, 50)),
                    f"{contract.METRIC_REQUEST_TIME}_p99": float(np.percentile(own, 99))})
    if table.num_rows and table.column("kind")[0].as_py() == ModelKind.REGRESSOR:
        values = np.asarray(table.column("prediction").to_pylist(), dtype=float)
        out.update({f"{contract.METRIC_PREDICTION_VALUE}_mean": float(values.mean()),
                    f"{contract.METRIC_PREDICTION_VALUE}_p50": float(np.percentile(values, 50)),
                    f"{contract.METRIC_PREDICTION_VALUE}_p95": float(np.percentile(values, 95))})
    else:
        counts = pc.value_counts(table.column("prediction")).to_pylist()
        for item in sorted(counts, key=lambda v: v["values"]):
            out[contract.param_name(f"class_count_{item['values']}")] = float(item["counts"])
    return out


def _predictions(entries: Sequence[Columns]) -> pa.Array:
    """Every row's prediction as text: labels as they are, numbers as Python writes them."""
    values = [p for e in entries for p in e.prediction]
    array = pa.array(values) if values else pa.array([], pa.string())
    if pa.types.is_string(array.type):
        return array
    return pa.array([str(p) for p in values], pa.string())


def _feature_columns(entries: Sequence[Columns]) -> dict[str, pa.Array] | None:
    """One array per input when every entry has the same inputs in the same order and each input's
    values are all numbers or all of one other kind; else None (the window keeps JSON text)."""
    names = entries[0].feature_names if entries else None
    if not names or any(e.feature_names != names for e in entries):
        return None
    if all(e.matrix is not None for e in entries):
        matrix = np.concatenate([e.matrix for e in entries if e.matrix is not None])
        return {name: pa.array(matrix[:, j]) for j, name in enumerate(names)}
    out: dict[str, pa.Array] = {}
    for j, name in enumerate(names):
        try:
            chunks = [pa.array(e.matrix[:, j]) if e.matrix is not None else pa.array([v[j] for v in e.values or []])
                      for e in entries]
            types = {chunk.type for chunk in chunks}
            if len(types) > 1 and all(any(kind(t) for kind in _NUMERIC) for t in types):
                chunks = [chunk.cast(pa.float64()) for chunk in chunks]  # safe: refuses an int it would round
            out[name] = pa.concat_arrays(chunks)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None
    return out
