"""Compare model versions from the prediction runs in MLflow.

    python -m experiments.compare [--experiment NAME] [--since T] [--until T] [--config-hash H]
        [--role primary|shadow|all] [--json] [--html FILE] [--no-log]

Reads every prediction run (per-prediction runs, and window runs through their record tables),
summarises latency and the prediction distribution per version (classes for a classifier, values for
a regressor) with the tests that say whether a difference is real, logs one summary run per version
(plus a parent run holding the report) to the comparison experiment, and prints the URL of MLflow's
Compare Runs view for them. It warns when the gateway's spool still holds predictions that MLflow
has not received yet: the report is then partial.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments import statistics as st
from experiments.sequential_report import render as render_sequential
from experiments.sequential_report import sequential_section
from gateway import contract as c
from gateway.contract import SUMMARY_EXPERIMENT

PAGE = 50_000  # MLflow's largest page for search_runs
RECORD_COLUMNS = ["request_id", "row_index", "role", "model_version", "kind", "prediction", "value", "latency_ms",
                  "request_time_ms", "batch_rows", "ts_ms", "routing", "config_hash", "weights", "correct",
                  "abs_error"]
REGRESSOR = "regressor"


class NoRuns(Exception):
    pass


# -- reading --------------------------------------------------------------------------------

def parse_time(text: str, now: float | None = None) -> int:
    """Epoch ms from an ISO date/time (UTC if no zone) or a relative age such as 30m, 2h, 7d."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        seconds = float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
        return int(((now if now is not None else time.time()) - seconds) * 1000)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601 like 2026-11-26T10:00 or 30m/2h/7d)") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def build_filter(since: int | None = None, until: int | None = None, config_hash: str | None = None,
                 role: str | None = None) -> str:
    clauses = []
    if since is not None:
        clauses.append(f"attributes.start_time >= {since}")
    if until is not None:
        clauses.append(f"attributes.start_time < {until}")
    if config_hash:
        if not re.fullmatch(r"[0-9a-f]{1,64}", config_hash):
            raise argparse.ArgumentTypeError(f"config hash must be hexadecimal: {config_hash!r}")
        clauses.append(f"tags.config_hash = '{config_hash}'")
    if role and role != "all":
        clauses.append(f"tags.role = '{role}'")
    return " and ".join(clauses)


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


