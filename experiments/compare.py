"""Compare model versions from the prediction runs in MLflow.

    python -m experiments.compare [--experiment NAME] [--since T] [--until T] [--config-hash H]
        [--role primary|shadow|all] [--control NAME] [--correction holm|bh|none] [--max-slowdown RATIO]
        [--json] [--html FILE] [--no-log] [--wait SECONDS]

Reads every prediction run (per-prediction runs, and window runs through their record tables),
summarises latency and the prediction distribution per version (classes for a classifier, values for
a regressor) with the tests that say whether a difference is real, logs one summary run per version
(plus a parent run holding the report) to the comparison experiment, and prints the URL of MLflow's
Compare Runs view for them. It warns when the gateway's spool still holds predictions that MLflow
has not received yet: the report is then partial.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from experiments.report import statistics as st
from experiments.report.analyse import NoRuns
from experiments.report.build import build_report, parse_time, unexported_warning, wait_for_export
from experiments.report.comparisons import CORRECTIONS
from experiments.report.recommend import DEFAULT_MAX_SLOWDOWN
from experiments.report.summary_runs import log_summary_runs
from experiments.report.text import render_terminal
from gateway.config.settings import comparison_experiment_of


def _config_defaults(path: str) -> dict[str, Any]:
    """Experiment, tracking URI and spool directory from the gateway's config file, when it exists."""
    from gateway.config.settings import ConfigError, load_settings

    if not Path(path).exists():
        return {}
    try:
        settings = load_settings(path)
    except ConfigError:
        return {}
    return {"experiment": settings.mlflow.experiment, "tracking_uri": settings.mlflow.tracking_uri,
            "spool": settings.spool.dir, "control": settings.variants[0].name,
            "summary_experiment": settings.mlflow.comparison_experiment, "table": settings.table}


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 1.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite ratio of at least 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for the gateway's spool to ship the range's predictions "
                             "and labels to MLflow (right after traffic, a report is otherwise partial)")
    parser.add_argument("--summary-experiment", help="where the summary runs go (default: the config's [mlflow] "
                                                     "comparison_experiment, else the experiment's name + "
                                                     "'-comparison')")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    parser.add_argument("--control", help="the version every other one is compared with (default: the config's "
                                          "first variant, else the first version by name)")
    parser.add_argument("--segment-by", metavar="COLUMN",
                        help="also compare within segments of an input column (quartiles when numeric) or of a "
                             "logged request header (header:NAME, see [routing] log_headers), with a correction "
                             "family of their own")
    parser.add_argument("--max-slowdown", type=_ratio, default=DEFAULT_MAX_SLOWDOWN, metavar="RATIO",
                        help="a candidate whose p95 is more than this times the control's (95%% intervals apart) "
                             "is clearly slower: not promoted when no better, a trade-off when better "
                             "(default %(default)s)")
    parser.add_argument("--engine", choices=["auto", "mlflow", "duckdb", "spark"], default="auto",
                        help="duckdb or spark: aggregate the inference table of the config's [table] where the rows "
                             "are, the statistics on the aggregates; mlflow: read every run and its rows into pandas "
                             "(per-prediction runs, window runs from before the table); auto (default): duckdb when "
                             "the config writes the table ([table] enabled), else mlflow (docs/report.md)")
    parser.add_argument("--spark-master", default="local[2]",
                        help="Spark's master URL with --engine spark (default %(default)s; a cluster's in production)")
    parser.add_argument("--memory-limit", default="1500MB", metavar="SIZE",
                        help="DuckDB's memory limit with --engine duckdb, past which it spills to disk (default "
                             "%(default)s; more is faster on a large table)")
    parser.add_argument("--correction", choices=CORRECTIONS, default="holm",
                        help="p-value adjustment across versions x metrics: holm (default; any false positive "
                             "at most alpha), bh (Benjamini-Hochberg: false discovery rate), none")
    return parser


