"""The tracking server: a client for it, its health check, an experiment by name, the registry's
aliases. MLflow itself is imported when first used (it takes about a second), not by importing this."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.domain.contract import is_http_uri


def tracking_client(tracking_uri: str) -> Any:
    """MLflow's client for one server, its registry included."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def mlflow_version() -> str:
    import mlflow

    return str(mlflow.__version__)


def check_tracking_server(tracking_uri: str, timeout: float = 3.0) -> str | None:
    """Return None when the server answers its health check, else a short reason."""
    if not is_http_uri(tracking_uri):
        return None
    try:
        resp = httpx.get(tracking_uri.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if resp.status_code != 200:
        return f"HTTP {resp.status_code} from /health"
    return None


def get_or_create_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, created if missing (another process may win the race)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def set_alias(tracking_uri: str, model: str, alias: str, version: str) -> None:
    """Point a registered model's alias at one of its versions (raises on any failure)."""
    tracking_client(tracking_uri).set_registered_model_alias(model, alias, version)
