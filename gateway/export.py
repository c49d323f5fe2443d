"""python -m gateway.export --config FILE [--timeout S]: drain a spool into MLflow without serving.

For a spool left behind by a stopped gateway, or one written with ``[spool] export = false``.
Safe to run beside a live gateway on the same spool: rows are leased, never exported twice.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from tqdm import tqdm

from gateway.settings import DEFAULT_CONFIG_PATH, ConfigError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.export", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", str(DEFAULT_CONFIG_PATH)))
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from gateway.exporter import MlflowExporter
    from gateway.spool import PredictionSpool
    from gateway.variants import check_tracking_server

    spool_file = settings.spool.dir / PredictionSpool.FILENAME
    if not spool_file.exists():
        print(f"error: no spool at {spool_file}", file=sys.stderr)
        return 2
    problem = check_tracking_server(settings.mlflow.tracking_uri)
    if problem:
        print(f"error: MLflow tracking server {settings.mlflow.tracking_uri} is unreachable ({problem}); "
              "nothing exported, the spool is unchanged", file=sys.stderr)
        return 1
    spool = PredictionSpool(settings.spool.dir)
    total = spool.count_open()
    exporter = MlflowExporter(
        spool, settings.mlflow.tracking_uri, settings.mlflow.experiment,
        granularity=settings.mlflow.granularity, workers=settings.mlflow.export_workers,
        window_seconds=settings.mlflow.window_seconds, window_max_records=settings.mlflow.window_max_records,
        lease_seconds=30.0,
    )
    start = time.monotonic()
    exporter._flush_windows_now = True
    exporter.start()
    with tqdm(total=total, unit="rec", disable=args.quiet, file=sys.stderr) as bar:
        deadline = start + args.timeout
        while time.monotonic() < deadline:
            left = spool.count_open()
            bar.n = total - left
            bar.refresh()
            if left == 0:
                break
            time.sleep(0.25)
    left = exporter.stop(grace_seconds=0)
    elapsed = time.monotonic() - start
    c = exporter.counters.snapshot()
    print(f"exported {c['exported']} record(s) in {elapsed:.1f}s ({c['exported'] / max(elapsed, 1e-9):.1f}/s); "
          f"failed attempts {c['failed_attempts']}, duplicates avoided {c['duplicates_avoided']}, left {left}")
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
