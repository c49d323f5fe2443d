"""python -m gateway.delta --config FILE: compact the inference tables and vacuum what is past retention.

Run it from cron or a Kubernetes CronJob, e.g. hourly with --vacuum-hours 168. One at a time: a
second run while one works exits at once (a lock file in [spool] dir).
"""

from __future__ import annotations

import argparse
import os
import sys

from gateway.cli import start_cli
from gateway.config.settings import DEFAULT_CONFIG_PATH
from gateway.delta.maintenance import maintain
from gateway.delta.spec import FEEDBACK, PREDICTIONS
from gateway.spool.leader import LeaderLock

LOCK = "table-maintenance.lock"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.delta", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", str(DEFAULT_CONFIG_PATH)))
    parser.add_argument("--no-compact", action="store_true", help="only vacuum")
    parser.add_argument("--vacuum-hours", type=float, metavar="HOURS",
                        help="delete files removed more than HOURS ago (versions older than that can no longer be "
                             "read); below 168 (Delta's default retention) only when given")
    parser.add_argument("--log-level", default=os.environ.get("GATEWAY_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    settings = start_cli(args.config, args.log_level, serves=False)
    if settings is None:
        return 2
    if not settings.table.enabled:
        print("error: [table] enabled is false in this config: there are no inference tables to maintain",
              file=sys.stderr)
        return 2
    settings.spool.dir.mkdir(parents=True, exist_ok=True)
    lock = LeaderLock(settings.spool.dir / LOCK)
    if not lock.try_acquire():
        print(f"another maintenance of these tables is running (lock {settings.spool.dir / LOCK}); not starting",
              file=sys.stderr)
        return 3
    try:
        for name in (PREDICTIONS, FEEDBACK):
            done = maintain(settings.table.table_uri(name), compact=not args.no_compact,
                            vacuum_hours=args.vacuum_hours, storage_options=settings.table.storage_options)
            print(done.line() if done is not None else f"{settings.table.table_uri(name)}: no table yet")
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
