"""`make bench-report`, the engines: the report where the rows are, at 10 and 100 million predictions.

Synthetic rows go straight into an inference table (experiments.bench.table_rows: two versions,
sticky users, 10% labelled; vectorised, not through the spool), then ``python -m experiments.compare
--engine E --json --no-log`` runs as its own process on each engine while the resident memory of
every process it starts (the JVM's too, for Spark) is sampled. Targets at 100 million: DuckDB <= 60 s
and peak RSS <= 2 GB; Spark local[2]'s time reported.

    python -m experiments.bench.report_engines [--rows 10000000,100000000] [--engines duckdb,spark]

Writes var/bench/report-engines.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from experiments.bench.memory import group_rss_mb
from experiments.bench.table_rows import Shape, write
from stack.processes import ROOT

TARGET_SECONDS, TARGET_RSS_MB = 60.0, 2048.0
STAGES = ("prepare labels", "prepare judged", "prepare sticky_users", "versions", "classes", "sample", "accuracy",
          "unit", "latency_counts", "per_user", "srm", "exposure", "__init__", "srm_test", "bandit")


def run_report(config: Path, engine: str, timeout: float = 3600) -> dict[str, Any]:
    """One report as its own process: seconds, peak RSS of its process group, and its headline figures."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "experiments.compare", "--config", str(config), "--engine", engine,
                             "--json", "--no-log"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            peak[0] = max(peak[0], group_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the {engine} report failed ({proc.returncode}): {err[-2000:]}")
    report = json.loads(out)
    decisions = {v: c["decision"] for v, c in (report.get("recommendation") or {}).get("candidates", {}).items()}
    return {"engine": engine, "rows": report["n_records"], "seconds": round(seconds, 1), "peak_rss_mb": round(peak[0]),
            "p95_ms": {v: round(s["latency_ms"]["p95"], 4) for v, s in report["versions"].items()},
            "accuracy": {v: round(s["accuracy"]["rate"], 5) for v, s in report["versions"].items() if s["accuracy"]},
            "decisions": decisions, "stages": report["source"].get("query_seconds", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.report_engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000000,100000000", help="table sizes, written cumulatively")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"))
    args = parser.parse_args(argv)
    sizes = sorted(int(x) for x in args.rows.split(","))
    engines = [e for e in args.engines.split(",") if e]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    writes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="report-engines-", dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp) / "table"
        config = Path(tmp) / "gateway.toml"
        config.write_text(f'[mlflow]\ngranularity = "window"\n\n[table]\nenabled = true\nuri = "{root}"\n\n'
                          '[[variants]]\nname = "v1.0"\nmodel_uri = "models:/IrisClassifier/1"\n\n'
                          '[[variants]]\nname = "v2.0"\nmodel_uri = "models:/IrisClassifier/2"\n')
        written = 0
        for size in sizes:
            print(f"writing rows {written:,} .. {size:,} into {root}", file=sys.stderr)
            shape = Shape(rows=size, users=args.users)
            seconds = write(str(root), shape, first=written)
            writes.append({"rows": size, "seconds": round(seconds, 1)})
            written = size
            for engine in engines:
                print(f"report on {engine}, {size:,} rows", file=sys.stderr)
                result = run_report(config, engine)
                print(f"  {result}", file=sys.stderr)
                results.append(result)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    top = [r for r in results if r["rows"] == sizes[-1] and r["engine"] == "duckdb"]
    met = bool(top) and top[0]["seconds"] <= TARGET_SECONDS and top[0]["peak_rss_mb"] <= TARGET_RSS_MB
    lines = [f"# The report where the rows are, {when} ({os.cpu_count()} cores)", "",
             "| rows | engine | seconds | peak RSS MB | p95 ms per version | accuracy per version | decisions |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rows']:,} | {r['engine']} | {r['seconds']} | {r['peak_rss_mb']:,} | {r['p95_ms']} | "
              f"{r['accuracy']} | {r['decisions']} |" for r in results]
    lines += ["", "Seconds per stage (the engine's queries, summed by the function that ran them):", "",
              "| rows | engine | " + " | ".join("slices" if s == "__init__" else s for s in STAGES) + " |",
              "|---|---|" + "---|" * len(STAGES)]
    lines += [f"| {r['rows']:,} | {r['engine']} | " + " | ".join(str(r["stages"].get(s, "-")) for s in STAGES) + " |"
              for r in results]
    written_text = ", ".join(f"{w['rows']:,} rows after {w['seconds']} s" for w in writes)
    lines += ["", f"Table written at {written_text}.",
              f"Target at {sizes[-1]:,} rows, DuckDB: <= {TARGET_SECONDS:.0f} s and <= {TARGET_RSS_MB:.0f} MB: "
              f"{'met' if met else 'NOT met'}."]
    text = "\n".join(lines) + "\n"
    (out / "report-engines.md").write_text(text)
    (out / "report-engines.json").write_text(json.dumps({"when": when, "results": results, "writes": writes,
                                                         "target_met": met}, indent=2))
    print(text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
