"""The in-process app with local model files and no MLflow, shared by the HTTP tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.http.app import create_app
from gateway.settings import load_settings

SEED_FORM = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
FEATURES = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The shipped config's [model] section: class names and the (0, 100] bounds of every measurement.
IRIS_MODEL = {"class_names": ["Setosa", "Versicolor", "Virginica"],
              "bounds": {name: {"gt": 0, "le": 100} for name in FEATURES}}


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


@pytest.fixture
def client(tmp_path: Path, local_models: dict[str, str]) -> Iterator[TestClient]:
    with make_client(tmp_path, local_models) as c:
        _wait_ready(c)
        yield c


def _wait_ready(c: TestClient) -> None:
    for _ in range(200):
        if c.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(c.get("/readyz").json())




@pytest.fixture
def admin_client(tmp_path: Path, local_models: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", TOKEN)
    with make_client(tmp_path, local_models) as c:
        _wait_ready(c)
        yield c
