from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.processes import GatewayProcess, MlflowServer, train_models, write_config

os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked ``long`` first (a stable sort: each module stays whole, the rest in their order).
    The integration step hands whole modules to its two workers in this order, and a long one handed
    out last would run alone at the end while the other worker idles."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI; keep one test's server out of the next
    test's subprocesses, where the variable would (by design) override their config."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def local_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Both candidate estimators saved as local MLflow models, with the signature and class names that
    models.train logs: {label: file path}."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris

    from models.train import CANDIDATES, CLASSES, FEATURES, pip_requirements

    x, y = load_iris(return_X_y=True)
    root = tmp_path_factory.mktemp("local-models")
    out = {}
    for cand in CANDIDATES:
        model = cand.build().fit(x, y)
        path = root / cand.label
        example = pd.DataFrame(x[:3], columns=FEATURES)
        mlflow.sklearn.save_model(model, str(path), serialization_format="cloudpickle",
                                  signature=infer_signature(example, model.predict(x[:3])),
                                  metadata={"class_names": CLASSES}, pip_requirements=pip_requirements())
        out[cand.label] = str(path)
    return out


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` (SQLite in a temp dir) with IrisClassifier versions 1 and 2 registered."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), workers=2).start()
    try:
        train_models(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def session_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the gateways of the session's MLflow: its registry versions never change,
    so each is downloaded once, not once per test."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def start_gateway(tmp_path: Path, mlflow_server: MlflowServer,
                  session_model_cache: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateway processes against the session's MLflow; each gets its own spool unless told."""
    started: list[GatewayProcess] = []

    def start(*, tracking_uri: str | None = None, spool_dir: Path | None = None, wait_ready: bool = True,
              env: dict[str, str] | None = None, name: str = "gw", args: list[str] | None = None,
              **sections: Any) -> GatewayProcess:
        workdir = tmp_path / name
        config = write_config(workdir / "gateway.toml", tracking_uri or mlflow_server.url,
                              spool_dir or workdir / "spool",
                              session_model_cache if tracking_uri is None else tmp_path / "model-cache", **sections)
        gw = GatewayProcess(config=config, workdir=workdir, env=env or {}, args=args or [])
        started.append(gw)
        return gw.start(wait_ready=wait_ready)

    yield start
    for gw in started:
        gw.stop()
