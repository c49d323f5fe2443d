"""docker-compose.yml cannot run here (no Docker engine); check its wiring by parsing it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_ports_and_dependencies() -> None:
    services = _compose()["services"]
    assert {"mlflow", "trainer", "api"} <= set(services)
    assert "5001:5000" in services["mlflow"]["ports"] and "8000:8000" in services["api"]["ports"]
    assert services["api"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["trainer"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    deps = services["api"]["depends_on"]
    assert deps["mlflow"]["condition"] == "service_healthy"
    assert deps["trainer"]["condition"] == "service_completed_successfully"
    for name in ("mlflow", "api"):
        assert "healthcheck" in services[name] and services[name]["restart"] == "unless-stopped"


def test_commands_are_the_ones_that_run_natively() -> None:
    services = _compose()["services"]
    assert services["api"]["command"][:3] == ["python", "-m", "gateway"]
    assert services["trainer"]["command"] == ["python", "-m", "models.train"]
    assert "mlflow server" in services["mlflow"]["command"]
    assert "--artifacts-destination" in services["mlflow"]["command"]


def test_dockerfile_is_pinned_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = next(line for line in text.splitlines() if line.startswith("FROM "))
    assert ":" in base and "latest" not in base and base.count(".") >= 2
    assert "USER app" in text and "requirements.lock" in text
