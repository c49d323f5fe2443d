"""Compare model versions from the prediction runs in MLflow.

    python -m experiments.compare [--experiment NAME] [--since T] [--until T] [--config-hash H]
        [--role primary|shadow|all] [--json] [--html FILE] [--no-log]

Reads every prediction run (per-prediction runs, and window runs through their record tables),
summarises latency and class distribution per version with the tests that say whether a difference
is real, logs one summary run per version (plus a parent run holding the report) to experiment
``iris-ab-comparison``, and prints the URL of MLflow's Compare Runs view for them.
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

CLASS_NAMES = ["Setosa", "Versicolor", "Virginica"]
SUMMARY_EXPERIMENT = "iris-ab-comparison"
PAGE = 50_000  # MLflow's largest page for search_runs
RECORD_COLUMNS = ["request_id", "role", "model_version", "class_name", "latency_ms", "ts_ms", "routing",
                  "config_hash", "weights", "correct"]


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
    df = runs[_col(runs, "tags.granularity", "prediction").fillna("prediction") == "prediction"]
    df = df[df.get("tags.model_version", pd.Series(dtype=str)).notna()] if len(df) else df
    if df.empty or "metrics.inference_time_ms" not in df.columns:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    classes = _col(df, "tags.prediction")
    fallback = _col(df, "metrics.prediction_class").map(
        lambda v: CLASS_NAMES[int(v)] if pd.notna(v) and 0 <= int(v) < 3 else None)
    return pd.DataFrame({
        "request_id": _col(df, "tags.request_id").fillna(df["run_id"]),
        "role": _col(df, "tags.role", "primary").fillna("primary"),
        "model_version": df["tags.model_version"],
        "class_name": classes.fillna(fallback),
        "latency_ms": df["metrics.inference_time_ms"].astype(float),
        "ts_ms": (df["start_time"].astype("int64") // 1_000_000).astype("int64"),
        "routing": _col(df, "tags.routing", "weighted").fillna("weighted"),
        "config_hash": _col(df, "tags.config_hash", "").fillna(""),
        "weights": _col(df, "tags.weights", "").fillna(""),
        "correct": _col(df, "metrics.correct", np.nan).astype(float),
    }).dropna(subset=["latency_ms", "class_name"])


def window_records(runs: pd.DataFrame, tracking_uri: str) -> pd.DataFrame:
    """Window runs expanded to their records, from each run's predictions.jsonl table."""
    if "tags.granularity" not in runs.columns:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    windows = runs[runs["tags.granularity"] == "window"]
    if windows.empty:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_id in windows["run_id"]:
            path = client.download_artifacts(run_id, "predictions.jsonl", tmp)
            frames.append(pd.read_json(path, lines=True))
    raw = pd.concat(frames, ignore_index=True)
    return pd.DataFrame({
        "request_id": raw["request_id"].astype(str), "role": raw["role"], "model_version": raw["model_version"],
        "class_name": raw["class_name"], "latency_ms": raw["inference_time_ms"].astype(float),
        "ts_ms": raw["ts_ms"].astype("int64"), "routing": raw["routing"], "config_hash": raw["config_hash"],
        "weights": raw["weights"] if "weights" in raw.columns else "",
        "correct": np.nan,  # ground truth is joined to per-prediction runs only
    })


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


def _group_summary(group: pd.DataFrame, total: int, seed: int) -> dict[str, Any]:
    counts = group["class_name"].value_counts()
    classes = {c: int(counts.get(c, 0)) for c in CLASS_NAMES}
    n = len(group)
    correct = group["correct"] if "correct" in group.columns else pd.Series(dtype=float)
    return {
        "accuracy": st.accuracy(correct.to_numpy(dtype=float)),
        "count": n,
        "share": n / total if total else 0.0,
        "latency_ms": st.latency_summary(group["latency_ms"].to_numpy(), seed=seed),
        "classes": classes,
        "class_shares": {c: classes[c] / n for c in CLASS_NAMES},
    }


