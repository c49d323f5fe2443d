"""`make run` as a new user runs it, on ports and a VAR_DIR of their own: MLflow, the models, the
gateway; the seed's call answers; the README's compare command works with the line make run prints;
the log has no progress bars, no recipe echo and no notice for the shipped config; Ctrl-C stops
everything with exit status 0 from the recipe (no "make: *** Error 130/143")."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from stack.processes import ROOT, free_port, wait_http, write_config

pytestmark = pytest.mark.integration  # free ports and its own VAR_DIR: it runs beside other modules


def test_make_run_answers_the_seed_call_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    mlflow_port, gateway_port, grpc_port = free_port(), free_port(), free_port()
    config = write_config(tmp_path / "gateway.toml", f"http://127.0.0.1:{mlflow_port}", tmp_path / "spool",
                          tmp_path / "cache")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"MLFLOW_PORT={mlflow_port}", f"GATEWAY_PORT={gateway_port}",
         f"GRPC_PORT={grpc_port}",
         f"VAR_DIR={tmp_path / 'var'}", f"CONFIG={config}", "MLFLOW_WORKERS=1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{gateway_port}"
    head = ""
    try:
        wait_http(url + "/readyz", 300, proc)
        r = httpx.post(url + "/predict", content="sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
        assert r.status_code == 200 and r.json()["prediction"] == "Setosa", r.text
        assert r.headers["x-request-id"]  # always there, sent or not
        import tritonclient.grpc as triton  # make run serves the Open Inference Protocol over gRPC too

        grpc_client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert grpc_client.is_server_ready() and grpc_client.is_model_ready("IrisClassifier")
        grpc_client.close()
        for _ in range(30):
            httpx.post(url + "/predict", json={"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.9,
                                               "petal_width": 1.6}, timeout=30).raise_for_status()
        # The README's next command, in the environment make run printed for it.
        head, printed = _read_until(proc, "export MLFLOW_TRACKING_URI=")
        env = dict(os.environ, **dict(kv.split("=", 1) for kv in printed.split("export ", 1)[1].split()))
        assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"
        assert env["GATEWAY_SPOOL__DIR"] == str(tmp_path / "var" / "spool")
        compare = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "experiments.compare", "--wait", "120",
                                  "--json", "--no-log", "--config", str(config)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=300)
        assert compare.returncode == 0, compare.stderr[-2000:]
        assert '"n_records": 31' in compare.stdout and "partial" not in compare.stderr
        var = tmp_path / "var"
        assert (var / "spool" / "predictions.sqlite3").exists() and (var / "model-cache").exists()
        assert not (tmp_path / "spool").exists(), "VAR_DIR holds the spool, not the config's own place"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        out = proc.communicate(timeout=180)[0].decode(errors="replace")
    # make passes the interrupt on to itself once its recipe is done (as an interrupted program does);
    # the recipe itself ends with 0, so make reports no error
    assert proc.returncode in (0, -signal.SIGINT), out[-3000:]
    assert not re.search(r"^make: \*\*\*", out, re.M), out[-3000:]  # e.g. "make: *** [Makefile:40: run] Error 130"
    out = head + out
    assert "stopped the gateway and the MLflow server it started" in out
    assert "Downloading artifacts" not in out and "it/s]" not in out  # no progress bar in a log
    assert "is used only with" not in out  # the shipped [shadow] section restates defaults: no notice
    assert "setsid" not in out and "trap " not in out  # the recipe is not echoed


def _read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float = 60) -> tuple[str, str]:
    """make's output up to the line holding ``marker``: (everything read, that line)."""
    import time

    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        seen += line
        if marker in line:
            return seen, line.strip()
    raise AssertionError(f"make run never printed {marker!r}:\n{seen[-3000:]}")
