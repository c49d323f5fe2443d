"""Reading the prediction log back from MLflow: per-prediction runs, window runs' record tables and
feedback-window label tables, as one table of records. The exporter writes this format
(export/strategies.py, export/label_runs.py), or into the inference table the runs name
(gateway/delta/); the report and the replicas' rollout controller read it here."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

import numpy as np
import orjson
import pandas as pd

from gateway.domain import contract
from gateway.domain.label_rule import correct_column
from gateway.domain.records import Role

PAGE = 50_000  # MLflow's largest page for search_runs
RECORD_COLUMNS = ["request_id", "row_index", "role", "model_version", "kind", "prediction", "value", "latency_ms",
                  "request_time_ms", "batch_rows", "ts_ms", "routing", "config_hash", "weights", "correct",
                  "abs_error", "true_label", "user", "model_uri", "model", "assignment_probability",
                  "weights_version", "reward"]
REGRESSOR = "regressor"


def experiment_ids(tracking_uri: str, name: str) -> list[str]:
    """[the id of experiment ``name``] on that server, made the one ``search_all`` reads; [] if none."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(name)
    return [] if experiment is None else [str(experiment.experiment_id)]


def search_all(experiment_ids: list[str], filter_string: str, progress: bool = False) -> pd.DataFrame:
    """Every matching run, in start-time order, read in keyset pages of 50,000 through
    ``mlflow.search_runs``: no silent cut at its 100,000 default, and no offset paging that slows
    down as the experiment grows."""
    import mlflow

    frames: list[pd.DataFrame] = []
    seen: set[str] = set()
    since: int | None = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="run", desc="reading runs", file=sys.stderr)
    while True:
        clauses = [c for c in (filter_string, f"attributes.start_time >= {since}" if since is not None else "") if c]
        page = mlflow.search_runs(experiment_ids=experiment_ids, filter_string=" and ".join(clauses),
                                  order_by=["attributes.start_time ASC"], max_results=PAGE)
        if page.empty:
            break
        fresh = page[~page["run_id"].isin(seen)]
        if fresh.empty:
            raise RuntimeError(f"more than {PAGE} runs share one start time; cannot page past them")
        frames.append(fresh)
        seen.update(fresh["run_id"])
        if bar is not None:
            bar.update(len(fresh))
        if len(page) < PAGE:
            break
        # The next page starts at the last start time; runs at that instant are de-duplicated above.
        since = int(page["start_time"].max().timestamp() * 1000)
    if bar is not None:
        bar.close()
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index)


