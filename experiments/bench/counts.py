"""What a benchmark's setup answered and what reached MLflow: rows served (summed over worker
processes), rows MLflow holds by key, rows still in a stopped gateway's spool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd


def mlflow_run_stats(tracking_uri: str, experiment: str) -> tuple[int, set[Any], int]:
    """(runs, distinct prediction keys, rows logged) in the experiment: what MLflow holds, not what the
    exporter says it sent. A per-prediction run is one row; a window run's rows are read from its table."""
    import mlflow

    from gateway.mlflow.readback import window_records

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        return 0, set(), 0
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=1_000_000)
    if runs.empty:
        return 0, set(), 0
    granularity = runs.get("tags.granularity", pd.Series([None] * len(runs)))
    single = runs[granularity != "window"]
    keys = {(str(r), int(i or 0), str(role)) for r, i, role in zip(
        single["tags.request_id"], single.get("tags.row_index", pd.Series([0] * len(single))), single["tags.role"],
        strict=True)} if not single.empty else set()
    rows = len(single)
    windows = window_records(runs[granularity == "window"], tracking_uri)
    if not windows.empty:
        keys |= set(zip(windows["request_id"].astype(str), windows["row_index"].astype(int),
                        windows["role"].astype(str), strict=True))
        rows += len(windows)
    return len(runs), keys, rows


def pending_in_spool(spool_dir: Path) -> set[tuple[str, int, str]]:
    """Records still waiting in a stopped gateway's spool: kept for its next start, not lost."""
    from gateway.spool.store import PredictionSpool

    if not (spool_dir / PredictionSpool.FILENAME).exists():
        return set()
    spool = PredictionSpool(spool_dir)
    try:
        return spool.open_keys()
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
