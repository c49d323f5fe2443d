"""One report: read the runs of an experiment, analyse them, warn when the spool still holds some."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.report.analyse import NoRuns, analyse
from experiments.report.bandit import bandit_section
from experiments.report.recommend import DEFAULT_MAX_SLOWDOWN
from gateway.mlflow.readback import (
    RECORD_COLUMNS,
    join_window_labels,
    prediction_records,
    search_all,
    window_records,
)


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


def unexported(spool_dir: Path | None, since: int | None, until: int | None, role: str) -> int | None:
    """Predictions (and labels) of the range that the gateway's spool has not shipped to MLflow yet;
    None without a spool. OSError or sqlite3.Error when the spool cannot be read."""
    if spool_dir is None:
        return None
    from gateway.spool.store import PredictionSpool

    if not (spool_dir / PredictionSpool.FILENAME).exists():
        return None
    spool = PredictionSpool(spool_dir)
    try:
        return spool.open_in_range(since, until, None if role == "all" else role) + spool.labels.count_open()
    finally:
        spool.close()


def wait_for_export(spool_dir: Path | None, since: int | None, until: int | None, role: str, seconds: float,
                    progress: bool) -> int | None:
    """Wait up to ``seconds`` for the spool to ship the range's predictions and labels to MLflow, with a
    progress bar on a terminal. Returns what is still waiting (0 when done, None without a spool)."""
    from tqdm import tqdm

    left = _readable(spool_dir, since, until, role)
    if not left:
        return left
    deadline = time.monotonic() + seconds
    with tqdm(total=left, unit="rec", desc="waiting for the export", disable=not progress, file=sys.stderr) as bar:
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            now = _readable(spool_dir, since, until, role) or 0
            bar.update(max(0, left - now))
            left = now
    return left


def _readable(spool_dir: Path | None, since: int | None, until: int | None, role: str) -> int | None:
    try:
        return unexported(spool_dir, since, until, role)
    except Exception:  # an unreadable spool: the warning below says so
        return None


def unexported_warning(spool_dir: Path | None, since: int | None, until: int | None, role: str) -> str | None:
    """A warning when the gateway's spool holds predictions or labels that MLflow has not received yet."""
    try:
        waiting = unexported(spool_dir, since, until, role)
    except Exception as exc:  # a spool we cannot read must not stop the report
        return f"could not read the gateway's spool at {spool_dir} ({exc}); the report may be partial"
    if not waiting:
        return None
    return (f"the gateway's spool ({spool_dir}) still holds {waiting} prediction(s) of this range, or label(s), that "
            "MLflow has not received yet: this report is partial (compare --wait SECONDS waits for them; /stats "
            "shows the export lag)")


def runs_url(tracking_uri: str, experiment_id: str) -> str | None:
    """The experiment's runs table in MLflow's UI (its bare experiment page opens MLflow 3's GenAI
    overview, which shows no runs); None for a tracking URI that is not a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs"


UNLOGGED_MODEL = "model not logged"  # records of releases before the model's identity was logged


def separate_models(records: pd.DataFrame) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]]:
    """One label that stood for more than one model (``v2.0`` retrained and registered again, say) is
    compared as one version per model, named ``label [model]``, with a warning: merged, the label's
    figures would describe no model. Returns the records, the warnings, and each version's models."""
    if records.empty or "model" not in records.columns:
        return records, [], {}
    identity = records["model"].where(records["model"].astype(bool), records["model_uri"]).replace("", UNLOGGED_MODEL)
    warnings, models = [], {}
    version = records["model_version"].astype(str).copy()
    for label, idx in records.groupby("model_version").groups.items():
        found = sorted(identity[idx].unique())
        if len(found) == 1:
            models[str(label)] = found
            continue
        short = {m: m.split(" run ")[0] for m in found}
        if len(set(short.values())) < len(found):
            short = {m: m for m in found}
        for m in found:
            mask = (records["model_version"] == label) & (identity == m)
            version[mask] = f"{label} [{short[m]}]"
            models[f"{label} [{short[m]}]"] = [m]
        warnings.append(f"label {label} stands for {len(found)} different models ({'; '.join(found)}): they are "
                        f"compared apart as {', '.join(f'{label} [{short[m]}]' for m in found)}; to compare a "
                        "label's models with the others, narrow the range (--since/--until, --config-hash)")
    return records.assign(model_version=version), warnings, models


