"""A tracking URI with credentials in it (``http://alice:hunter2@host``) never shows them: not in any
endpoint's answer, and not in any log line (the gateway's, the exporter's, httpx's request lines,
uvicorn's), with MLflow down so that every error path that names the server is taken."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from stack.iris import FEATURES
from stack.processes import FEEDBACK_AUTH, GatewayProcess, free_port, local_models_config, write_config

pytestmark = pytest.mark.integration

SECRET = "hunter2"


def _server() -> tuple[str, str]:
    """(the tracking URI with credentials, the address the logs may show); nothing listens there."""
    address = f"127.0.0.1:{free_port()}"
    return f"http://alice:{SECRET}@{address}", f"http://{address}"


def test_no_endpoint_and_no_log_line_shows_the_tracking_uris_password(tmp_path: Path,
                                                                       local_models: dict[str, str]) -> None:
    uri, shown = _server()
    config = local_models_config(tmp_path, local_models, tracking_uri=uri, state={"backend": "local"},
                                 mlflow={"export_workers": 1}, spool={"export": True})
    gw = GatewayProcess(config=config, workdir=tmp_path / "gw", env={"GATEWAY_ADMIN_TOKEN": "tok"}).start()
    bodies: dict[str, str] = {}
    try:
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            answered = http.post("/predict", json=FEATURES).json()
            http.post("/feedback", json={"request_id": answered["request_id"], "true_label": "Setosa"},
                      headers=FEEDBACK_AUTH)
            http.post("/invocations", json={"dataframe_split": {"columns": list(FEATURES),
                                                                "data": [list(FEATURES.values())]}})
            deadline = time.monotonic() + 60  # until the exporter has failed against the dead server
            while time.monotonic() < deadline:
                stats = http.get("/stats").json()
                if (stats["exporter"] or {}).get("last_error"):
                    break
                time.sleep(0.5)
            assert stats["exporter"]["last_error"], stats
            for path in ("/stats", "/readyz", "/variants", "/metrics", "/healthz", "/docs", "/openapi.json",
                         "/v2", "/v2/models/IrisClassifier", "/ping", "/version"):
                bodies[path] = http.get(path).text
            bodies["promote"] = http.post("/admin/promote", json={"variant": "v2.0"},
                                          headers={"Authorization": "Bearer tok"}).text
            bodies["bad predict"] = http.post("/predict", json={"sepal_length": "x"}).text
        assert gw.proc is not None
        bodies.update(_command_lines(gw.proc.pid))  # `ps` shows them to every user of the machine
        assert any("gateway.export" in line for line in bodies.values())  # the exporter child is among them
    finally:
        gw.stop()
    leaks = {path: body[:300] for path, body in bodies.items() if SECRET in body}
    assert leaks == {}
    log = gw.log_text()
    assert shown in log  # the lines that used to carry the password are there, without it
    assert [line for line in log.splitlines() if SECRET in line] == []


def _command_lines(group: int) -> dict[str, str]:
    out = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == group:
                out[f"cmdline of {proc.name}"] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ProcessLookupError):
            continue
    return out


def test_the_start_up_error_does_not_show_it_either(tmp_path: Path) -> None:
    uri, shown = _server()
    config = write_config(tmp_path / "gateway.toml", uri, tmp_path / "spool", tmp_path / "cache")
    gw = GatewayProcess(config=config, workdir=tmp_path / "gw")
    gw.start(wait_ready=False)
    assert gw.proc is not None
    code = gw.proc.wait(timeout=120)
    gw.stop()
    log = gw.log_text()
    assert code != 0 and shown in log
    assert [line for line in log.splitlines() if SECRET in line] == []
