"""A model's files: its MLmodel metadata, the model loaded by its own flavour, and a registry
version's artifacts downloaded to a local directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_info(path: Path) -> Any:
    """The MLmodel file of the model in ``path`` (signature, flavours, metadata)."""
    from mlflow.models import Model

    return Model.load(str(path / "MLmodel"))


def load(path: Path, info: Any) -> tuple[Any, str]:
    """(the model, its flavour): scikit-learn's own object where the model has that flavour (its
    ``predict_proba`` is there), else MLflow's pyfunc wrapper."""
    if "sklearn" in info.flavors:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(path)), "sklearn"
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(path)), "pyfunc"


def download(tracking_uri: str, artifact_uri: str, destination: Path) -> str:
    """Download ``artifact_uri`` (a models:/ or runs:/ URI) from the tracking server; the local path."""
    import mlflow
    import mlflow.artifacts

    # models:/ URIs are resolved through the process-wide registry URI, which would otherwise default
    # to a local ./mlflow.db.
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    return str(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination),
                                                   tracking_uri=tracking_uri))