def analyse(records: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """The whole report, as a JSON-ready dict (schema in the README)."""
    if records.empty:
        raise NoRuns("no prediction records")
    primary = records[records["role"] == "primary"]
    shadow = records[records["role"] == "shadow"]
    report: dict[str, Any] = {"n_records": len(records), "versions": {}, "shadow_versions": {},
                              "tests": {"class_chi2": None, "latency_mwu": None, "srm": None}, "shadow": None,
                              "verdicts": []}
    for version, group in sorted(primary.groupby("model_version"), key=lambda kv: str(kv[0])):
        report["versions"][str(version)] = _group_summary(group, len(primary), seed)
    for version, group in sorted(shadow.groupby("model_version"), key=lambda kv: str(kv[0])):
        report["shadow_versions"][str(version)] = _group_summary(group, len(shadow), seed)
    names = list(report["versions"])
    verdicts: list[str] = report["verdicts"]
    if len(names) >= 2:
        table = np.array([[report["versions"][v]["classes"][c] for c in CLASS_NAMES] for v in names])
        report["tests"]["class_chi2"] = st.class_chi2(table)
        verdicts.append(st.class_verdict(report["tests"]["class_chi2"], names))
        base = names[0]
        pairs = []
        for other in names[1:]:
            res = st.latency_mwu(primary.loc[primary["model_version"] == base, "latency_ms"].to_numpy(),
                                 primary.loc[primary["model_version"] == other, "latency_ms"].to_numpy(), seed=seed)
            if res is not None:
                res = {"a": base, "b": other, **res}
            pairs.append(res)
            verdicts.append(st.latency_verdict(base, other, res))
        report["tests"]["latency_mwu"] = pairs[0]
        if len(pairs) > 1:
            report["tests"]["latency_mwu_all"] = pairs
    elif names:
        verdicts.append(f"only {names[0]} answered traffic: no between-version tests")
    labelled = {v: s["accuracy"] for v, s in report["versions"].items() if s["accuracy"]}
    if labelled:
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
    # Sample-ratio mismatch, per configuration period, on randomised traffic only.
    randomised = primary[primary["routing"].isin(["weighted", "sticky"]) & (primary["weights"] != "")]
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
    elif len(names) >= 2:
        verdicts.append(st.srm_verdict(None))
    if not shadow.empty:
        report["shadow"] = shadow_analysis(primary, shadow, seed)
        verdicts.extend(report["shadow"]["verdicts"])
    return report


def shadow_analysis(primary: pd.DataFrame, shadow: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    pairs = primary.merge(shadow, on="request_id", suffixes=("_p", "_s"))
    out: dict[str, Any] = {"pairs": len(pairs), "agreement": None, "confusion": None, "paired_latency": None,
                           "verdicts": []}
    if pairs.empty:
        out["verdicts"].append("shadow: no request has both a primary and a shadow record yet")
        return out
    out["primary"] = ", ".join(sorted(pairs["model_version_p"].unique()))
    out["candidate"] = ", ".join(sorted(pairs["model_version_s"].unique()))
    out["agreement"] = st.agreement(pairs["class_name_p"].to_numpy(), pairs["class_name_s"].to_numpy())
    matrix = pd.crosstab(pd.Categorical(pairs["class_name_p"], categories=CLASS_NAMES),
                         pd.Categorical(pairs["class_name_s"], categories=CLASS_NAMES), dropna=False)
    out["confusion"] = {"rows": "primary", "columns": "candidate", "labels": CLASS_NAMES,
                        "matrix": matrix.to_numpy().astype(int).tolist()}
    out["paired_latency"] = st.paired_latency(pairs["latency_ms_p"].to_numpy(), pairs["latency_ms_s"].to_numpy(),
                                              seed=seed)
    ag = out["agreement"]
    out["verdicts"].append(
        f"shadow: {out['candidate']} agrees with {out['primary']} on {ag['rate']:.1%} of {ag['n']} requests "
        f"(95% CI {ag['ci'][0]:.1%}-{ag['ci'][1]:.1%})")
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
    for title, key in (("answered traffic (role primary)", "versions"), ("shadow scoring (role shadow)",
                                                                           "shadow_versions")):
        versions = report[key]
        if not versions:
            continue
        lines.append(title)
        lines.append(f"  {'version':<8} {'count':>7} {'share':>7} {'mean':>7} {'p50':>7} {'p50 95% CI':>17} "
                     f"{'p95':>7} {'p99':>7}   " + "  ".join(f"{c:>10}" for c in CLASS_NAMES))
        for v, s in versions.items():
            lat = s["latency_ms"]
            ci = lat["p50_ci"]
            ci_text = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
            classes = "  ".join(f"{s['class_shares'][c]:>10.1%}" for c in CLASS_NAMES)
            lines.append(f"  {v:<8} {s['count']:>7} {s['share']:>7.1%} {lat['mean']:>7.3f} {lat['p50']:>7.3f} "
                         f"{ci_text:>17} {lat['p95']:>7.3f} {lat['p99']:>7.3f}   {classes}")
        lines.append("  (latency in ms: the model's own predict time)")
        lines.append("")
    shadow = report.get("shadow")
    if shadow and shadow.get("confusion"):
        lines.append(f"shadow confusion (rows: {shadow['primary']} primary, columns: {shadow['candidate']})")
        lines.append("  " + " " * 11 + "".join(f"{c:>11}" for c in CLASS_NAMES))
        for label, row in zip(CLASS_NAMES, shadow["confusion"]["matrix"], strict=True):
            lines.append(f"  {label:<11}" + "".join(f"{x:>11}" for x in row))
        lines.append("")
    lines.append("verdicts")
    lines += [f"  - {v}" for v in report["verdicts"]]
    return "\n".join(lines)


def log_summary_runs(report: dict[str, Any], tracking_uri: str, html: str | None) -> dict[str, Any]:
    """One parent run with the report files, one child run per version; return ids and the Compare URL."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(SUMMARY_EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(SUMMARY_EXPERIMENT)
    now = int(time.time() * 1000)
    rid = report["report_id"]
    parent = client.create_run(exp_id, start_time=now, run_name=f"ab-report-{rid[:8]}", tags={
        "report_id": rid, "source_experiment": str(report.get("experiment")), "kind": "ab-report",
        "filters": json.dumps(report.get("filters", {}))})
    parent_id = parent.info.run_id
    client.log_text(parent_id, json.dumps(report, indent=2), "report.json")
    if html is not None:
        client.log_text(parent_id, html, "report.html")
    tests = report["tests"]
    pvals = {"class_chi2_p_value": (tests.get("class_chi2") or {}).get("p_value"),
             "latency_mwu_p_value": (tests.get("latency_mwu") or {}).get("p_value"),
             "srm_p_value": (tests.get("srm") or {}).get("p_value")}
    if report.get("shadow") and report["shadow"].get("agreement"):
        pvals["shadow_agreement"] = report["shadow"]["agreement"]["rate"]
    child_ids = []
    for role, versions in (("primary", report["versions"]), ("shadow", report["shadow_versions"])):
        for version, s in versions.items():
            lat = s["latency_ms"]
            metrics = {"count": s["count"], "share": s["share"], "latency_mean_ms": lat["mean"],
                       "latency_p50_ms": lat["p50"], "latency_p95_ms": lat["p95"], "latency_p99_ms": lat["p99"],
                       **{f"class_share_{c}": s["class_shares"][c] for c in CLASS_NAMES},
                       **{f"class_count_{c}": s["classes"][c] for c in CLASS_NAMES},
                       **{k: v for k, v in pvals.items() if v is not None}}
            if s.get("accuracy"):
                metrics["accuracy"] = s["accuracy"]["rate"]
                metrics["labelled"] = s["accuracy"]["n"]
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
    read_s = time.perf_counter() - started
    parts = [f for f in (prediction_records(runs), window_records(runs, tracking_uri)) if not f.empty]
    records = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RECORD_COLUMNS)
    if records.empty:
        raise NoRuns(f"experiment {experiment!r} has runs, but none is a prediction run")
    report = analyse(records, seed=seed)
    report.update({
        "report_id": uuid.uuid4().hex, "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "experiment": experiment, "tracking_uri": tracking_uri, "n_runs": len(runs), "read_seconds": round(read_s, 2),
        "filters": {"since": since, "until": until, "config_hash": config_hash, "role": role},
    })
    return report, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="iris-flower-prediction")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001"))
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