def _with_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """Fill what the command line left out from the gateway's config (and MLFLOW_TRACKING_URI); the
    config's defaults that have no flag of their own (the control) come back."""
    defaults = _config_defaults(args.config)
    args.experiment = args.experiment or defaults.get("experiment", "iris-flower-prediction")
    args.tracking_uri = (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                         or defaults.get("tracking_uri", "http://127.0.0.1:5001"))
    args.spool = args.spool or defaults.get("spool")
    args.summary_experiment = (args.summary_experiment or defaults.get("summary_experiment")
                               or comparison_experiment_of(args.experiment))
    return defaults


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    # one progress bar of our own (reading the window tables), on a terminal only; none of MLflow's per download
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    defaults = _with_defaults(args)
    if args.engine == "auto":
        table = defaults.get("table")
        args.engine = "duckdb" if table is not None and table.enabled else "mlflow"

    from gateway.mlflow.client import check_tracking_server

    problem = None if args.engine != "mlflow" and args.no_log else check_tracking_server(args.tracking_uri)
    if problem:
        print(f"error: MLflow tracking server {args.tracking_uri} is unreachable ({problem}); point the report at "
              "yours with --tracking-uri URL or MLFLOW_TRACKING_URI=URL (make run MLFLOW_PORT=N serves it at "
              "http://127.0.0.1:N and prints the line to export)", file=sys.stderr)
        return 1
    if args.wait > 0:
        left = wait_for_export(args.spool, args.since, args.until, args.role, args.wait,
                               progress=not args.json and sys.stderr.isatty())
        if left:
            print(f"warning: {left} record(s) still wait in the spool after {args.wait:g} s", file=sys.stderr)
    if args.engine != "mlflow":
        return _engine_report(args, defaults)
    try:
        report, records = build_report(args.experiment, args.tracking_uri, since=args.since, until=args.until,
                                       config_hash=args.config_hash, role=args.role,
                                       progress=not args.json and sys.stderr.isatty(),
                                       seed=args.seed, control=args.control or defaults.get("control"),
                                       correction=args.correction, segment_by=args.segment_by,
                                       max_slowdown=args.max_slowdown)
    except NoRuns as exc:
        print(f"no data: {exc}", file=sys.stderr)
        return 2
    warning = unexported_warning(args.spool, args.since, args.until, args.role)
    report["partial"] = warning is not None  # the spool still holds predictions of this range
    report["warnings"] = [*report.get("warnings", []), *([warning] if warning else [])]
    for message in report["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    _publish(st.to_jsonable(report), records, args)
    return 0


def _engine_report(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    """--engine duckdb|spark: the report from the inference table's aggregates."""
    from experiments.report.build import build_table_report
    from experiments.report.engine.engines import TableMissing
    from experiments.report.engine.report import EngineUnsupported

    section = defaults.get("table")
    if section is None:
        print(f"error: --engine {args.engine} reads the inference table of the gateway's config ([table] uri); "
              f"{args.config} could not be read", file=sys.stderr)
        return 2
    try:
        report, charts = build_table_report(
            section, args.engine, experiment=args.experiment, tracking_uri=args.tracking_uri,
            spark_master=args.spark_master, since=args.since, until=args.until, config_hash=args.config_hash,
            role=args.role, seed=args.seed, control=args.control or defaults.get("control"),
            correction=args.correction, segment_by=args.segment_by, max_slowdown=args.max_slowdown,
            memory_limit=args.memory_limit)
    except EngineUnsupported as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (NoRuns, TableMissing) as exc:
        print(f"no data: {exc}", file=sys.stderr)
        return 2
    warning = unexported_warning(args.spool, args.since, args.until, args.role)
    report["partial"] = warning is not None
    report["warnings"] = [*report["warnings"], *([warning] if warning else [])]
    for message in report["warnings"]:
        print(f"warning: {message}", file=sys.stderr)
    _publish(st.to_jsonable(report), charts, args)
    return 0


def _publish(report: dict[str, Any], records: Any, args: argparse.Namespace) -> None:
    """The report where it was asked for: an HTML file, summary runs in MLflow, the terminal or JSON."""
    html = None
    if args.html or not args.no_log:
        from experiments.report.html import render_html

        html = render_html(report, records)
    if args.html:
        Path(args.html).write_text(html or "")
    if not args.no_log:
        report["mlflow"] = log_summary_runs(report, args.tracking_uri, html, args.summary_experiment)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render_terminal(report))
        if args.html:
            print(f"\nHTML report: {args.html}")
        if "mlflow" in report:
            print(f"\nsummary runs logged to experiment {args.summary_experiment!r}; compare them side by side:")
            print(f"  {report['mlflow']['compare_url']}")


if __name__ == "__main__":
    sys.exit(main())
