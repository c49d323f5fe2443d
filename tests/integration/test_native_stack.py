"""docker-compose's topology, run natively: PostgreSQL as MLflow's backend store, `mlflow server`,
the trainer, the gateway, and a real Prometheus (Debian's package) scraping the gateway."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from experiments.traffic import run_traffic
from stack.processes import (
    ROOT,
    GatewayProcess,
    MlflowServer,
    free_port,
    train_models,
    wait_http,
    write_config,
)
from tests.harness.delivery import runs_by_request, wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.long]
PG = "postgresql://postgres@127.0.0.1:5432"


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                    "-c", sql], check=True, capture_output=True)


@pytest.fixture
def postgres_db():  # type: ignore[no-untyped-def]
    if shutil.which("psql") is None:
        pytest.fail("psql is missing; PostgreSQL runs on 127.0.0.1:5432 on these machines")
    name = f"mlflow_{uuid.uuid4().hex[:8]}"
    _psql(f"CREATE DATABASE {name}")
    yield f"{PG}/{name}"
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_postgres_mlflow_gateway_and_prometheus(tmp_path: Path, postgres_db: str) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is missing; `make system-deps` installs Debian's package")
    with MlflowServer(tmp_path / "mlflow", backend_uri=postgres_db, workers=2) as server:
        train_models(server.url)
        config = write_config(tmp_path / "gateway.toml", server.url, tmp_path / "spool", tmp_path / "cache",
                              routing={"mode": "weighted"}, variants=[
                                  {"name": "v1.0", "model_uri": "models:/IrisClassifier@champion", "weight": 0.7},
                                  {"name": "v2.0", "model_uri": "models:/IrisClassifier@challenger", "weight": 0.3}])
        with GatewayProcess(config=config, workdir=tmp_path / "gw") as gw:
            port = free_port()
            (tmp_path / "prometheus.yml").write_text(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: iris-gateway\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{gw.port}']\n")
            prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_http(f"http://127.0.0.1:{port}/-/ready", 60, prom)
                result = asyncio.run(run_traffic(gw.url, 600, concurrency=4, progress=False, seed=5))
                assert result.ok == 600
                stats = wait_drained(gw, timeout=180)
                series: dict[str, float] = {}
                query = 'sum by (variant) (gateway_requests_total{status="200"})'
                for _ in range(60):
                    data = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}).json()
                    series = {r["metric"]["variant"]: float(r["value"][1]) for r in data["data"]["result"]}
                    if sum(series.values()) >= 600:
                        break
                    time.sleep(1)
                print("Prometheus:", query, "->", series)
                assert series == {v: float(n) for v, n in result.versions.items()}
                lag = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                                params={"query": "gateway_export_lag_seconds"}).json()["data"]["result"]
                assert lag and float(lag[0]["value"][1]) >= 0
                # Every Grafana panel query is valid PromQL and finds data in this Prometheus.
                dash = json.loads((ROOT / "config" / "grafana" / "dashboards" / "iris-ab-gateway.json").read_text())
                for panel in dash["panels"]:
                    for target in panel["targets"]:
                        answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                                           params={"query": target["expr"]}).json()
                        assert answer["status"] == "success", (panel["title"], answer)
                        expect_data = not any(w in target["expr"] for w in ("shadow", "failed", 'status!="200"',
                                                                            "gateway_rollout", "gateway_bandit"))
                        if expect_data:  # no shadow traffic, no errors, no rollout and no bandit here
                            assert answer["data"]["result"], (panel["title"], target["expr"])
                info = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                                 params={"query": "gateway_variant_info"}).json()["data"]["result"]
                assert {(r["metric"]["variant"], r["metric"]["registry_version"]) for r in info} == {
                    ("v1.0", "1"), ("v2.0", "2")}
            finally:
                prom.terminate()
                prom.wait(30)
        runs = runs_by_request(server.url)
        assert len(runs) == 600 and all(len(v) == 1 for v in runs.values())
        assert stats["spool"]["total_exported"] == 600
