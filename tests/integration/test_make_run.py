"""`make run` as a new user runs it: MLflow, the models, the gateway; the seed's call answers; the log
has no progress bars and says what the config's idle sections do; Ctrl-C stops everything with exit
status 0 from the recipe (no "make: *** Error 130/143")."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.harness.processes import ROOT, free_port, wait_http, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_make_run_answers_the_seed_call_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    mlflow_port, gateway_port = free_port(), free_port()
    config = write_config(tmp_path / "gateway.toml", f"http://127.0.0.1:{mlflow_port}", tmp_path / "spool",
                          tmp_path / "cache")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"MLFLOW_PORT={mlflow_port}", f"GATEWAY_PORT={gateway_port}",
         f"VAR_DIR={tmp_path / 'var'}", f"CONFIG={config}", "MLFLOW_WORKERS=1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_http(url + "/readyz", 300, proc)
        r = httpx.post(url + "/predict", content="sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
        assert r.status_code == 200 and r.json()["prediction"] == "Setosa", r.text
        assert r.headers["x-request-id"]  # always there, sent or not
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        out = proc.communicate(timeout=180)[0].decode(errors="replace")
    # make passes the interrupt on to itself once its recipe is done (as an interrupted program does);
    # the recipe itself ends with 0, so make reports no error
    assert proc.returncode in (0, -signal.SIGINT), out[-3000:]
    assert not re.search(r"^make: \*\*\*", out, re.M), out[-3000:]  # e.g. "make: *** [Makefile:40: run] Error 130"
    assert "stopped MLflow and the gateway" in out
    assert "Downloading artifacts" not in out and "it/s]" not in out  # no progress bar in a log
    assert "[shadow] is used only with routing.mode" in out  # a present section that does nothing says so
