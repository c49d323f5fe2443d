"""End to end over HTTP: a real `mlflow server`, models trained by `models.train`, a gateway process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from experiments.traffic import run_traffic
from stack.processes import FEEDBACK_AUTH, ROOT, GatewayProcess, MlflowServer, descendants, free_port, write_config
from tests.harness.delivery import FEATURES, runs_by_request, wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.long]

SEED_FORM = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"


def test_models_registered_with_labels_and_aliases(mlflow_server: MlflowServer) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    v1 = client.get_model_version("IrisClassifier", "1")
    v2 = client.get_model_version("IrisClassifier", "2")
    assert v1.tags["model_version"] == "v1.0" and v2.tags["model_version"] == "v2.0"
    assert client.get_model_version_by_alias("IrisClassifier", "champion").version == "1"
    assert client.get_model_version_by_alias("IrisClassifier", "challenger").version == "2"
    runs = client.search_runs([client.get_experiment_by_name("iris-training").experiment_id])
    by_label = {r.data.tags["model_version"]: r for r in runs if r.info.status == "FINISHED"}
    for label in ("v1.0", "v2.0"):
        assert {"accuracy", "precision", "recall", "f1"} <= set(by_label[label].data.metrics)
        arts = [a.path for a in client.list_artifacts(by_label[label].info.run_id)]
        assert "confusion_matrix.png" in arts
    assert by_label["v1.0"].data.params["estimator"] != by_label["v2.0"].data.params["estimator"]
    # Idempotent: a second run registers nothing new.
    subprocess.run([sys.executable, "-m", "models.train", "--tracking-uri", mlflow_server.url], check=True,
                   cwd=ROOT, capture_output=True)
    assert len(client.search_model_versions("name = 'IrisClassifier'")) == 2


def test_routes_and_logs_every_prediction(start_gateway: Callable[..., GatewayProcess],
                                          mlflow_server: MlflowServer) -> None:
    gw = start_gateway()
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        seed = http.post("/predict", content=SEED_FORM,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert seed.status_code == 200 and seed.json()["prediction"] == "Setosa"
        as_json = http.post("/predict", json={"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2,
                                              "petal_width": 2.3})
        assert as_json.json()["prediction"] == "Virginica"
        forced = http.post("/predict", json=FEATURES, headers={"X-Model-Version": "v2.0"})
        assert forced.headers["X-Model-Version"] == "v2.0" and forced.headers["X-Routing-Reason"] == "forced"
        assert http.post("/predict", json=FEATURES, headers={"X-Model-Version": "v7"}).status_code == 400
        sticky = {http.post("/predict", json=FEATURES, headers={"X-User-ID": "u-42"}).json()["model_version"]
                  for _ in range(5)}
        assert len(sticky) == 1
        bad = http.post("/predict", json={**FEATURES, "petal_width": "NaN"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "petal_width"
        variants = http.get("/variants").json()
        assert [v["registry_version"] for v in variants["variants"]] == ["1", "2"]
        answered = [seed, as_json, forced]
    stats = wait_drained(gw)
    assert stats["spool"]["total_exported"] == 8 and stats["spool"].get("total_duplicates_avoided", 0) == 0
    runs = runs_by_request(mlflow_server.url)
    for resp in answered:
        (run,) = runs[(resp.json()["request_id"], "primary")]
        assert run.info.status == "FINISHED"
        assert run.data.tags["model_version"] == resp.json()["model_version"]
        assert run.data.tags["prediction"] == resp.json()["prediction"]
        assert run.data.tags["routing"] == resp.headers["X-Routing-Reason"]
        assert run.data.tags["config_hash"] == variants["config_hash"]
        assert run.data.metrics["prediction_class"] == resp.json()["prediction_class"]
        assert run.data.metrics["inference_time_ms"] > 0
        assert set(run.data.params) == set(FEATURES)
    seed_run = runs[(seed.json()["request_id"], "primary")][0]
    assert seed_run.data.params == {"sepal_length": "5.1", "sepal_width": "3.5", "petal_length": "1.4",
                                    "petal_width": "0.2"}


def test_shadow_mode_end_to_end(start_gateway: Callable[..., GatewayProcess], mlflow_server: MlflowServer) -> None:
    gw = start_gateway(routing={"mode": "shadow"}, name="shadow")
    result = asyncio.run(run_traffic(gw.url, 60, concurrency=4, progress=False, seed=7))
    assert result.ok == 60 and set(result.versions) == {"v1.0"} and set(result.reasons) == {"shadow"}
    wait_drained(gw)
    stats = httpx.get(gw.url + "/stats").json()
    assert stats["requests"]["shadow_scored"] == 60
    runs = runs_by_request(mlflow_server.url)
    shadow = [k for k in runs if k[1] == "shadow"]
    assert len(shadow) >= 60
    for rid, _ in shadow[:10]:
        assert runs[(rid, "shadow")][0].data.tags["model_version"] == "v2.0"
        assert runs[(rid, "primary")][0].data.tags["model_version"] == "v1.0"


def test_weighted_shares_over_http(start_gateway: Callable[..., GatewayProcess]) -> None:
    gw = start_gateway(name="w7030", spool={"export": False}, variants=[
        {"name": "v1.0", "model_uri": "models:/IrisClassifier/1", "weight": 0.7},
        {"name": "v2.0", "model_uri": "models:/IrisClassifier@challenger", "weight": 0.3},
    ])
    result = asyncio.run(run_traffic(gw.url, 1500, concurrency=8, progress=False, seed=3))
    assert result.ok == 1500
    share = result.versions["v1.0"] / 1500
    assert abs(share - 0.7) < 4.5 * (0.7 * 0.3 / 1500) ** 0.5
    sticky = asyncio.run(run_traffic(gw.url, 400, concurrency=8, users=25, progress=False, seed=4))
    assert sticky.sticky_consistent and set(sticky.reasons) == {"sticky"}


def test_missing_model_fails_start_with_one_line(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    config = write_config(tmp_path / "g.toml", mlflow_server.url, tmp_path / "spool", tmp_path / "cache",
                          variants=[{"name": "v1.0", "model_uri": "models:/IrisClassifier/9", "weight": 1.0}])
    proc = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "models:/IrisClassifier/9" in last and mlflow_server.url in last
    assert "Traceback" not in proc.stderr


def test_unreachable_tracking_server_fails_start_with_one_line(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "g.toml", dead, tmp_path / "spool", tmp_path / "empty-cache")
    proc = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=90, cwd=ROOT)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert dead in last and "unreachable" in last and "models:/IrisClassifier/1" in last
    assert "Traceback" not in proc.stderr


def test_traffic_cli_prints_shares_and_percentiles(start_gateway: Callable[..., GatewayProcess]) -> None:
    gw = start_gateway(name="cli", spool={"export": False})
    proc = subprocess.run([sys.executable, "-m", "experiments.traffic", "--url", gw.url, "-n", "200",
                           "--variant", "v2.0"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-500:]
    assert "v2.0" in proc.stdout and "100.00%" in proc.stdout and "p99" in proc.stdout
    assert "200/200" not in proc.stderr  # no progress bar without a terminal: logs stay clean
    assert "sampling from the model's logged input example, 45 rows only" in proc.stderr


def test_traffic_feedback_gives_the_report_accuracy_and_a_recommendation(
        start_gateway: Callable[..., GatewayProcess], mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """The first hour's question, without a script of one's own: traffic with --feedback (the labels of
    the model's logged hold-out example), then the report's recommendation names the accuracy."""
    import json

    gw = start_gateway(name="verdict", mlflow={"experiment": "iris-verdict", "granularity": "window",
                                               "window_seconds": 1.0})
    proc = subprocess.run([sys.executable, "-m", "experiments.traffic", "--url", gw.url, "-n", "400", "--feedback",
                           "--json"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-800:]
    sent = json.loads(proc.stdout)["feedback"]
    assert sum(f["labelled"] for f in sent.values()) == 400
    wait_drained(gw)
    for _ in range(120):  # the feedback windows follow the prediction windows
        report = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", "iris-verdict",
                                 "--tracking-uri", mlflow_server.url, "--json", "--no-log", "--control", "v1.0"],
                                capture_output=True, text=True, timeout=180, cwd=ROOT)
        assert report.returncode == 0, report.stderr[-800:]
        out = json.loads(report.stdout)
        if sum((s.get("accuracy") or {}).get("n", 0) for s in out["versions"].values()) == 400:
            break
        time.sleep(1)
    for version, s in out["versions"].items():  # the report's accuracy is the one the client counted
        assert s["accuracy"]["n"] == sent[version]["labelled"]
        assert abs(s["accuracy"]["rate"] - sent[version]["accuracy"]) < 1e-3
    line = out["recommendation"]["candidates"]["v2.0"]["line"]
    assert line.startswith("v2.0: ") and "accura" in line and ("p = " in line or "p < " in line)
    assert out["links"]["runs"].endswith("/runs") and "/#/experiments/" in out["links"]["runs"]
    text = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", "iris-verdict",
                           "--tracking-uri", mlflow_server.url, "--no-log", "--control", "v1.0"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT).stdout
    assert text.rstrip().splitlines()[-1].strip() == line  # the terminal report ends with the verdict


def test_a_slower_candidate_of_equal_accuracy_is_not_promoted(
        start_gateway: Callable[..., GatewayProcess], mlflow_server: MlflowServer, local_models: dict[str, str],
        tmp_path: Path) -> None:
    """Issue 34's breast-cancer case, on iris: the same estimator, 20 ms slower per call. The verdict
    said "no difference found"; now its first words say "do not promote: slower". Traffic with
    --feedback (receipts), then the README's compare --wait, which waits for the export itself."""
    import json

    from tests.harness.slow_model import save_slow_copy

    slow = save_slow_copy(local_models["v1.0"], tmp_path / "slow-copy", delay=0.02)
    gw = start_gateway(name="slower", mlflow={"experiment": "iris-slower", "granularity": "window",
                                              "window_seconds": 1.0},
                       variants=[{"name": "v1.0", "model_uri": local_models["v1.0"], "weight": 0.5},
                                 {"name": "v1.0-slow", "model_uri": slow, "weight": 0.5}])
    proc = subprocess.run([sys.executable, "-m", "experiments.traffic", "--url", gw.url, "-n", "600", "--feedback",
                           "--data", str(_iris_csv(tmp_path)), "--json"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-800:]
    sent = json.loads(proc.stdout)["feedback"]
    assert sent["v1.0"]["accuracy"] == pytest.approx(sent["v1.0-slow"]["accuracy"], abs=0.08)
    report = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", "iris-slower",
                             "--tracking-uri", mlflow_server.url, "--spool", str(tmp_path / "slower" / "spool"),
                             "--wait", "180", "--json", "--no-log", "--control", "v1.0"],
                            capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert report.returncode == 0 and "partial" not in report.stderr, report.stderr[-800:]
    verdict = json.loads(report.stdout)["recommendation"]["candidates"]["v1.0-slow"]
    print("\n" + verdict["line"])
    assert verdict["decision"] == "do not promote: slower", verdict["line"]
    assert verdict["line"].startswith("v1.0-slow: do not promote: slower: ")
    assert "accuracy: no detectable" in verdict["line"]


def _iris_csv(tmp_path: Path) -> Path:
    """Every iris row with its label: enough rows for both versions' p95 (the logged example is 30)."""
    from sklearn.datasets import load_iris

    from models.train import CLASSES
    from models.train import FEATURES as NAMES

    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(NAMES)
    x.assign(label=[CLASSES[i] for i in y]).to_csv(tmp_path / "iris.csv", index=False)
    return tmp_path / "iris.csv"


def test_traffic_feedback_without_ground_truth_says_so(start_gateway: Callable[..., GatewayProcess],
                                                       tmp_path: Path) -> None:
    gw = start_gateway(name="nolabels", spool={"export": False})
    rows = tmp_path / "rows.csv"
    rows.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")
    proc = subprocess.run([sys.executable, "-m", "experiments.traffic", "--url", gw.url, "-n", "5", "--feedback",
                           "--data", str(rows)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "no label column" in proc.stderr and "--label-column" in proc.stderr


def test_live_routing_sighup_promote_and_change_log(start_gateway: Callable[..., GatewayProcess],
                                                    mlflow_server: MlflowServer) -> None:
    import signal

    from mlflow import MlflowClient

    gw = start_gateway(name="admin", spool={"export": False}, env={"GATEWAY_ADMIN_TOKEN": "tok"})
    auth = {"Authorization": "Bearer tok"}
    client = MlflowClient(tracking_uri=mlflow_server.url)
    try:
        # SIGHUP: the edited file's weights apply without a restart.
        text = gw.config.read_text().replace("weight = 0.5", "weight = 0.0", 1)
        gw.config.write_text(text)
        before = httpx.get(gw.url + "/variants").json()["config_hash"]
        gw.send_signal(signal.SIGHUP)
        for _ in range(50):
            variants = httpx.get(gw.url + "/variants").json()
            if variants["config_hash"] != before:
                break
            time.sleep(0.1)
        assert variants["weights"] == {"v1.0": 0.0, "v2.0": 1.0}
        result = asyncio.run(run_traffic(gw.url, 100, progress=False))
        assert result.versions == {"v2.0": 100}
        # Promote v1.0: all traffic, and the champion alias follows.
        r = httpx.post(gw.url + "/admin/promote", json={"variant": "v1.0"}, headers=auth)
        assert r.status_code == 200 and r.json()["registry"]["moved"] is True
        assert client.get_model_version_by_alias("IrisClassifier", "champion").version == "1"
        r = httpx.post(gw.url + "/admin/promote", json={"variant": "v2.0"}, headers=auth)
        assert client.get_model_version_by_alias("IrisClassifier", "champion").version == "2"
        # Every change is a run in <experiment>-routing-changes, with its old and new config hash.
        for _ in range(50):
            exp = client.get_experiment_by_name("iris-flower-prediction-routing-changes")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if len(runs) >= 3:
                break
            time.sleep(0.2)
        assert {r.data.tags["source"] for r in runs} >= {"SIGHUP", "POST /admin/promote v1.0"}
        assert "routing changed by SIGHUP" in gw.log_text()
    finally:
        client.set_registered_model_alias("IrisClassifier", "champion", "1")


def test_feedback_joins_the_prediction_run_and_the_report(start_gateway: Callable[..., GatewayProcess],
                                                          mlflow_server: MlflowServer) -> None:

    from experiments.report.build import build_report

    gw = start_gateway(name="feedback", mlflow={"experiment": "iris-feedback"})
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        answers = [http.post("/predict", json=FEATURES).json() for _ in range(20)]
        for i, a in enumerate(answers):
            label = "Setosa" if i % 4 else "Virginica"  # every fourth answer is "wrong"
            assert http.post("/feedback", json={"request_id": a["request_id"], "true_label": label},
                             headers=FEEDBACK_AUTH).status_code == 202
    runs: dict = {}  # type: ignore[type-arg]
    for _ in range(120):
        runs = runs_by_request(mlflow_server.url, "iris-feedback")
        if len(runs) == 20 and all("correct" in v[0].data.metrics for v in runs.values()):
            break
        time.sleep(0.5)
    for i, a in enumerate(answers):
        (run,) = runs[(a["request_id"], "primary")]
        assert run.data.tags["true_label"] == ("Setosa" if i % 4 else "Virginica")
        assert run.data.metrics["correct"] == (1.0 if i % 4 else 0.0)
    report, _ = build_report("iris-feedback", mlflow_server.url)
    labelled = sum(s["accuracy"]["n"] for s in report["versions"].values())
    right = sum(s["accuracy"]["correct"] for s in report["versions"].values())
    assert labelled == 20 and right == 15


def test_several_workers_give_correct_metric_totals(start_gateway: Callable[..., GatewayProcess],
                                                    mlflow_server: MlflowServer) -> None:
    import re

    gw = start_gateway(name="workers", args=["--workers", "2"], mlflow={"experiment": "iris-workers"})
    result = asyncio.run(run_traffic(gw.url, 300, concurrency=8, progress=False, seed=9))
    assert result.ok == 300
    # Keep-alive connections may all have landed on one worker; fresh connections spread over both.
    body = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    for _ in range(100):
        assert httpx.post(gw.url + "/predict", json=body, headers={"Connection": "close"}).status_code == 200
    totals = set()
    for _ in range(6):  # a fresh connection each time: the scrape may land on either worker
        text = httpx.get(gw.url + "/metrics", headers={"Connection": "close"}).text
        counts = re.findall(r'^gateway_requests_total\{[^}]*status="200"[^}]*\} ([0-9.]+)$', text, re.M)
        totals.add(sum(float(c) for c in counts))
    assert totals == {400.0}
    # Both workers served (each keeps its own counter file), and the scrape summed them.
    counter_files = list((gw.workdir / "spool").glob("prometheus-*/counter_*.db"))
    assert len(counter_files) >= 2, counter_files
    wait_drained(gw)
    runs = runs_by_request(mlflow_server.url, "iris-workers")
    assert len(runs) == 400 and all(len(v) == 1 for v in runs.values())
    # One exporter serves the spool, not one per worker: the other worker stands by.
    exporters = [cmd for cmd in descendants(gw.proc.pid).values() if cmd[1:4] == ["-m", "gateway.export", "--follow"]]
    assert len(exporters) == 1, exporters
    kinds = {httpx.get(gw.url + "/stats", headers={"Connection": "close"}).json()["exporter"]["kind"]
             for _ in range(12)}
    assert kinds <= {"process", "standby"}, kinds
    workers = {pid for pid, cmd in descendants(gw.proc.pid).items() if "gateway.export" not in cmd}
    leader = int((gw.workdir / "spool" / "exporter.lock").read_text())
    assert leader in workers
    # The leading worker killed: the other worker's exporter takes the export over, uvicorn starts a
    # new worker, and what is served after the kill reaches MLflow too.
    os.kill(leader, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        taken = (gw.workdir / "spool" / "exporter.lock").read_text().strip()
        if taken.isdigit() and int(taken) != leader:
            break
        time.sleep(0.2)
    assert int(taken) != leader and int(taken) in workers, (taken, leader, workers)
    for _ in range(50):
        assert httpx.post(gw.url + "/predict", json=body, headers={"Connection": "close"}).status_code == 200
    wait_drained(gw)
    runs = runs_by_request(mlflow_server.url, "iris-workers")
    assert len(runs) == 450 and all(len(v) == 1 for v in runs.values())


def _answers_for(url: str, seconds: float) -> list[tuple[float, str, int]]:
    """(time, answering variant, worker pid) of requests on fresh connections for ``seconds``: each
    lands on whichever worker accepts it. (The worker's pid is shown to the admin token only.)"""
    out = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10, headers={"Connection": "close", "Authorization": "Bearer tok"}) as http:
        while time.monotonic() < end:
            r = http.post("/predict", json=FEATURES)
            assert r.status_code == 200, r.text
            pid = http.get("/variants").json()["routing_state"]["worker_pid"]
            out.append((time.monotonic(), r.json()["model_version"], pid))
    return out


def test_a_live_change_reaches_every_worker_within_two_seconds(start_gateway: Callable[..., GatewayProcess]) -> None:
    gw = start_gateway(name="shared-routing", args=["--workers", "2"], spool={"export": False},
                       env={"GATEWAY_ADMIN_TOKEN": "tok"})
    auth = {"Authorization": "Bearer tok"}
    before = _answers_for(gw.url, 1.0)
    assert {v for _, v, _ in before} == {"v1.0", "v2.0"}
    r = httpx.put(gw.url + "/admin/routing", json={"weights": {"v1.0": 1.0, "v2.0": 0.0}}, headers=auth)
    assert r.status_code == 200, r.text
    changed_at = time.monotonic()
    after = _answers_for(gw.url, 4.0)
    late = [t - changed_at for t, v, _ in after if v == "v2.0"]
    settled = [(v, pid) for t, v, pid in after if t - changed_at > 2.0]
    print(f"\nPUT weights v1.0=1 v2.0=0 with --workers 2: {len(after)} requests over 4 s after it, "
          f"{len(late)} to v2.0 (the last {max(late, default=0.0):.3f} s after the change); "
          f"after 2 s: {sum(v == 'v1.0' for v, _ in settled)}/{len(settled)} to v1.0 from "
          f"{len({pid for _, pid in settled})} workers")
    assert max(late, default=0.0) <= 2.0
    assert settled and all(v == "v1.0" for v, _ in settled)
    assert len({pid for _, _, pid in after}) == 2  # both workers answered after the change
    state = httpx.get(gw.url + "/variants").json()["routing_state"]
    assert state["source"] == "PUT /admin/routing" and state["version"] == 2

    # SIGHUP to the process group (as `kill -HUP` of a service does): each worker re-reads the file;
    # uvicorn's parent also replaces its workers, and a new one resumes the shared state.
    gw.config.write_text(gw.config.read_text().replace("weight = 0.5", "weight = 0.0", 1))  # v1.0 -> 0
    gw.send_signal(signal.SIGHUP)
    for _ in range(300):
        state = httpx.get(gw.url + "/variants", headers={"Connection": "close"}).json()
        if state["weights"] == {"v1.0": 0.0, "v2.0": 1.0}:
            break
        time.sleep(0.1)
    assert state["routing_state"]["source"] in ("SIGHUP", "config file (changed since it was last applied)")
    # uvicorn replaces the workers one at a time (each loads its models first): a connection that a
    # retiring worker accepted but had not read yet is closed unanswered (uvicorn's graceful shutdown),
    # so the steady state is checked once both workers are new ones.
    old_pids = {pid for _, _, pid in after}
    new_pids: set[int] = set()
    deadline = time.monotonic() + 90
    while len(new_pids) < 2 and time.monotonic() < deadline:
        try:
            pid = httpx.get(gw.url + "/variants", headers={"Connection": "close", **auth}).json()[
                "routing_state"]["worker_pid"]
        except httpx.TransportError:
            continue
        if pid not in old_pids:
            new_pids.add(pid)
        time.sleep(0.05)
    assert len(new_pids) == 2, f"workers after SIGHUP: {new_pids}, before: {old_pids}"
    time.sleep(2.0)
    assert {v for _, v, _ in _answers_for(gw.url, 2.0)} == {"v2.0"}

    # A restart resumes the stored routing.
    httpx.put(gw.url + "/admin/routing", json={"weights": {"v1.0": 0.25, "v2.0": 0.75}}, headers=auth)
    gw.stop()
    gw.start()
    state = httpx.get(gw.url + "/variants").json()
    assert state["weights"] == {"v1.0": 0.25, "v2.0": 0.75}
    assert state["routing_state"]["restored_at_start"] is True


def test_one_label_for_two_models_is_logged_and_reported_apart(start_gateway: Callable[..., GatewayProcess],
                                                               mlflow_server: MlflowServer) -> None:
    """v2.0 served by one registry version, then (another day, another config) by another: every record
    names its model, and the report compares the two apart with a warning instead of merging them."""
    import json

    from experiments.report.build import build_report

    first = [{"name": "v1.0", "model_uri": "models:/IrisClassifier/1", "weight": 0.5},
             {"name": "v2.0", "model_uri": "models:/IrisClassifier/2", "weight": 0.5}]
    second = [first[0], {"name": "v2.0", "model_uri": "models:/IrisClassifier/1", "weight": 0.5}]
    for name, variants in (("day1", first), ("day2", second)):
        gw = start_gateway(name=name, variants=variants, mlflow={"experiment": "iris-relabelled"})
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            answers = [http.post("/predict", json=FEATURES, headers={"X-Model-Version": "v2.0"}).json()
                       for _ in range(5)]
        assert {a["model_version"] for a in answers} == {"v2.0"}
        wait_drained(gw)
        gw.stop()
    runs = runs_by_request(mlflow_server.url, "iris-relabelled")
    models = {run.data.tags["model"].split(" run ")[0] for (run,) in runs.values()}
    assert models == {"IrisClassifier/1", "IrisClassifier/2"}
    assert {run.data.tags["model_uri"] for (run,) in runs.values()} == {"models:/IrisClassifier/1",
                                                                        "models:/IrisClassifier/2"}
    report, _ = build_report("iris-relabelled", mlflow_server.url)
    assert set(report["versions"]) == {"v2.0 [IrisClassifier/1]", "v2.0 [IrisClassifier/2]"}
    assert any("label v2.0 stands for 2 different models" in w for w in report["warnings"]), report["warnings"]
    assert json.dumps(report["versions"]["v2.0 [IrisClassifier/2]"]["models"]).count("IrisClassifier/2 run ") == 1
