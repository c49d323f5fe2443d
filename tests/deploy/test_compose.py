"""docker-compose.yml cannot run here (no Docker engine); check its wiring by parsing it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_ports_and_dependencies() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "mlflow", "trainer", "api", "prometheus", "grafana"} <= set(services)
    assert "5001:5000" in services["mlflow"]["ports"] and "8000:8000" in services["api"]["ports"]
    assert "8001:8001" in services["api"]["ports"] and services["api"]["environment"]["GATEWAY_GRPC__PORT"] == "8001"
    assert "9090:9090" in services["prometheus"]["ports"] and "3000:3000" in services["grafana"]["ports"]
    assert "postgresql://" in services["mlflow"]["command"]
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert {"postgres_data", "mlflow_artifacts", "gateway_spool", "prometheus_data", "grafana_data"} <= set(
        compose["volumes"])
    for name, svc in services.items():
        if name != "trainer":
            assert (svc["restart"] == "unless-stopped" and "healthcheck" in svc) or name == "grafana", name
        image = svc.get("image", "")
        assert image and ":" in image and "latest" not in image, name
    assert services["api"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert services["trainer"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    deps = services["api"]["depends_on"]
    assert deps["mlflow"]["condition"] == "service_healthy"
    assert deps["trainer"]["condition"] == "service_completed_successfully"


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


def test_dashboard_queries_only_metrics_the_gateway_exports() -> None:
    import json
    import re

    from gateway.serving.metrics import GatewayMetrics

    dash = json.loads((ROOT / "config" / "grafana" / "dashboards" / "iris-ab-gateway.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(gateway_[a-z_]+)", e)}
    from tests.harness.records import rec

    rollout = {"rollout_id": "r1", "candidate": "v2.0", "control": "v1.0", "state": "running", "step": 1,
               "candidate_weight": 0.05, "history": [{"decision": "start"}],
               "guardrails": {"accuracy": {"enabled": True, "p_value": 0.5, "estimate": 0.01, "breached": False}}}
    metrics = GatewayMetrics(lambda: {}, lambda: [], rollout=lambda: rollout)
    metrics.on_response("v1.0", "weighted", 200)  # labelled series appear once used
    metrics.on_records([rec(1)])
    metrics.on_records([rec(1, role="shadow", version="v2.0")], primaries=["Setosa"])
    from gateway.serving.metrics import BanditCollector

    metrics.registry.register(BanditCollector(lambda: {"arms": {"v1.0": {"weight": 0.6, "posterior_mean": 0.9,
                                                                          "labelled": 120}}}))
    exported = metrics.render().decode()
    names = set(re.findall(r"^(gateway_[a-z_]+)", exported, re.M))
    assert used and used <= names, used - names
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for word in ("requests/s", "p99", "class", "shadow agreement", "export lag", "rollout", "guardrails"):
        assert word in titles


def test_prometheus_scrapes_the_gateway() -> None:
    conf = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    (job,) = conf["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["api:8000"]