def prediction_records(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-prediction runs as records."""
    df = runs[_col(runs, f"tags.{c.TAG_GRANULARITY}", c.GRANULARITY_PREDICTION).fillna(
        c.GRANULARITY_PREDICTION) == c.GRANULARITY_PREDICTION]
    df = df[df.get(f"tags.{c.TAG_MODEL_VERSION}", pd.Series(dtype=str)).notna()] if len(df) else df
    if df.empty or f"metrics.{c.METRIC_INFERENCE_TIME}" not in df.columns:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    kind = _col(df, f"tags.{c.TAG_MODEL_KIND}", "classifier").fillna("classifier")
    value = _col(df, f"metrics.{c.METRIC_PREDICTION_VALUE}", np.nan).astype(float)
    label = _col(df, f"tags.{c.TAG_PREDICTION}").astype(object)
    out = pd.DataFrame({
        "request_id": _col(df, f"tags.{c.TAG_REQUEST_ID}").fillna(df["run_id"]),
        "row_index": pd.to_numeric(_col(df, f"tags.{c.TAG_ROW_INDEX}", 0), errors="coerce").fillna(0).astype(int),
        "role": _col(df, f"tags.{c.TAG_ROLE}", "primary").fillna("primary"),
        "model_version": df[f"tags.{c.TAG_MODEL_VERSION}"],
        "kind": kind,
        "prediction": label.where(kind != REGRESSOR, value),
        "value": value,
        "latency_ms": df[f"metrics.{c.METRIC_INFERENCE_TIME}"].astype(float),
        "request_time_ms": _col(df, f"metrics.{c.METRIC_REQUEST_TIME}", np.nan).astype(float),
        "batch_rows": _col(df, f"metrics.{c.METRIC_BATCH_ROWS}", np.nan).astype(float),
        "ts_ms": (df["start_time"].astype("int64") // 1_000_000).astype("int64"),
        "routing": _col(df, f"tags.{c.TAG_ROUTING}", "weighted").fillna("weighted"),
        "config_hash": _col(df, f"tags.{c.TAG_CONFIG_HASH}", "").fillna(""),
        "weights": _col(df, f"tags.{c.TAG_WEIGHTS}", "").fillna(""),
        "correct": _col(df, f"metrics.{c.METRIC_CORRECT}", np.nan).astype(float),
        "abs_error": _col(df, f"metrics.{c.METRIC_ABS_ERROR}", np.nan).astype(float),
    })
    return out.dropna(subset=["latency_ms", "prediction"])


def _artifact_tables(runs: pd.DataFrame, granularity: str, artifact: str, tracking_uri: str,
                     progress: bool = False) -> pd.DataFrame:
    """The record tables that window (or feedback-window) runs carry, concatenated: Parquet where the
    run's ``records_artifact`` tag says so (read with pyarrow), else JSON lines. Downloads run in
    parallel: each is a round trip to the tracking server."""
    if f"tags.{c.TAG_GRANULARITY}" not in runs.columns:
        return pd.DataFrame()
    chosen = runs[runs[f"tags.{c.TAG_GRANULARITY}"] == granularity]
    if chosen.empty:
        return pd.DataFrame()
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if artifact == c.RECORDS_ARTIFACT:  # the tag names the table; runs from before it have JSON lines
        tagged = _col(chosen, f"tags.{c.TAG_RECORDS_ARTIFACT}", None)
        names = [t if isinstance(t, str) and t else c.RECORDS_ARTIFACT_JSONL for t in tagged]
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
    if tables:
        frames.append(pa.concat_tables(tables, promote_options="default").to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def window_records(runs: pd.DataFrame, tracking_uri: str, progress: bool = False) -> pd.DataFrame:
    """Window runs expanded to their records, from each run's record table."""
    raw = _artifact_tables(runs, c.GRANULARITY_WINDOW, c.RECORDS_ARTIFACT, tracking_uri, progress)
    if raw.empty:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    kind = raw["kind"] if "kind" in raw.columns else pd.Series(["classifier"] * len(raw))
    label = raw["prediction"] if "prediction" in raw.columns else raw["class_name"]  # older tables
    value = pd.to_numeric(label.where(kind == REGRESSOR), errors="coerce")
    return pd.DataFrame({
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
        "correct": np.nan, "abs_error": np.nan,
    })


def window_labels(runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """The label tables of the feedback-window runs among ``runs``."""
    return _artifact_tables(runs, c.GRANULARITY_FEEDBACK, c.FEEDBACK_ARTIFACT, tracking_uri)


def join_window_labels(records: pd.DataFrame, runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """Ground truth that window mode exported as feedback-window runs, joined to the primary records."""
    return join_labels(records, window_labels(runs, tracking_uri))


def join_labels(records: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Window-mode labels (feedback.jsonl rows) joined to the primary records by request id and row;
    the first label of a prediction stands."""
    if labels.empty or records.empty:
        return records
    labels = labels.drop_duplicates(["request_id", "row_index"], keep="first")
    labels = labels.assign(request_id=labels["request_id"].astype(str), role="primary",
                           correct_l=pd.to_numeric(labels["correct"], errors="coerce").astype(float),
                           abs_error_l=pd.to_numeric(labels["abs_error"], errors="coerce").astype(float),
                           true_label_l=labels["true_label"])
    merged = records.merge(labels[["request_id", "row_index", "role", "correct_l", "abs_error_l", "true_label_l"]],
                           on=["request_id", "row_index", "role"], how="left")
    # A label another replica received comes unjudged: judge it against the record it joins here.
    true = merged.pop("true_label_l")
    unjudged = merged["correct_l"].isna() & merged["abs_error_l"].isna() & true.notna()
    regressor = merged["kind"] == REGRESSOR
    merged.loc[unjudged & ~regressor, "correct_l"] = (
        merged["prediction"].astype(str) == true.astype(str))[unjudged & ~regressor].astype(float)
    merged.loc[unjudged & regressor, "abs_error_l"] = (
        merged["value"] - pd.to_numeric(true, errors="coerce")).abs()[unjudged & regressor]
    merged["correct"] = merged["correct"].fillna(merged.pop("correct_l"))
    merged["abs_error"] = merged["abs_error"].fillna(merged.pop("abs_error_l"))
    return merged


# -- analysis (pure) ------------------------------------------------------------------------

def _parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            return {}
    return out


def labels_of(records: pd.DataFrame) -> list[Any]:
    """Every class label seen, in natural order (numbers numerically, then text)."""
    return sorted(records["prediction"].dropna().unique().tolist(), key=lambda v: (isinstance(v, str), str(v)
                  if isinstance(v, str) else float(v)))


def _group_summary(group: pd.DataFrame, total: int, seed: int, labels: list[Any] | None) -> dict[str, Any]:
    n = len(group)
    out: dict[str, Any] = {
        "count": n,
        "share": n / total if total else 0.0,
        "latency_ms": st.latency_summary(group["latency_ms"].to_numpy(), seed=seed),
    }
    # Under batching latency_ms is the shared model call's; the request's own time in the gateway and
    # the call's size say what each request saw (absent in runs logged before batching).
    own = group["request_time_ms"].dropna().to_numpy(dtype=float) if "request_time_ms" in group else np.array([])
    if own.size:
        out["request_time_ms"] = st.latency_summary(own, seed=seed)
    sizes = group["batch_rows"].dropna().to_numpy(dtype=float) if "batch_rows" in group else np.array([])
    if sizes.size:
        out["batch_rows_mean"] = float(sizes.mean())
    if labels is None:  # a regressor
        out["predictions"] = st.value_summary(group["value"].to_numpy(dtype=float))
        errors = group["abs_error"].to_numpy(dtype=float)
        out["error"] = st.error_summary(errors)
        return out
    counts = group["prediction"].astype(str).value_counts()
    classes = {str(lbl): int(counts.get(str(lbl), 0)) for lbl in labels}
    out["classes"] = classes
    out["class_shares"] = {lbl: k / n for lbl, k in classes.items()}
    out["accuracy"] = st.accuracy(group["correct"].to_numpy(dtype=float))
    return out


def analyse(records: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """The whole report, as a JSON-ready dict (schema in the README)."""
    if records.empty:
        raise NoRuns("no prediction records")
    defaults = {"row_index": 0, "kind": "classifier", "value": np.nan, "correct": np.nan, "abs_error": np.nan}
    records = records.assign(**{k: v for k, v in defaults.items() if k not in records.columns})
    regressor = bool((records["kind"] == REGRESSOR).all())
    labels = None if regressor else labels_of(records)
    primary = records[records["role"] == "primary"]
    shadow = records[records["role"] == "shadow"]
    report: dict[str, Any] = {"n_records": len(records), "kind": REGRESSOR if regressor else "classifier",
                              "labels": None if labels is None else [str(lbl) for lbl in labels],
                              "versions": {}, "shadow_versions": {},
                              "tests": {"class_chi2": None, "latency_mwu": None, "srm": None}, "shadow": None,
                              "verdicts": []}
    if regressor:
        report["tests"] = {"prediction_mwu": None, "prediction_ks": None, "latency_mwu": None, "srm": None}
    for version, group in sorted(primary.groupby("model_version"), key=lambda kv: str(kv[0])):
        report["versions"][str(version)] = _group_summary(group, len(primary), seed, labels)
    for version, group in sorted(shadow.groupby("model_version"), key=lambda kv: str(kv[0])):
        report["shadow_versions"][str(version)] = _group_summary(group, len(shadow), seed, labels)
    names = list(report["versions"])
    verdicts: list[str] = report["verdicts"]
    tests = report["tests"]
    if len(names) >= 2:
        if labels is not None:
            table = np.array([[report["versions"][v]["classes"][str(lbl)] for lbl in labels] for v in names])
            tests["class_chi2"] = st.class_chi2(table)
            verdicts.append(st.class_verdict(tests["class_chi2"], names))
        base = names[0]
        pairs = []
        for other in names[1:]:
            a = primary.loc[primary["model_version"] == base]
            b = primary.loc[primary["model_version"] == other]
            res = st.latency_mwu(a["latency_ms"].to_numpy(), b["latency_ms"].to_numpy(), seed=seed)
            if res is not None:
                res = {"a": base, "b": other, **res}
            pairs.append(res)
            verdicts.append(st.latency_verdict(base, other, res))
            if labels is None:
                va, vb = a["value"].to_numpy(dtype=float), b["value"].to_numpy(dtype=float)
                mwu = st.values_mwu(va, vb, seed=seed)
                tests.setdefault("prediction_mwu", None)
                if tests["prediction_mwu"] is None and mwu is not None:
                    tests["prediction_mwu"] = {"a": base, "b": other, **mwu}
                    tests["prediction_ks"] = st.distribution_ks(va, vb)
                verdicts.append(st.value_verdict(base, other, mwu, st.distribution_ks(va, vb)))
        tests["latency_mwu"] = pairs[0]
        if len(pairs) > 1:
            tests["latency_mwu_all"] = pairs
    elif names:
        verdicts.append(f"only {names[0]} answered traffic: no between-version tests")
    _quality(report, verdicts)
    srm_group = _sample_ratio(primary, report, names, verdicts)
    report["sequential"] = sequential_section(report, primary, names, srm_group)
    if not shadow.empty:
        report["shadow"] = shadow_analysis(primary, shadow, seed, labels)
        verdicts.extend(report["shadow"]["verdicts"])
    return report


def _quality(report: dict[str, Any], verdicts: list[str]) -> None:
    """Accuracy (classifiers) or mean absolute error (regressors) from ground-truth feedback."""
    if report["kind"] == REGRESSOR:
        for v, s in report["versions"].items():
            if s["error"]:
                verdicts.append(f"mean absolute error of {v}: {s['error']['mae']:.4g} over {s['error']['n']} "
                                f"labelled predictions")
        return
    labelled = {v: s["accuracy"] for v, s in report["versions"].items() if s["accuracy"]}
    for v, acc in labelled.items():
        verdicts.append(f"accuracy of {v}: {acc['rate']:.1%} of {acc['n']} labelled predictions "
                        f"(95% CI {acc['ci'][0]:.1%}-{acc['ci'][1]:.1%})")
    if len(labelled) >= 2:
        table = np.array([[a["correct"], a["n"] - a["correct"]] for a in labelled.values()])
        res = st.accuracy_difference(table)
        report["tests"]["accuracy"] = res
        if res is not None:
            verdicts.append(f"accuracy {'differs' if res['significant'] else 'shows no detectable difference'} "
                            f"between {' and '.join(labelled)} ({res['test']}, {st.fmt_p(res['p_value'])})")


def _sample_ratio(primary: pd.DataFrame, report: dict[str, Any], names: list[str],
                  verdicts: list[str]) -> tuple[pd.DataFrame, dict[str, float]] | None:
    """Sample-ratio mismatch, per configuration period, on randomised traffic only (one count per
    request: a batch is one routing decision). Returns the latest period's requests and weights."""
    randomised = primary[primary["routing"].isin(["weighted", "sticky"]) & (primary["weights"] != "")
                         & (primary["row_index"] == 0)]
    by_config = {}
    for (config_hash, weights), group in randomised.groupby(["config_hash", "weights"]):
        res = st.srm(group["model_version"].value_counts().to_dict(), _parse_weights(str(weights)))
        if res is not None:
            by_config[str(config_hash)] = {**res, "n": len(group)}
    if by_config:
        latest = max(by_config, key=lambda h: randomised.loc[randomised["config_hash"] == h, "ts_ms"].max())
        report["tests"]["srm"] = {"config_hash": latest, **by_config[latest]}
        if len(by_config) > 1:
            report["tests"]["srm_by_config"] = by_config
        for h, res in by_config.items():
            verdicts.append(st.srm_verdict(res, f" (config {h})"))
        latest_group = randomised[randomised["config_hash"] == latest]
        return latest_group, _parse_weights(str(latest_group["weights"].iloc[0]))
    if len(names) >= 2:
        verdicts.append(st.srm_verdict(None))
    return None


def shadow_analysis(primary: pd.DataFrame, shadow: pd.DataFrame, seed: int = 0,
                    labels: list[Any] | None = None) -> dict[str, Any]:
    pairs = primary.merge(shadow, on=["request_id", "row_index"], suffixes=("_p", "_s"))
    out: dict[str, Any] = {"pairs": len(pairs), "agreement": None, "confusion": None, "paired_latency": None,
                           "verdicts": []}
    if pairs.empty:
        out["verdicts"].append("shadow: no request has both a primary and a shadow record yet")
        return out
    out["primary"] = ", ".join(sorted(pairs["model_version_p"].unique()))
    out["candidate"] = ", ".join(sorted(pairs["model_version_s"].unique()))
    if labels is None:
        out["difference"] = st.paired_values(pairs["value_p"].to_numpy(dtype=float),
                                             pairs["value_s"].to_numpy(dtype=float))
        d = out["difference"]
        out["verdicts"].append(
            f"shadow: {out['candidate']} differs from {out['primary']} by {d['mean_abs_diff']:.4g} on average "
            f"(mean absolute difference over {d['n']} rows)"
            + (f"; correlation {d['pearson_r']:.3f}" if d["pearson_r"] is not None else ""))
    else:
        names = [str(lbl) for lbl in labels]
        p_labels, s_labels = pairs["prediction_p"].astype(str), pairs["prediction_s"].astype(str)
        out["agreement"] = st.agreement(p_labels.to_numpy(), s_labels.to_numpy())
        matrix = pd.crosstab(pd.Categorical(p_labels, categories=names), pd.Categorical(s_labels, categories=names),
                             dropna=False)
        out["confusion"] = {"rows": "primary", "columns": "candidate", "labels": names,
                            "matrix": matrix.to_numpy().astype(int).tolist()}
        ag = out["agreement"]
        out["verdicts"].append(
            f"shadow: {out['candidate']} agrees with {out['primary']} on {ag['rate']:.1%} of {ag['n']} requests "
            f"(95% CI {ag['ci'][0]:.1%}-{ag['ci'][1]:.1%})")
    out["paired_latency"] = st.paired_latency(pairs["latency_ms_p"].to_numpy(), pairs["latency_ms_s"].to_numpy(),
                                              seed=seed)
    pl = out["paired_latency"]
    if pl is not None:
        word = "slower" if pl["median_diff_ms"] > 0 else "faster"
        sig = pl["p_value"] < st.ALPHA
        out["verdicts"].append(
            f"shadow: {out['candidate']} is {word if sig else 'not detectably different'} on the same inputs: "
            f"{pl['median_diff_ms']:+.3f} ms median (95% CI {pl['median_diff_ci'][0]:+.3f} to "
            f"{pl['median_diff_ci'][1]:+.3f}), Wilcoxon {st.fmt_p(pl['p_value'])}")
    return out


# -- output ---------------------------------------------------------------------------------

def render_terminal(report: dict[str, Any]) -> str:
    lines = [f"A/B report {report.get('report_id', '')}: {report['n_records']} prediction records from "
             f"{report.get('n_runs', '?')} runs in experiment {report.get('experiment', '?')} "
             f"(read in {report.get('read_seconds', '?')} s)", ""]
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    if report.get("warnings"):
        lines.append("")
    labels = report.get("labels")
    for title, key in (("answered traffic (role primary)", "versions"), ("shadow scoring (role shadow)",
                                                                           "shadow_versions")):
        versions = report[key]
        if not versions:
            continue
        lines.append(title)
        extra = ("  ".join(f"{str(lbl)[:10]:>10}" for lbl in labels) if labels is not None
                 else f"{'pred mean':>10} {'pred p50':>10} {'pred p95':>10}")
        lines.append(f"  {'version':<8} {'count':>7} {'share':>7} {'mean':>7} {'p50':>7} {'p50 95% CI':>17} "
                     f"{'p95':>7} {'p99':>7}   " + extra)
        for v, s in versions.items():
            lat = s["latency_ms"]
            ci = lat["p50_ci"]
            ci_text = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
            if labels is not None:
                cells = "  ".join(f"{s['class_shares'][str(lbl)]:>10.1%}" for lbl in labels)
            else:
                p = s["predictions"]
                cells = f"{p['mean']:>10.4g} {p['p50']:>10.4g} {p['p95']:>10.4g}"
            lines.append(f"  {v:<8} {s['count']:>7} {s['share']:>7.1%} {lat['mean']:>7.3f} {lat['p50']:>7.3f} "
                         f"{ci_text:>17} {lat['p95']:>7.3f} {lat['p99']:>7.3f}   {cells}")
        lines.append("  (latency in ms: the model's own predict time; a batched call's, shared by its rows)")
        timed = {v: s for v, s in versions.items() if s.get("request_time_ms")}
        if timed:
            lines.append(f"  {'version':<8} {'request p50':>12} {'request p95':>12} {'request p99':>12} "
                         f"{'rows/call':>10}")
            for v, s in timed.items():
                own = s["request_time_ms"]
                lines.append(f"  {v:<8} {own['p50']:>12.3f} {own['p95']:>12.3f} {own['p99']:>12.3f} "
                             f"{s.get('batch_rows_mean', float('nan')):>10.2f}")
            lines.append("  (request: its own time in the gateway, queueing for the model included, in ms)")
        lines.append("")
    shadow = report.get("shadow")
    if shadow and shadow.get("confusion"):
        names = shadow["confusion"]["labels"]
        lines.append(f"shadow confusion (rows: {shadow['primary']} primary, columns: {shadow['candidate']})")
        lines.append("  " + " " * 11 + "".join(f"{str(n)[:10]:>11}" for n in names))
        for label, row in zip(names, shadow["confusion"]["matrix"], strict=True):
            lines.append(f"  {str(label)[:10]:<11}" + "".join(f"{x:>11}" for x in row))
        lines.append("")
    lines += render_sequential(report.get("sequential") or {})
    lines.append("verdicts")
    lines += [f"  - {v}" for v in report["verdicts"]]
    return "\n".join(lines)


def _summary_metrics(s: dict[str, Any], pvals: dict[str, Any]) -> dict[str, float]:
    lat = s["latency_ms"]
    metrics = {"count": s["count"], "share": s["share"], "latency_mean_ms": lat["mean"],
               "latency_p50_ms": lat["p50"], "latency_p95_ms": lat["p95"], "latency_p99_ms": lat["p99"],
               **{k: v for k, v in pvals.items() if v is not None}}
    if s.get("request_time_ms"):
        own = s["request_time_ms"]
        metrics.update({"request_time_p50_ms": own["p50"], "request_time_p99_ms": own["p99"]})
    if s.get("batch_rows_mean") is not None:
        metrics["batch_rows_mean"] = s["batch_rows_mean"]
    for lbl, share in (s.get("class_shares") or {}).items():
        metrics[c.param_name(f"class_share_{lbl}")] = share
        metrics[c.param_name(f"class_count_{lbl}")] = s["classes"][lbl]
    if s.get("predictions"):
        metrics.update({f"prediction_{k}": v for k, v in s["predictions"].items() if v is not None})
    if s.get("accuracy"):
        metrics["accuracy"] = s["accuracy"]["rate"]
        metrics["labelled"] = s["accuracy"]["n"]
    if s.get("error"):
        metrics["mae"] = s["error"]["mae"]
        metrics["labelled"] = s["error"]["n"]
    return metrics


def log_summary_runs(report: dict[str, Any], tracking_uri: str, html: str | None) -> dict[str, Any]:
    """One parent run with the report files, one child run per version; return ids and the Compare URL."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp_id = c.get_or_create_experiment(client, SUMMARY_EXPERIMENT)
    now = int(time.time() * 1000)
    rid = report["report_id"]
    parent = client.create_run(exp_id, start_time=now, run_name=f"ab-report-{rid[:8]}", tags={
        "report_id": rid, "source_experiment": str(report.get("experiment")), "kind": "ab-report",
        "filters": json.dumps(report.get("filters", {})), "partial": str(bool(report.get("warnings"))).lower()})
    parent_id = parent.info.run_id
    client.log_text(parent_id, json.dumps(report, indent=2), "report.json")
    if html is not None:
        client.log_text(parent_id, html, "report.html")
    tests = report["tests"]
    pvals = {"class_chi2_p_value": (tests.get("class_chi2") or {}).get("p_value"),
             "prediction_mwu_p_value": (tests.get("prediction_mwu") or {}).get("p_value"),
             "prediction_ks_p_value": (tests.get("prediction_ks") or {}).get("p_value"),
             "latency_mwu_p_value": (tests.get("latency_mwu") or {}).get("p_value"),
             "srm_p_value": (tests.get("srm") or {}).get("p_value")}
    for name, t in ((report.get("sequential") or {}).get("tests") or {}).items():
        # "sequential_p_...": sorted after the counts and latencies in the Compare Runs table
        pvals[c.param_name(f"sequential_p_{name}")] = t["always_valid"]["p_value"]
    if report.get("shadow") and report["shadow"].get("agreement"):
        pvals["shadow_agreement"] = report["shadow"]["agreement"]["rate"]
    if report.get("shadow") and report["shadow"].get("difference"):
        pvals["shadow_mean_abs_diff"] = report["shadow"]["difference"]["mean_abs_diff"]
    child_ids = []
    for role, versions in (("primary", report["versions"]), ("shadow", report["shadow_versions"])):
        for version, s in versions.items():
            metrics = _summary_metrics(s, pvals)
            run = client.create_run(exp_id, start_time=now, run_name=f"{version} ({role})", tags={
                "model_version": version, "role": role, "report_id": rid, "mlflow.parentRunId": parent_id})
            client.log_batch(run.info.run_id,
                             metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                             params=[Param("records", str(report["n_records"])),
                                     Param("source_experiment", str(report.get("experiment")))])
            client.set_terminated(run.info.run_id)
            child_ids.append(run.info.run_id)
    client.set_terminated(parent_id)
    base = tracking_uri.rstrip("/")
    url = (f"{base}/#/compare-runs?runs={json.dumps(child_ids, separators=(',', ':'))}"
           f"&experiments={json.dumps([exp_id], separators=(',', ':'))}")
    return {"experiment_id": exp_id, "parent_run_id": parent_id, "summary_run_ids": child_ids, "compare_url": url}


def unexported_warning(spool_dir: Path | None, since: int | None, until: int | None, role: str) -> str | None:
    """A warning when the gateway's spool holds predictions that MLflow has not received yet."""
    if spool_dir is None:
        return None
    from gateway.spool import PredictionSpool

    if not (spool_dir / PredictionSpool.FILENAME).exists():
        return None
    try:
        spool = PredictionSpool(spool_dir)
        waiting = spool.open_in_range(since, until, None if role == "all" else role)
        spool.close()
    except Exception as exc:  # a spool we cannot read must not stop the report
        return f"could not read the gateway's spool at {spool_dir} ({exc}); the report may be partial"
    if not waiting:
        return None
    return (f"the gateway's spool ({spool_dir}) still holds {waiting} prediction(s) in this range that MLflow has "
            "not received yet: this report is partial (see /stats for the export lag)")


def build_report(experiment: str, tracking_uri: str, *, since: int | None = None, until: int | None = None,
                 config_hash: str | None = None, role: str = "all", progress: bool = False,
                 seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    if exp is None:
        raise NoRuns(f"experiment {experiment!r} does not exist at {tracking_uri}")
    started = time.perf_counter()
    runs = search_all([exp.experiment_id], build_filter(since, until, config_hash, role), progress=progress)
    if runs.empty:
        raise NoRuns(f"no prediction runs in experiment {experiment!r} match the filters")
    parts = [f for f in (prediction_records(runs), window_records(runs, tracking_uri, progress)) if not f.empty]
    records = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RECORD_COLUMNS)
    records = join_window_labels(records, runs, tracking_uri)
    read_s = time.perf_counter() - started  # runs and their tables
    if records.empty:
        raise NoRuns(f"experiment {experiment!r} has runs, but none is a prediction run")
    report = analyse(records, seed=seed)
    report.update({
        "report_id": uuid.uuid4().hex, "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "experiment": experiment, "tracking_uri": tracking_uri, "n_runs": len(runs), "read_seconds": round(read_s, 2),
        "filters": {"since": since, "until": until, "config_hash": config_hash, "role": role},
    })
    return report, records


def _config_defaults(path: str) -> dict[str, Any]:
    """Experiment, tracking URI and spool directory from the gateway's config file, when it exists."""
    from gateway.settings import ConfigError, load_settings

    if not Path(path).exists():
        return {}
    try:
        settings = load_settings(path)
    except ConfigError:
        return {}
    return {"experiment": settings.mlflow.experiment, "tracking_uri": settings.mlflow.tracking_uri,
            "spool": settings.spool.dir}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", "config/gateway.toml"),
                        help="the gateway's config: default experiment, tracking URI and spool (%(default)s)")
    parser.add_argument("--experiment", help="default: the config's [mlflow] experiment, else iris-flower-prediction")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the config's, else "
                                               "http://127.0.0.1:5001")
    parser.add_argument("--spool", type=Path, help="the gateway's spool directory, checked for predictions not in "
                                                   "MLflow yet (default: the config's [spool] dir)")
    parser.add_argument("--since", type=parse_time, help="ISO time or age (30m, 2h, 7d)")
    parser.add_argument("--until", type=parse_time, help="ISO time or age")
    parser.add_argument("--config-hash", help="only runs served under this routing config")
    parser.add_argument("--role", choices=["primary", "shadow", "all"], default="all")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with charts")
    parser.add_argument("--no-log", action="store_true", help="do not log summary runs to MLflow")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    defaults = _config_defaults(args.config)
    args.experiment = args.experiment or defaults.get("experiment", "iris-flower-prediction")
    args.tracking_uri = (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                         or defaults.get("tracking_uri", "http://127.0.0.1:5001"))
    args.spool = args.spool or defaults.get("spool")

    from gateway.variants import check_tracking_server

    problem = check_tracking_server(args.tracking_uri)
    if problem:
        print(f"error: MLflow tracking server {args.tracking_uri} is unreachable ({problem})", file=sys.stderr)
        return 1
    try:
        report, records = build_report(args.experiment, args.tracking_uri, since=args.since, until=args.until,
                                       config_hash=args.config_hash, role=args.role, progress=not args.json,
                                       seed=args.seed)
    except NoRuns as exc:
        print(f"no data: {exc}", file=sys.stderr)
        return 2
    warning = unexported_warning(args.spool, args.since, args.until, args.role)
    report["warnings"] = [warning] if warning else []
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    report = st.to_jsonable(report)
    html = None
    if args.html or not args.no_log:
        from experiments.report_html import render_html

        html = render_html(report, records)
    if args.html:
        Path(args.html).write_text(html or "")
    if not args.no_log:
        report["mlflow"] = log_summary_runs(report, args.tracking_uri, html)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_terminal(report))
        if args.html:
            print(f"\nHTML report: {args.html}")
        if "mlflow" in report:
            print(f"\nsummary runs logged to experiment {SUMMARY_EXPERIMENT!r}; compare them side by side:")
            print(f"  {report['mlflow']['compare_url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