def prediction_records(runs: pd.DataFrame, segment: str | None = None) -> pd.DataFrame:
    """Per-prediction runs as records; with ``segment`` (an input column), its value as ``segment``."""
    df = runs[_col(runs, f"tags.{contract.TAG_GRANULARITY}", contract.GRANULARITY_PREDICTION).fillna(
        contract.GRANULARITY_PREDICTION) == contract.GRANULARITY_PREDICTION]
    df = df[df.get(f"tags.{contract.TAG_MODEL_VERSION}", pd.Series(dtype=str)).notna()] if len(df) else df
    if df.empty or f"metrics.{contract.METRIC_INFERENCE_TIME}" not in df.columns:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    kind = _col(df, f"tags.{contract.TAG_MODEL_KIND}", "classifier").fillna("classifier")
    value = _col(df, f"metrics.{contract.METRIC_PREDICTION_VALUE}", np.nan).astype(float)
    label = _col(df, f"tags.{contract.TAG_PREDICTION}").astype(object)
    out = pd.DataFrame({
        "request_id": _col(df, f"tags.{contract.TAG_REQUEST_ID}").fillna(df["run_id"]),
        "row_index": pd.to_numeric(_col(df, f"tags.{contract.TAG_ROW_INDEX}", 0),
                                   errors="coerce").fillna(0).astype(int),
        "role": _col(df, f"tags.{contract.TAG_ROLE}", Role.PRIMARY.value).fillna(Role.PRIMARY.value),
        "model_version": df[f"tags.{contract.TAG_MODEL_VERSION}"],
        "kind": kind,
        "prediction": label.where(kind != REGRESSOR, value),
        "value": value,
        "latency_ms": df[f"metrics.{contract.METRIC_INFERENCE_TIME}"].astype(float),
        "request_time_ms": _col(df, f"metrics.{contract.METRIC_REQUEST_TIME}", np.nan).astype(float),
        "batch_rows": _col(df, f"metrics.{contract.METRIC_BATCH_ROWS}", np.nan).astype(float),
        "ts_ms": (df["start_time"].astype("int64") // 1_000_000).astype("int64"),
        "routing": _col(df, f"tags.{contract.TAG_ROUTING}", "weighted").fillna("weighted"),
        "config_hash": _col(df, f"tags.{contract.TAG_CONFIG_HASH}", "").fillna(""),
        "weights": _col(df, f"tags.{contract.TAG_WEIGHTS}", "").fillna(""),
        "correct": _col(df, f"metrics.{contract.METRIC_CORRECT}", np.nan).astype(float),
        "abs_error": _col(df, f"metrics.{contract.METRIC_ABS_ERROR}", np.nan).astype(float),
        "reward": _col(df, f"metrics.{contract.METRIC_REWARD}", np.nan).astype(float),
        "true_label": _col(df, f"tags.{contract.TAG_TRUE_LABEL}", None),
        "user": _col(df, f"tags.{contract.TAG_USER}", None),
        "model_uri": _col(df, f"tags.{contract.TAG_MODEL_URI}", "").fillna(""),
        "model": _col(df, f"tags.{contract.TAG_MODEL}", "").fillna(""),
        "assignment_probability": _col(df, f"metrics.{contract.METRIC_ASSIGNMENT_PROBABILITY}", np.nan).astype(float),
        "weights_version": pd.to_numeric(_col(df, f"tags.{contract.TAG_WEIGHTS_VERSION}", 0),
                                         errors="coerce").fillna(0),
    })
    if segment is not None:
        header = _header_segment(segment)
        out["segment"] = (_col(df, f"tags.{contract.TAG_HEADER_PREFIX}{header}", None) if header is not None
                          else _col(df, f"params.{contract.param_name(segment)}", None))
    return out.dropna(subset=["latency_ms", "prediction"])


def _header_segment(segment: str) -> str | None:
    """``header:NAME`` (a [routing] log_headers name) -> its lower-case name; None for an input column."""
    return segment.removeprefix("header:").lower() if segment.startswith("header:") else None


def _artifact_tables(runs: pd.DataFrame, granularity: str, artifact: str, tracking_uri: str,
                     progress: bool = False) -> pd.DataFrame:
    """The record tables of window (or feedback-window) runs, concatenated: read from the inference
    table a run's ``records_table`` tag names, else downloaded: Parquet where its ``records_artifact``
    tag says so (read with pyarrow), else JSON lines. Downloads run in parallel: each is a round trip
    to the tracking server."""
    if f"tags.{contract.TAG_GRANULARITY}" not in runs.columns:
        return pd.DataFrame()
    chosen = runs[runs[f"tags.{contract.TAG_GRANULARITY}"] == granularity]
    if chosen.empty:
        return pd.DataFrame()
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq

    from gateway.mlflow.client import tracking_client

    client = tracking_client(tracking_uri)
    in_table = pd.Series(False, index=chosen.index)
    table_tag = f"tags.{contract.TAG_RECORDS_TABLE}"
    if table_tag in chosen.columns:
        in_table = chosen[table_tag].notna() & (chosen[table_tag] != "")
    window_tag = contract.TAG_WINDOW_ID if artifact == contract.RECORDS_ARTIFACT else contract.TAG_FEEDBACK_BATCH
    from_tables = _table_rows(chosen[in_table], window_tag)
    chosen = chosen[~in_table]
    if artifact == contract.RECORDS_ARTIFACT:  # the tag names the table; runs from before it have JSON lines
        tagged = _col(chosen, f"tags.{contract.TAG_RECORDS_ARTIFACT}", None)
        names = [t if isinstance(t, str) and t else contract.RECORDS_ARTIFACT_JSONL for t in tagged]
    else:
        names = [artifact] * len(chosen)
    wanted = list(zip(chosen["run_id"], names, strict=True))
    with tempfile.TemporaryDirectory() as tmp:

        def read(item: tuple[int, tuple[str, str]]) -> pa.Table | pd.DataFrame:
            i, (run_id, name) = item
            path = client.download_artifacts(run_id, name, os.path.join(tmp, str(i)))
            return pq.read_table(path) if name.endswith(".parquet") else pd.read_json(path, lines=True, dtype=False)

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(wanted), unit="table", desc=f"reading {granularity} tables", file=sys.stderr)
        tables, frames = [], []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for part in pool.map(read, enumerate(wanted)):
                (tables if isinstance(part, pa.Table) else frames).append(part)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    frames += from_tables
    if tables:
        frames.append(pa.concat_tables(tables, promote_options="permissive").to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _table_rows(runs: pd.DataFrame, window_tag: str) -> list[pd.DataFrame]:
    """The rows of window (or feedback-window) runs whose records are in an inference table: one query
    per table, for the runs' window ids (their ``window_tag``; gateway/delta/reader.py). A label's
    true_label is its JSON text there, read back to its value."""
    if runs.empty:
        return []
    from gateway.delta.reader import read_windows

    uris = runs[f"tags.{contract.TAG_RECORDS_TABLE}"]
    frames = []
    for uri in sorted(set(uris)):
        frame = read_windows(str(uri), runs.loc[uris == uri, f"tags.{window_tag}"].astype(str).tolist()).to_pandas()
        if "true_label" in frame.columns:
            frame["true_label"] = [json.loads(v) if isinstance(v, str) else v for v in frame["true_label"]]
        frames.append(frame)
    return frames

def window_records(runs: pd.DataFrame, tracking_uri: str, progress: bool = False,
                   segment: str | None = None) -> pd.DataFrame:
    """Window runs expanded to their records, from each run's record table; with ``segment`` (an input
    column), its value as ``segment``."""
    raw = _artifact_tables(runs, contract.GRANULARITY_WINDOW, contract.RECORDS_ARTIFACT, tracking_uri, progress)
    return records_of_rows(raw, segment)


def records_of_rows(raw: pd.DataFrame, segment: str | None = None) -> pd.DataFrame:
    """A window's rows (its Parquet artifact, or the inference table's columns) as records."""
    if raw.empty:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    kind = raw["kind"] if "kind" in raw.columns else pd.Series(["classifier"] * len(raw))
    label = raw["prediction"] if "prediction" in raw.columns else raw["class_name"]  # older tables
    value = pd.to_numeric(label.where(kind == REGRESSOR), errors="coerce")
    out = pd.DataFrame({
        "request_id": raw["request_id"].astype(str),
        "row_index": raw["row_index"].astype(int) if "row_index" in raw.columns else 0,
        "role": raw["role"], "model_version": raw["model_version"], "kind": kind,
        "prediction": label.where(kind != REGRESSOR, value), "value": value,
        "latency_ms": raw["inference_time_ms"].astype(float),
        "request_time_ms": pd.to_numeric(raw.get("request_time_ms", np.nan), errors="coerce"),
        "batch_rows": pd.to_numeric(raw.get("batch_rows", np.nan), errors="coerce"),
        "ts_ms": raw["ts_ms"].astype("int64"),
        "routing": raw["routing"], "config_hash": raw["config_hash"],
        "weights": raw["weights"] if "weights" in raw.columns else "",
        "correct": np.nan, "abs_error": np.nan, "true_label": None, "reward": np.nan,
        "user": raw["user"] if "user" in raw.columns else None,
        "model_uri": raw["model_uri"].fillna("") if "model_uri" in raw.columns else "",  # older tables: none
        "model": raw["model"].fillna("") if "model" in raw.columns else "",
        "assignment_probability": pd.to_numeric(raw.get("assignment_probability", np.nan), errors="coerce"),
        "weights_version": pd.to_numeric(raw.get("weights_version", 0), errors="coerce"),
    })
    if segment is not None:
        header = _header_segment(segment)
        source, key = ("headers", header) if header is not None else ("features", segment)
        cells = raw[source] if source in raw.columns else [None] * len(raw)
        values = [orjson.loads(v).get(key) if isinstance(v, str) and v else None for v in cells]
        column = f"{contract.RECORDS_FEATURE_PREFIX}{segment}"
        if header is None and column in raw.columns:  # tables with one column per input
            own = raw[column].astype(object)
            values = [v if present else old for v, present, old in zip(own, own.notna(), values, strict=True)]
        out["segment"] = values
    return out


def window_labels(runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """The label tables of the feedback-window runs among ``runs``."""
    return _artifact_tables(runs, contract.GRANULARITY_FEEDBACK, contract.FEEDBACK_ARTIFACT, tracking_uri)


def join_window_labels(records: pd.DataFrame, runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """Ground truth that window mode exported as feedback-window runs, joined to the primary records."""
    return join_labels(records, window_labels(runs, tracking_uri))


def join_labels(records: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Window-mode labels (feedback.jsonl rows) joined to the primary records by request id and row;
    the first label of a prediction stands."""
    if labels.empty or records.empty:
        return records
    labels = labels.drop_duplicates(["request_id", "row_index"], keep="first")
    labels = labels.assign(request_id=labels["request_id"].astype(str), role=Role.PRIMARY.value,
                           correct_l=pd.to_numeric(labels["correct"], errors="coerce").astype(float),
                           abs_error_l=pd.to_numeric(labels["abs_error"], errors="coerce").astype(float),
                           true_label_l=labels["true_label"],
                           reward_l=pd.to_numeric(labels.get("reward", np.nan), errors="coerce"))
    merged = records.merge(labels[["request_id", "row_index", "role", "correct_l", "abs_error_l", "true_label_l",
                                   "reward_l"]],
                           on=["request_id", "row_index", "role"], how="left")
    # A label another replica received comes unjudged: judge it against the record it joins here.
    true = merged.pop("true_label_l")
    unjudged = merged["correct_l"].isna() & merged["abs_error_l"].isna() & true.notna()
    regressor = merged["kind"] == REGRESSOR
    merged.loc[unjudged & ~regressor, "correct_l"] = correct_column(
        merged["prediction"], true)[unjudged & ~regressor].astype(float)
    merged.loc[unjudged & regressor, "abs_error_l"] = (
        merged["value"] - pd.to_numeric(true, errors="coerce")).abs()[unjudged & regressor]
    merged["correct"] = merged["correct"].fillna(merged.pop("correct_l"))
    merged["abs_error"] = merged["abs_error"].fillna(merged.pop("abs_error_l"))
    reward = merged.pop("reward_l").astype(float)
    merged["reward"] = merged["reward"].astype(float).fillna(reward) if "reward" in merged else reward
    merged["true_label"] = (merged["true_label"] if "true_label" in merged else pd.Series(None, index=merged.index)
                            ).where(lambda s: s.notna(), true)
    return merged
