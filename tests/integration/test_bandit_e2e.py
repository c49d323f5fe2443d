"""Bandit mode end to end: a real MLflow server and gateway, three registered versions (one a constant
classifier), true labels sent back through /feedback. The bandit starves the constant version down to
its floor, every row in MLflow carries its assignment probability, and the report's inverse-propensity
accuracy of each version matches its offline accuracy on the same rows."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest

from stack.processes import FEEDBACK_AUTH, ROOT, MlflowServer, register_constant_model
from tests.harness.delivery import wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.long]
CLASSES = ["Setosa", "Versicolor", "Virginica"]
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MIN_SHARE = 0.15
N = 4000


def _offline_accuracy(tracking_uri: str, uri: str, rows: np.ndarray, truth: np.ndarray) -> float:
    import mlflow.sklearn
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.sklearn.load_model(uri)
    predicted = model.predict(pd.DataFrame(rows, columns=NAMES))
    return float(np.mean(np.asarray(predicted).astype(int) == truth))


def test_a_bandit_starves_the_constant_version_and_ipw_matches_offline_accuracy(
        mlflow_server: MlflowServer, start_gateway: Any) -> None:
    from sklearn.datasets import load_iris

    from experiments.report.build import build_report

    const = register_constant_model(mlflow_server.url)
    experiment = f"bandit-{time.monotonic_ns()}"
    variants = [{"name": "v1.0", "model_uri": "models:/IrisClassifier/1"},
                {"name": "v2.0", "model_uri": "models:/IrisClassifier/2"},
                {"name": "const", "model_uri": const}]
    gw = start_gateway(name="bandit", mlflow={"tracking_uri": mlflow_server.url, "experiment": experiment,
                                              "granularity": "window", "window_seconds": 1.0},
                       routing={"mode": "bandit"}, variants=variants, model={"class_names": CLASSES},
                       bandit={"update_seconds": 0.5, "burn_in": 40, "min_share": MIN_SHARE, "draws": 2000})
    iris = load_iris()
    rng = np.random.default_rng(7)
    order = np.concatenate([rng.permutation(150) for _ in range(N // 150 + 1)])[:N]
    rows, truth = iris.data[order], iris.target[order]
    assigned = []
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        for i in range(N):
            r = http.post("/predict", json=dict(zip(NAMES, map(float, rows[i]), strict=True)))
            assert r.status_code == 200, r.text
            assigned.append(r.json()["model_version"])
            assert http.post("/feedback", json={"request_id": r.json()["request_id"],
                                                "true_label": CLASSES[int(truth[i])]},
                             headers=FEEDBACK_AUTH).status_code == 202
        bandit = http.get("/bandit").json()
        metrics = http.get("/metrics").text
    assert bandit["phase"] == "thompson" and bandit["mode"] == "bandit"
    assert bandit["arms"]["const"]["weight"] == pytest.approx(MIN_SHARE, abs=0.001)
    assert bandit["arms"]["const"]["labelled"] >= 40
    assert 'gateway_bandit_weight{variant="const"} 0.15' in metrics
    last = np.asarray(assigned[-1000:])
    assert (last == "const").mean() <= MIN_SHARE + 0.05

    wait_drained(gw, timeout=120, labels=True)
    report, records = build_report(experiment, mlflow_server.url)
    primary = records[records["role"] == "primary"]
    assert len(primary) == N and primary["assignment_probability"].notna().all()
    assert (primary["assignment_probability"] > 0).all() and (primary["assignment_probability"] <= 1).all()
    assert primary["weights_version"].nunique() >= 2  # equal weights, then at least one reweighting
    section = report["bandit"]
    assert section is not None and section["reward"] == "correct"
    for v in variants:
        offline = _offline_accuracy(mlflow_server.url, v["model_uri"], rows, truth)
        est = section["versions"][v["name"]]
        print(f"{v['name']}: ipw {est['ipw_mean']:.3f} [{est['ipw_low']:.3f}, {est['ipw_high']:.3f}], naive "
              f"{est['naive_mean']:.3f}, offline {offline:.3f}, n {est['n']}, share {est['share']:.3f}")
        assert abs(est["ipw_mean"] - offline) <= 0.05, (v["name"], est, offline)
        assert est["labelled"] == est["n"]
    assert section["regret"]["best"] in ("v1.0", "v2.0")
    assert len(section["weights_over_time"]) >= 2

    html_path = gw.workdir / "report.html"
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", experiment, "--tracking-uri",
                           mlflow_server.url, "--html", str(html_path)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    import mlflow

    summary = mlflow.search_runs(experiment_names=[f"{experiment}-comparison"],
                                 filter_string="tags.model_version = 'const'")
    assert summary["metrics.bandit_ipw_mean"].iloc[0] == pytest.approx(section["versions"]["const"]["ipw_mean"])
    assert "bandit (reward correct" in proc.stdout and "regret against always serving" in proc.stdout
    assert "bandit weights over time" in html_path.read_text()


def test_replicas_follow_the_weights_the_controller_reweighs_from_mlflow(
        mlflow_server: MlflowServer, start_gateway: Any, tmp_path: Any) -> None:
    """Two replicas with the routing state in MLflow, labels sent to the replica that did not answer
    (joined in MLflow), and python -m gateway.rollout reweighing for both from the labels in MLflow."""
    from sklearn.datasets import load_iris

    const = register_constant_model(mlflow_server.url)
    experiment = f"bandit-replicas-{time.monotonic_ns()}"
    sections: dict[str, Any] = dict(
        mlflow={"tracking_uri": mlflow_server.url, "experiment": experiment, "granularity": "window",
                "window_seconds": 1.0},
        routing={"mode": "bandit"}, model={"class_names": CLASSES},
        state={"backend": "mlflow", "registered_model": f"state-{time.monotonic_ns()}", "poll_seconds": 0.5},
        controller={"metrics_port": 0, "accuracy_refresh_seconds": 1.0},
        bandit={"update_seconds": 1.0, "burn_in": 30, "min_share": 0.1, "draws": 2000},
        variants=[{"name": "v2.0", "model_uri": "models:/IrisClassifier/2"}, {"name": "const", "model_uri": const}])
    replicas = [start_gateway(name=f"replica-{i}", **sections) for i in range(2)]
    controller_log = open(tmp_path / "controller.log", "wb")  # noqa: SIM115 - closed below
    controller = subprocess.Popen([sys.executable, "-m", "gateway.rollout", "--config",
                                   str(replicas[0].workdir / "gateway.toml")], cwd=ROOT, stdout=controller_log,
                                  stderr=subprocess.STDOUT)
    try:
        iris = load_iris()
        clients = [httpx.Client(base_url=gw.url, timeout=10) for gw in replicas]
        for i in range(400):
            row, truth = iris.data[(i * 7) % 150], CLASSES[int(iris.target[(i * 7) % 150])]
            r = clients[i % 2].post("/predict", json=dict(zip(NAMES, map(float, row), strict=True)))
            assert r.status_code == 200, r.text
            label = clients[(i + 1) % 2].post("/feedback", json={"request_id": r.json()["request_id"],
                                                                 "true_label": truth}, headers=FEEDBACK_AUTH)
            assert label.status_code == 202, label.text
        deadline = time.monotonic() + 120
        weights: list[dict[str, float]] = []
        while time.monotonic() < deadline:
            weights = [c.get("/variants").json()["weights"] for c in clients]
            if all(w["const"] == pytest.approx(0.1) for w in weights):
                break
            assert controller.poll() is None, (tmp_path / "controller.log").read_text()[-3000:]
            time.sleep(0.5)
        assert all(w == {"v2.0": 0.9, "const": 0.1} for w in weights), weights
        bandit = [c.get("/bandit").json() for c in clients]
        assert bandit[0]["weights_version"] == bandit[1]["weights_version"]
        assert not any(b["reweighs_here"] for b in bandit) and "controller" in bandit[0]["rewards_from"]
        answered = [clients[i % 2].post("/predict", json=dict(zip(NAMES, [5.1, 3.5, 1.4, 0.2], strict=True))).json()
                    for i in range(300)]
        assert sum(a["model_version"] == "const" for a in answered) <= 300 * 0.2
        for c in clients:
            c.close()
        import mlflow

        mlflow.set_tracking_uri(mlflow_server.url)
        deadline = time.monotonic() + 60
        while True:  # each reweighting is a run in the routing-changes experiment (sent through the outbox)
            changes = mlflow.search_runs(experiment_names=[f"{experiment}-routing-changes"],
                                         filter_string="tags.source = 'bandit' and tags.bandit_phase = 'thompson'")
            if len(changes) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(changes) >= 1 and changes["metrics.weight_const"].min() == pytest.approx(0.1)
        assert changes["metrics.labelled_const"].min() >= 30
    finally:
        controller.terminate()
        controller.wait(timeout=30)
        controller_log.close()
