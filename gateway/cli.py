"""What every command-line entry point does first: logging, and the settings (one line on stderr and
exit status 2 when the config is invalid)."""

from __future__ import annotations

import logging
import os
import sys

from gateway.config.settings import ConfigError, Settings, StateBackend, load_settings
from gateway.domain.messages import install_log_redaction, without_credentials
from gateway.security.keys import secrets_problem


def start_cli(config: str, log_level: str, serves: bool = True) -> Settings | None:
    """``serves``: the process answers clients, so it needs the feedback secrets (gateway/security/keys.py)."""
    install_log_redaction()
    if not sys.stderr.isatty():  # MLflow's per-download progress bars would fill the log
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"error: {without_credentials(str(exc))}", file=sys.stderr)
        return None
    problem = serves and secrets_problem(settings.state.backend == StateBackend.MLFLOW, settings.feedback.receipts)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    for note in settings.notices:
        logging.getLogger("gateway.config").info("%s", note)
    return settings
