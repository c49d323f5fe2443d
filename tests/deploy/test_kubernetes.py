"""deploy/kubernetes: every manifest valid against the Kubernetes schemas (offline, strict: an unknown
field fails), and the manifests agree with the code: images, ports, probes, environment, grace periods,
the config file the pods mount, and what Prometheus scrapes."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from gateway.__main__ import GRACEFUL_SHUTDOWN_SECONDS
from gateway.config.settings import load_settings
from gateway.http.admin import TOKEN_ENV
from gateway.security.keys import FEEDBACK_TOKEN_ENV, PSEUDONYM_KEY_ENV, RECEIPT_KEY_ENV, secrets_problem
from stack.processes import ROOT

K8S = ROOT / "deploy" / "kubernetes"
VERSION = latest_version()


def _kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


def _generated_config_maps() -> list[dict[str, Any]]:
    """The ConfigMaps kustomize's configMapGenerator makes from files/ (as `kubectl apply -k` would)."""
    maps = []
    for gen in _kustomization()["configMapGenerator"]:
        data = {}
        for entry in gen["files"]:
            key, _, path = entry.partition("=")
            data[key] = (K8S / path).read_text()
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return maps


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for name in _kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs + [("configMapGenerator", cm) for cm in _generated_config_maps()]


def _find(kind: str, name: str) -> dict[str, Any]:
    for _, doc in _documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def _container(kind: str, name: str) -> dict[str, Any]:
    return dict(_find(kind, name)["spec"]["template"]["spec"]["containers"][0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _port(container: dict[str, Any], name: str) -> int:
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == name))


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "kustomization.yaml must list every manifest"
    kinds = []
    for source, doc in _documents():
        try:
            kubernetes_validate.validate(doc, VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{source}: {doc['kind']}/{doc['metadata']['name']}: {exc}") from None
        kinds.append(f"{doc['kind']}/{doc['metadata']['name']}")
    print(f"{len(kinds)} documents valid against the Kubernetes {VERSION} schemas (strict): {', '.join(kinds)}")
    expected = {"StatefulSet/gateway", "HorizontalPodAutoscaler/gateway", "Deployment/rollout-controller",
                "Deployment/mlflow", "StatefulSet/postgres", "StatefulSet/minio", "Deployment/prometheus",
                "Deployment/grafana", "ConfigMap/grafana-dashboards", "ConfigMap/gateway-config",
                "CronJob/table-maintenance"}
    assert expected <= set(kinds)


def test_the_validation_catches_a_mistake() -> None:
    gateway = _find("StatefulSet", "gateway")
    wrong = {**gateway, "spec": {**gateway["spec"], "replica": 3}}  # a typo of replicas
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, VERSION, strict=True)
    container = _container("StatefulSet", "gateway")
    bad_probe = {**container, "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                                                 "periodSeconds": "often"}}
    spec = gateway["spec"]["template"]["spec"]
    wrong = {**gateway, "spec": {**gateway["spec"], "template": {
        **gateway["spec"]["template"], "spec": {**spec, "containers": [bad_probe]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, VERSION, strict=True)


def test_images_are_the_projects_image() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    image_name, _, tag = compose["x-app-image"].partition(":")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert tag == version
    pinned = {i["name"]: i["newTag"] for i in _kustomization()["images"]}
    assert pinned == {image_name: tag}
    ours = [(kind, name) for kind, name in (("StatefulSet", "gateway"), ("Deployment", "rollout-controller"),
                                            ("Deployment", "mlflow"), ("Job", "trainer"))]
    for kind, name in ours:
        assert _container(kind, name)["image"] == image_name, f"{kind}/{name}"
    for _, doc in _documents():  # third-party images are pinned to a release
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            if c["image"] != image_name:
                assert re.search(r":[\w.-]*\d", c["image"]), f"{c['image']} is not pinned"


def _app_routes() -> set[str]:
    from gateway.http.app import create_app

    app = create_app(load_settings(K8S / "files" / "gateway.toml"))
    return {path for path, ops in app.openapi()["paths"].items() if "get" in ops}


def test_the_gateway_pods_ports_probes_and_environment_agree_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _container("StatefulSet", "gateway")
    port = _port(c, "http")
    assert int(_arg(c["command"], "--port")) == port
    assert c["command"][:3] == ["python", "-m", "gateway"]
    assert f"EXPOSE {port}" in (ROOT / "Dockerfile").read_text()
    for service in ("gateway", "gateway-headless"):
        ports = _find("Service", service)["spec"]["ports"]
        assert ports[0]["targetPort"] == "http" and ports[0]["port"] == port
    assert _find("Service", "gateway-headless")["spec"]["clusterIP"] == "None"
    assert _find("StatefulSet", "gateway")["spec"]["serviceName"] == "gateway-headless"
    routes = _app_routes()
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] in routes, probe
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # The environment reaches the settings it names.
    env = _env(c)
    assert TOKEN_ENV in env
    for name, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    settings = load_settings(_arg(c["command"], "--config").replace("/etc/gateway", str(K8S / "files")))
    assert str(settings.spool.dir) == env["GATEWAY_SPOOL__DIR"]
    assert str(settings.mlflow.model_cache_dir) == env["GATEWAY_MLFLOW__MODEL_CACHE_DIR"]
    assert settings.mlflow.tracking_uri == env["MLFLOW_TRACKING_URI"]
    # The keys the replicas must share, the feedback token and the routing salt come from the Secret:
    # without the keys, start-up stops (gateway/security/keys.py).
    secret = _find("Secret", "iris-ab-credentials")["stringData"]
    for name in (FEEDBACK_TOKEN_ENV, RECEIPT_KEY_ENV, PSEUDONYM_KEY_ENV, "GATEWAY_ROUTING__SALT"):
        assert env[name] == {"secretKeyRef": {"name": "iris-ab-credentials", "key": name}}, name
        monkeypatch.setenv(name, secret[name])
    assert secrets_problem(settings.state.backend == "mlflow", settings.feedback.receipts) is None
    # The gRPC port: served by the config, named in the pod and the Service, probed through gRPC's health.
    grpc_port = _port(c, "grpc")
    assert settings.grpc.port == grpc_port and settings.grpc.host == "0.0.0.0"
    assert c["livenessProbe"]["grpc"] == {"port": grpc_port}  # the health service's overall status
    grpc_service = [p for p in _find("Service", "gateway")["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_service == [{"name": "grpc", "port": grpc_port, "targetPort": "grpc",
                             "appProtocol": "kubernetes.io/h2c"}]
    assert load_settings(K8S / "files" / "gateway.toml").routing.salt == secret["GATEWAY_ROUTING__SALT"]
    # The spool is on the pod's own volume.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claims = [t["metadata"]["name"] for t in _find("StatefulSet", "gateway")["spec"]["volumeClaimTemplates"]]
    assert "spool" in claims and env["GATEWAY_SPOOL__DIR"].startswith(mounts["spool"] + "/")
    assert mounts["config"] == str(Path(_arg(c["command"], "--config")).parent)
    # The drain fits in the grace period: preStop, then requests in flight, then the spool's grace.
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = _find("StatefulSet", "gateway")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    needed = pre_stop + GRACEFUL_SHUTDOWN_SECONDS + settings.spool.shutdown_grace_seconds
    assert needed < grace, f"preStop {pre_stop} + {GRACEFUL_SHUTDOWN_SECONDS} + spool {needed} s > {grace} s"
    assert pre_stop >= 2 * c["readinessProbe"]["periodSeconds"]
    # The HPA scales this StatefulSet on CPU, which the container requests.
    hpa = _find("HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "gateway"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu" and c["resources"]["requests"]["cpu"]


def test_the_pods_config_shares_state_in_mlflow_and_matches_the_services() -> None:
    settings = load_settings(K8S / "files" / "gateway.toml")
    assert settings.state.backend == "mlflow"
    local = load_settings(ROOT / "config" / "gateway.toml")
    assert [(v.name, v.model_uri) for v in settings.variants] == [(v.name, v.model_uri) for v in local.variants]
    mlflow = _container("Deployment", "mlflow")
    assert settings.mlflow.tracking_uri == f"http://mlflow:{_arg(mlflow['command'], '--port')}"
    assert _find("Service", "mlflow")["spec"]["ports"][0]["port"] == int(_arg(mlflow["command"], "--port"))
    assert _arg(mlflow["command"], "--artifacts-destination").startswith("s3://")
    assert "MLFLOW_S3_ENDPOINT_URL" in _env(mlflow)
    assert importlib.util.find_spec("boto3") is not None, "the MLflow server's S3 store needs boto3 in the image"
    assert "postgresql://" in _arg(mlflow["command"], "--backend-store-uri")
    # The controller: the module exists, its metrics port and Prometheus address agree.
    controller = _container("Deployment", "rollout-controller")
    assert controller["command"][:3] == ["python", "-m", "gateway.rollout"]
    assert importlib.util.find_spec("gateway.rollout.__main__") is not None
    assert _port(controller, "metrics") == settings.controller.metrics_port
    prometheus_port = _find("Service", "prometheus")["spec"]["ports"][0]["port"]
    assert settings.controller.prometheus_url == f"http://prometheus:{prometheus_port}"
    assert _env(controller)["GATEWAY_CONTROLLER__PROMETHEUS_URL"] == settings.controller.prometheus_url
    assert _find("Deployment", "rollout-controller")["spec"]["replicas"] == 1


def test_the_inference_table_lives_in_minio_and_is_maintained_hourly_one_run_at_a_time() -> None:
    settings = load_settings(K8S / "files" / "gateway.toml")
    assert settings.table.enabled and settings.mlflow.granularity == "window"
    bucket = settings.table.uri.removeprefix("s3://").split("/")[0]
    assert settings.table.uri.startswith("s3://") and bucket
    minio_port = _find("Service", "minio")["spec"]["ports"][0]["port"]
    assert settings.table.storage_options["AWS_ENDPOINT_URL"] == f"http://minio:{minio_port}"
    assert settings.table.storage_options["AWS_ALLOW_HTTP"] == "true"  # MinIO in the cluster speaks plain HTTP
    job = _container("Job", "minio-bucket")
    assert f"store/{bucket}" in " ".join(job["args"]), "the bucket job must make the table's bucket"
    cron = _find("CronJob", "table-maintenance")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    maintenance = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert maintenance["command"][:3] == ["python", "-m", "gateway.delta"]
    assert importlib.util.find_spec("gateway.delta.__main__") is not None
    assert load_settings(_arg(maintenance["command"], "--config").replace("/etc/gateway", str(K8S / "files"))).table \
        == settings.table
    for container in (_container("StatefulSet", "gateway"), maintenance):
        env = _env(container)
        assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "iris-ab-credentials", "key": "MINIO_ROOT_USER"}}
        assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "iris-ab-credentials",
                                                                 "key": "MINIO_ROOT_PASSWORD"}}


