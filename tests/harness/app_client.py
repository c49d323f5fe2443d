"""The in-process app with local model files and no MLflow (FastAPI's TestClient), for the HTTP tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from gateway.config.settings import load_settings
from gateway.http.app import create_app
from stack.iris import IRIS_MODEL
from stack.processes import FEEDBACK_AUTH, FEEDBACK_TOKEN

__all__ = ["AUTH", "FEEDBACK_AUTH", "FEEDBACK_TOKEN", "TOKEN", "make_client", "wait_ready"]

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_client(tmp_path: Path, local_models: dict[str, str], **sections: Any) -> TestClient:
    variants = sections.pop("variants", None) or [
        {"name": "v1.0", "model_uri": local_models["v1.0"], "weight": 0.5},
        {"name": "v2.0", "model_uri": local_models["v2.0"], "weight": 0.5},
    ]
    spool = {"dir": tmp_path / "spool", "export": False, **sections.pop("spool", {})}
    sections.setdefault("model", IRIS_MODEL)
    settings = load_settings(None, variants=variants, spool=spool,
                             mlflow={"tracking_uri": "http://127.0.0.1:9", "model_cache_dir": tmp_path / "cache"},
                             **sections)
    client = TestClient(create_app(settings))
    return client


def wait_ready(c: TestClient) -> None:
    for _ in range(200):
        if c.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(c.get("/readyz").json())
