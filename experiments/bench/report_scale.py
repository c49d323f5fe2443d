"""`make bench-report`: how fast `experiments.compare` reads, against a real `mlflow server`.

1. A million window-mode predictions, written through the gateway's spool and window exporter
   (experiments.bench.synthetic_windows), then one report over all of them: target <= 60 s.
2. Per-prediction runs (the seed's schema, one run each), written by the gateway's exporter, then a
   report over them: the read rate in runs/s, and the number of predictions at which a report would
   take a minute, past which docs/report.md says to switch to window mode.

Writes var/bench/report-bench.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from stack.processes import MlflowServer

TARGET_SECONDS = 60.0


def _report_seconds(tracking_uri: str, experiment: str) -> tuple[float, int, int]:
    from experiments.report.build import build_report

    started = time.perf_counter()
    report, _ = build_report(experiment, tracking_uri, progress=True)
    return time.perf_counter() - started, int(report["n_records"]), int(report["n_runs"])


def _per_prediction_runs(tracking_uri: str, experiment: str, n: int) -> float:
    """n predictions exported one run each by the gateway's per-prediction exporter; its seconds."""
    import numpy as np

    from experiments.bench.synthetic_windows import records
    from gateway.export.strategies import ExportCounters, PredictionRuns
    from gateway.mlflow.runs import RunWriter
    from gateway.spool.store import PredictionSpool

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spool = PredictionSpool(Path(tmp))
        spool.append_groups([[r] for r in records(0, n, np.random.default_rng(1), int(time.time() * 1000) - n)])
        strategy = PredictionRuns(spool, RunWriter(tracking_uri, experiment), ExportCounters(), workers=8)
        from concurrent.futures import ThreadPoolExecutor

        def export_all() -> None:
            while (rows := strategy.claim(draining=True)) is not None:
                strategy.export(rows, lambda: False)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for f in [pool.submit(export_all) for _ in range(8)]:
                f.result()
        assert spool.count_open() == 0
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.report_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1_000_000, help="window-mode predictions (default %(default)s)")
    parser.add_argument("--per-prediction", type=int, default=3000, help="per-prediction runs (default %(default)s)")
    parser.add_argument("--out", default="var/bench")
    args = parser.parse_args(argv)
    from experiments.bench.synthetic_windows import generate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, MlflowServer(Path(tmp), workers=4) as server:
        print(f"MLflow server at {server.url}; writing {args.n:,} window-mode predictions", file=sys.stderr)
        written = generate(server.url, "bench-windows", args.n)
        window_s, window_n, window_runs = _report_seconds(server.url, "bench-windows")
        print(f"writing {args.per_prediction:,} per-prediction runs", file=sys.stderr)
        write_s = _per_prediction_runs(server.url, "bench-predictions", args.per_prediction)
        pred_s, pred_n, pred_runs = _report_seconds(server.url, "bench-predictions")
    rate = pred_runs / pred_s
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "window": {"predictions": window_n, "runs": window_runs, "report_seconds": round(window_s, 1),
                   "predictions_per_second": round(window_n / window_s), "written": written,
                   "target_seconds": TARGET_SECONDS, "target_met": window_n == args.n and window_s <= TARGET_SECONDS},
        "per_prediction": {"runs": pred_runs, "predictions": pred_n, "report_seconds": round(pred_s, 1),
                           "runs_per_second": round(rate), "write_seconds": round(write_s, 1),
                           "predictions_for_a_one_minute_report": int(rate * 60)},
    }
    (out / "report-bench.json").write_text(json.dumps(result, indent=2))
    w, p = result["window"], result["per_prediction"]
    text = (f"# Report benchmark, {result['when']}\n\n"
            f"| mode | predictions | runs | report | rate |\n|---|---|---|---|---|\n"
            f"| window (Parquet tables) | {w['predictions']:,} | {w['runs']:,} | {w['report_seconds']} s | "
            f"{w['predictions_per_second']:,} predictions/s |\n"
            f"| per prediction | {p['predictions']:,} | {p['runs']:,} | {p['report_seconds']} s | "
            f"{p['runs_per_second']:,} runs/s |\n\n"
            f"Target: {w['predictions']:,} window-mode predictions in <= {TARGET_SECONDS:.0f} s: "
            f"{'met' if w['target_met'] else 'MISSED'}. A per-prediction report takes a minute at about "
            f"{p['predictions_for_a_one_minute_report']:,} predictions.\n")
    (out / "report-bench.md").write_text(text)
    print(text)
    return 0 if w["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