def test_prometheus_scrapes_every_gateway_pod_and_the_controller() -> None:
    config = yaml.safe_load((K8S / "files" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    namespace = _kustomization()["namespace"]
    dns = jobs["iris-gateway"]["dns_sd_configs"][0]
    assert dns["names"] == [f"gateway-headless.{namespace}.svc.cluster.local"]
    assert dns["port"] == _port(_container("StatefulSet", "gateway"), "http")
    settings = load_settings(K8S / "files" / "gateway.toml")
    assert jobs["rollout-controller"]["static_configs"][0]["targets"] == [
        f"rollout-controller:{settings.controller.metrics_port}"]
    prom = _container("Deployment", "prometheus")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["args"]


def test_grafana_gets_the_projects_dashboard() -> None:
    copy = (K8S / "files" / "iris-ab-gateway.json").read_text()
    assert copy == (ROOT / "config" / "grafana" / "dashboards" / "iris-ab-gateway.json").read_text(), \
        "copy config/grafana/dashboards/iris-ab-gateway.json to deploy/kubernetes/files/"
    provisioning = _find("ConfigMap", "grafana-provisioning")["data"]
    path = yaml.safe_load(provisioning["dashboards.yml"])["providers"][0]["options"]["path"]
    mounts = {m["name"]: m["mountPath"] for m in _container("Deployment", "grafana")["volumeMounts"]}
    assert mounts["dashboards"] == path
    assert "http://prometheus:9090" in provisioning["datasources.yml"]
