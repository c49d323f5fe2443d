"""python -m gateway.rollout --config FILE: the one rollout controller for many gateway replicas.

With ``[state] backend = "mlflow"`` every replica follows the routing and the rollout kept in MLflow's
registry, and publishes its live counts on /metrics. This process takes the decisions for all of
them: at every look it sums the replicas' counts from Prometheus (accuracy from the ground truth in
MLflow), evaluates the guardrails, and writes advance, rollback or promote to the shared state,
which every replica applies within a poll.
A [rollout] section with ``enabled = true`` starts that rollout (once); POST /admin/rollout on any
replica starts one too. A second controller running by mistake cannot double a decision: each is a
version built on the state it looked at, and the registry accepts one of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from gateway.cli import start_cli
from gateway.config.settings import DEFAULT_CONFIG_PATH, StateBackend
from gateway.wiring.controller import StandaloneController, serve_metrics

log = logging.getLogger("gateway.rollout")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.rollout",
                                     description="The rollout controller for gateway replicas sharing state in MLflow.")
    parser.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", str(DEFAULT_CONFIG_PATH)),
                        help="the replicas' TOML config file (default: %(default)s)")
    parser.add_argument("--log-level", default=os.environ.get("GATEWAY_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    settings = start_cli(args.config, args.log_level, serves=False)
    if settings is None:
        return 2
    if settings.state.backend != StateBackend.MLFLOW:
        print("error: state.backend is 'local': each gateway decides its own rollout; the standalone controller "
              "is for replicas that share state in MLflow (set [state] backend = \"mlflow\")", file=sys.stderr)
        return 2
    controller = StandaloneController(settings)
    if settings.controller.metrics_port:
        serve_metrics(controller, settings.controller.metrics_host, settings.controller.metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: controller.stop())
    controller.run()
    log.info("rollout controller stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