def build_report(experiment: str, tracking_uri: str, *, since: int | None = None, until: int | None = None,
                 config_hash: str | None = None, role: str = "all", progress: bool = False,
                 seed: int = 0, control: str | None = None, correction: str = "holm",
                 segment_by: str | None = None,
                 max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> tuple[dict[str, Any], pd.DataFrame]:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    if exp is None:
        raise NoRuns(f"experiment {experiment!r} does not exist at {tracking_uri}")
    started = time.perf_counter()
    runs = search_all([exp.experiment_id], build_filter(since, until, config_hash, role), progress=progress)
    if runs.empty:
        raise NoRuns(f"no prediction runs in experiment {experiment!r} match the filters")
    parts = [f for f in (prediction_records(runs, segment_by),
                         window_records(runs, tracking_uri, progress, segment_by)) if not f.empty]
    records = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RECORD_COLUMNS)
    records = join_window_labels(records, runs, tracking_uri)
    read_s = time.perf_counter() - started  # runs and their tables
    if records.empty:
        raise NoRuns(f"experiment {experiment!r} has runs, but none is a prediction run")
    records, warnings, models = separate_models(records)
    report = analyse(records, seed=seed, control=control, correction=correction, segment_by=segment_by,
                     max_slowdown=max_slowdown)
    report["warnings"] = warnings
    report["bandit"] = bandit_section(records)
    for section in ("versions", "shadow_versions"):
        for v, s in report[section].items():
            s["models"] = models.get(v, [])
    report.update({
        "report_id": uuid.uuid4().hex, "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "experiment": experiment, "tracking_uri": tracking_uri, "n_runs": len(runs), "read_seconds": round(read_s, 2),
        "filters": {"since": since, "until": until, "config_hash": config_hash, "role": role},
        "links": {"runs": runs_url(tracking_uri, exp.experiment_id)},
    })
    return report, records


def build_table_report(section: Any, engine_name: str, *, experiment: str, tracking_uri: str,
                       spark_master: str = "local[2]", since: int | None = None, until: int | None = None,
                       config_hash: str | None = None, role: str = "all", seed: int = 0, control: str | None = None,
                       correction: str = "holm", segment_by: str | None = None, memory_limit: str = "1500MB",
                       max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> tuple[dict[str, Any], pd.DataFrame]:
    """The report computed where the rows are: ``engine_name`` (duckdb or spark) aggregates the
    inference table of ``section`` ([table]), the statistics run on the aggregates
    (experiments/report/engine/). Returns the report and a sample of rows for its charts."""
    from experiments.report.engine.engines import open_engine
    from experiments.report.engine.queries import Filters
    from experiments.report.engine.report import ENGINE_NOTE, engine_report

    started = time.perf_counter()
    engine = open_engine(engine_name, section, spark_master=spark_master, memory_limit=memory_limit)
    try:
        report, charts = engine_report(engine, Filters(since, until, config_hash, role), seed=seed, control=control,
                                       correction=correction, segment_by=segment_by, max_slowdown=max_slowdown)
        stages: dict[str, float] = {}
        for name, seconds in engine.timings:
            stages[name] = round(stages.get(name, 0.0) + seconds, 3)
    finally:
        engine.close()
    report["warnings"] = []
    report["engine_note"] = f"engine path ({engine_name}): {ENGINE_NOTE}"
    report.update({
        "report_id": uuid.uuid4().hex, "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "experiment": experiment, "tracking_uri": tracking_uri, "n_runs": None,
        "read_seconds": round(time.perf_counter() - started, 2),
        "filters": {"since": since, "until": until, "config_hash": config_hash, "role": role},
        "links": {}, "source": {"path": "engine", "engine": engine_name, "table": section.uri,
                                 "query_seconds": stages},
    })
    return report, charts

