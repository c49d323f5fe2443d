"""docs/own-models.md's walkthrough, run as a new user would paste it: every command between its
markers, unchanged, from the repository's root. A model the project has never seen (digits, 64
columns, ten classes) is trained, registered, served and compared, and the report's verdict says
the stronger version is better."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from stack.processes import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.long]

DOC = ROOT / "docs" / "own-models.md"
PORTS = (5001, 8000)  # the walkthrough's own: it names them, as make run does


def walkthrough_commands() -> str:
    text = DOC.read_text()
    section = re.search(r"<!-- walkthrough:start -->(.*?)<!-- walkthrough:end -->", text, re.S)
    assert section, "docs/own-models.md lost its walkthrough markers"
    blocks = re.findall(r"```bash\n(.*?)```", section.group(1), re.S)
    assert len(blocks) >= 3, blocks
    return "\n".join(blocks)


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_own_model_walkthrough_runs_unchanged_and_ends_in_a_verdict() -> None:
    taken = [p for p in PORTS if port_taken(p)]
    assert not taken, f"ports {taken} are in use (a make run?); the walkthrough needs them"
    shutil.rmtree(ROOT / "var" / "digits", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("GATEWAY_")}
    # -e: a command that fails stops the walkthrough here, as it would stop a reader
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", walkthrough_commands()], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = proc.communicate(timeout=900)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # anything the script left behind
    logs = "\n".join(p.read_text()[-2000:] for p in (ROOT / "var" / "digits").glob("*.log"))
    assert proc.returncode == 0, out[-4000:] + logs
    assert re.search(r"DigitsClassifier version 1: GaussianNB", out), out[-4000:]
    assert re.search(r"DigitsClassifier version 2: RandomForestClassifier", out), out[-4000:]
    # the traffic tool sent labels, and the report turned them into a verdict for the stronger model
    # The forest is more accurate and several times slower than naive Bayes: a trade-off, named as one
    # (or, should the forest's p95 stay within 1.5x on some machine, a promotion).
    assert re.search(r"^\s*v2\.0: (trade-off: \+\d+\.\d points, [\d.]+x slower at p95|promote: more accurate)",
                     out, re.M), out[-4000:]
    assert (ROOT / "var" / "digits" / "report.html").stat().st_size > 10_000
    # the summary runs went to the digits experiment's own side experiment, not to iris-ab-comparison
    assert "summary runs logged to experiment 'digits-ab-comparison'" in out, out[-4000:]
