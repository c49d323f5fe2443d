"""python -m gateway.export --config FILE: drain a spool into MLflow without serving.

For a spool left behind by a stopped gateway, or one written with ``[spool] export = false``.
Safe to run beside a live gateway on the same spool: rows are leased, never exported twice.

``--follow`` keeps exporting until SIGTERM/SIGINT, then drains for the grace time: this is how the
gateway runs its exporter, as a child process at a lower CPU priority (see gateway/export/process.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from gateway.config.settings import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from gateway.domain.messages import install_log_redaction, without_credentials
from gateway.export.process import SETTINGS_ENV
from gateway.wiring.exporter import spool_exporter

log = logging.getLogger("gateway.export")


_status_unwritable = False


def write_status(path: Path, payload: dict[str, object]) -> None:
    """The status file for the gateway's /stats. A full or read-only disk only makes it stale (the
    gateway then reports the exporter stalled after 15 s): the export itself goes on."""
    global _status_unwritable
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
    except OSError as exc:
        if not _status_unwritable:
            log.warning("cannot write the exporter's status file %s (%s); exporting on", path, exc)
        _status_unwritable = True
        return
    if _status_unwritable:
        log.info("the exporter's status file %s is written again", path)
    _status_unwritable = False


def follow(settings: Settings, status_path: Path | None, parent_pid: int | None) -> int:
    """Export until told to stop (a signal, or the parent gateway going away), then drain."""
    spool, exporter = spool_exporter(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    exporter.start()
    log.info("exporter %d following %s into %s (%s)", os.getpid(), spool.path, settings.mlflow.tracking_uri,
             settings.mlflow.granularity)
    orphaned = False
    while not stop.wait(0.5):
        if status_path is not None:
            write_status(status_path, {"pid": os.getpid(), "at": time.time(), **exporter.status()})
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("gateway %d is gone; exporter stopping now (the next gateway's exporter takes over)",
                        parent_pid)
            orphaned = True
            break
    # An orphan does not drain: a restarted gateway's exporter is already at work, and what this one
    # had leased goes back when its leases run out (exactly once all the same, by the request_id tag).
    left = exporter.stop(0.0 if orphaned else settings.spool.shutdown_grace_seconds,
                         join_seconds=2.0 if orphaned else None)
    if status_path is not None:
        write_status(status_path, {"pid": os.getpid(), "at": time.time(), "stopped": True, "left": left,
                                   **exporter.status()})
    if orphaned:
        logging.shutdown()
        os._exit(0)  # a thread still inside an MLflow call (its client retries for minutes) must not keep it alive
    return 0


def drain(settings: Settings, timeout: float, quiet: bool) -> int:
    from gateway.mlflow.client import check_tracking_server
    from gateway.spool.store import PredictionSpool

    spool_file = settings.spool.dir / PredictionSpool.FILENAME
    if not spool_file.exists():
        print(f"error: no spool at {spool_file}", file=sys.stderr)
        return 2
    problem = check_tracking_server(settings.mlflow.tracking_uri)
    if problem:
        print(f"error: MLflow tracking server {without_credentials(settings.mlflow.tracking_uri)} is unreachable "
              f"({without_credentials(problem)}); "
              "nothing exported, the spool is unchanged", file=sys.stderr)
        return 1
    spool, exporter = spool_exporter(settings, lease_seconds=30.0)
    total = spool.count_open() + spool.labels.count_open()
    start = time.monotonic()
    exporter.drain_now()
    exporter.start()
    with tqdm(total=total, unit="rec", disable=quiet or not sys.stderr.isatty(), file=sys.stderr) as bar:
        deadline = start + timeout
        while time.monotonic() < deadline:
            left = spool.count_open() + spool.labels.count_open()
            bar.n = total - left
            bar.refresh()
            if left == 0:
                break
            time.sleep(0.25)
    left = exporter.stop(grace_seconds=0)
    elapsed = time.monotonic() - start
    c = exporter.status()
    print(f"exported {c['exported']} record(s) in {elapsed:.1f}s ({c['exported'] / max(elapsed, 1e-9):.1f}/s); "
          f"failed attempts {c['failed_attempts']}, duplicates avoided {c['duplicates_avoided']}, left {left}")
    return 0 if left == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.export", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", str(DEFAULT_CONFIG_PATH)))
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (there is none without a terminal)")
    parser.add_argument("--follow", action="store_true", help="keep exporting until SIGTERM, then drain")
    parser.add_argument("--status-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N")
    args = parser.parse_args(argv)
    install_log_redaction()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if args.nice:
        os.nice(args.nice)
    try:
        inherited = os.environ.pop(SETTINGS_ENV, None)  # the gateway passes its own settings
        settings = Settings.model_validate_json(inherited) if inherited else load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {without_credentials(str(exc))}", file=sys.stderr)
        return 2
    if args.follow:
        return follow(settings, args.status_file, args.parent_pid)
    return drain(settings, args.timeout, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
