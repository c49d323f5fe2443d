"""What a benchmark's setup answered and what reached MLflow: rows served (summed over worker
processes), rows MLflow holds by key, rows still in a stopped gateway's spool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd


def mlflow_run_stats(tracking_uri: str, experiment: str) -> tuple[int, set[Any], int, int]:
    """(runs, distinct prediction keys read into Python, rows logged, distinct keys counted in an
    inference table) in the experiment: what MLflow and the table hold, not what the exporter says it
    sent. A per-prediction run is one row; a window run's rows are read from its Parquet artifact, or
    counted where they are when the run names an inference table (tens of millions of rows after the
    memory check would not fit in pandas)."""
    import mlflow

    from gateway.domain import contract
    from gateway.mlflow.readback import window_records

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        return 0, set(), 0, 0
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=1_000_000)
    if runs.empty:
        return 0, set(), 0, 0
    granularity = runs.get("tags.granularity", pd.Series([None] * len(runs)))
    single = runs[granularity != "window"]
    keys = {(str(r), int(i or 0), str(role)) for r, i, role in zip(
        single["tags.request_id"], single.get("tags.row_index", pd.Series([0] * len(single))), single["tags.role"],
        strict=True)} if not single.empty else set()
    rows = len(single)
    windows = runs[granularity == "window"]
    table_tag = f"tags.{contract.TAG_RECORDS_TABLE}"
    in_table = windows[table_tag].fillna("") != "" if table_tag in windows.columns else pd.Series(False,
                                                                                                  index=windows.index)
    counted_rows, counted_keys = table_counts(windows[in_table], table_tag, f"tags.{contract.TAG_WINDOW_ID}")
    read = window_records(windows[~in_table], tracking_uri)
    if not read.empty:
        keys |= set(zip(read["request_id"].astype(str), read["row_index"].astype(int), read["role"].astype(str),
                        strict=True))
        rows += len(read)
    return len(runs), keys, rows + counted_rows, counted_keys


def table_counts(runs: pd.DataFrame, table_tag: str, window_tag: str) -> tuple[int, int]:
    """(rows, distinct (request_id, row_index, role)) of the runs' windows in the tables they name,
    counted by DuckDB over each table's files."""
    if runs.empty:
        return 0, 0
    import duckdb
    import pyarrow as pa

    from experiments.report.engine.engines import arrow_dataset
    from gateway.delta.spec import TableSection

    rows = distinct = 0
    for uri, group in runs.groupby(table_tag):
        root, _, name = str(uri).rstrip("/").rpartition("/")
        dataset = arrow_dataset(TableSection(enabled=True, uri=root), name)
        if dataset is None:
            continue
        con = duckdb.connect()
        con.register("t", dataset)
        con.register("w", pa.table({"window_id": group[window_tag].astype(str).tolist()}))
        n, k = con.execute("SELECT COUNT(*), COUNT(DISTINCT (request_id, row_index, role)) FROM t "
                           "WHERE window_id IN (SELECT window_id FROM w)").fetchone()
        con.close()
        rows, distinct = rows + int(n), distinct + int(k)
    return rows, distinct


def pending_in_spool(spool_dir: Path, limit: int = 1_000_000) -> tuple[set[tuple[str, int, str]], int]:
    """Records still waiting in a stopped gateway's spool (kept for its next start, not lost): their
    keys (only up to ``limit`` of them: a saturating load can leave tens of millions) and their count."""
    from gateway.spool.store import PredictionSpool

    if not (spool_dir / PredictionSpool.FILENAME).exists():
        return set(), 0
    spool = PredictionSpool(spool_dir)
    try:
        count = spool.count_open()
        return (spool.open_keys() if count <= limit else set()), count
    finally:
        spool.close()


def rows_served(url: str) -> int:
    """Rows answered, summed over every worker process: the primary predictions counted in /metrics
    (counted where /stats counts ``rows_served``, which is one worker's own). That counter is per
    class, so this holds for a classifier, which every bench setup serves."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return int(sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == "gateway_predictions_total" and sample.labels.get("role") == "primary"))
