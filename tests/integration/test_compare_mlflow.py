"""The comparison report against runs in a real MLflow: figures, CLI, summary runs, Compare Runs page."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.report.build import build_report
from experiments.report.summary_runs import log_summary_runs
from experiments.report.text import render_terminal
from gateway.config.settings import load_settings
from gateway.domain.records import PredictionRecord
from gateway.spool.store import PredictionSpool
from gateway.wiring.exporter import build_thread_exporter
from stack.processes import FEEDBACK_AUTH, ROOT, MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.long]
ARTIFACTS = ROOT / "test-artifacts"
CLASSES = ["Setosa", "Versicolor", "Virginica"]


def _ship(tmp: Path, server: MlflowServer, experiment: str, records: list[PredictionRecord],
          granularity: str = "prediction") -> None:
    """Put synthetic records into MLflow through the gateway's own spool and exporter."""
    spool = PredictionSpool(tmp / f"spool-{experiment}-{granularity}")
    for r in records:
        spool.append(r)
    settings = load_settings(None, mlflow={"tracking_uri": server.url, "experiment": experiment,
                                           "granularity": granularity, "export_workers": 8, "window_seconds": 3600,
                                           "window_max_records": len(records)}, spool={"dir": spool.directory})
    exporter = build_thread_exporter(settings, spool)
    exporter.drain_now()
    exporter.start(report_every=0)
    deadline = time.monotonic() + 180
    while spool.count_open() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert exporter.stop(0) == 0


def _synthetic(n: int, seed: int, t0: int = 1_790_000_000_000) -> tuple[list[PredictionRecord], dict]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    recs, truth = [], {"latency": {"v1.0": [], "v2.0": []}, "classes": {"v1.0": [], "v2.0": []}}
    for i in range(n):
        v = "v1.0" if i % 4 else "v2.0"  # 75 / 25
        lat = float(round(rng.lognormal(-1.2 if v == "v1.0" else -0.6, 0.25), 4))
        cls = int(rng.choice(3, p=[0.34, 0.33, 0.33] if v == "v1.0" else [0.2, 0.3, 0.5]))
        truth["latency"][v].append(lat)
        truth["classes"][v].append(cls)
        recs.append(PredictionRecord(
            request_id=f"syn-{seed}-{i}", role="primary", model_version=v,
            features={"sepal_length": 5.0, "sepal_width": 3.0, "petal_length": 1.5, "petal_width": 0.2},
            prediction=CLASSES[cls], class_index=cls, inference_time_ms=lat,
            ts_ms=t0 + i * 10, routing="weighted", config_hash="c0ffee", weights="v1.0=0.75,v2.0=0.25"))
    return recs, truth


def test_report_figures_match_hand_computed(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    records, truth = _synthetic(240, seed=11)
    _ship(tmp_path, mlflow_server, "cmp-figures", records)
    report, _ = build_report("cmp-figures", mlflow_server.url)
    assert report["n_runs"] == 240 and report["n_records"] == 240
    for v in ("v1.0", "v2.0"):
        lat = np.array(truth["latency"][v])
        s = report["versions"][v]
        assert s["count"] == len(lat) and s["share"] == pytest.approx(len(lat) / 240)
        assert s["latency_ms"]["mean"] == pytest.approx(lat.mean(), rel=1e-9)
        assert s["latency_ms"]["p50"] == pytest.approx(np.median(lat), rel=1e-9)
        assert s["latency_ms"]["p95"] == pytest.approx(np.quantile(lat, 0.95), rel=1e-9)
        counts = np.bincount(truth["classes"][v], minlength=3)
        assert [s["classes"][c] for c in CLASSES] == counts.tolist()
    from scipy import stats

    table = np.array([np.bincount(truth["classes"][v], minlength=3) for v in ("v1.0", "v2.0")])
    assert report["tests"]["class_chi2"]["p_value"] == pytest.approx(stats.chi2_contingency(table)[1], rel=1e-9) \
        or report["tests"]["class_chi2"]["p_value"] == pytest.approx(
            stats.chi2_contingency(table, correction=False)[1], rel=1e-9)
    mwu = stats.mannwhitneyu(truth["latency"]["v2.0"], truth["latency"]["v1.0"])
    assert report["tests"]["latency_mwu"]["p_value"] == pytest.approx(mwu.pvalue, rel=1e-9)
    assert report["tests"]["srm"]["expected"] == {"v1.0": 180.0, "v2.0": 60.0}
    assert not report["tests"]["srm"]["mismatch"]
    assert any("v2.0 is slower than v1.0" in v for v in report["verdicts"])
    # The same records as window runs give the same figures.
    _ship(tmp_path, mlflow_server, "cmp-windows", records, granularity="window")
    wreport, _ = build_report("cmp-windows", mlflow_server.url)
    assert wreport["n_runs"] == 2 and wreport["n_records"] == 240
    p50 = report["versions"]["v1.0"]["latency_ms"]["p50"]
    assert wreport["versions"]["v1.0"]["latency_ms"]["p50"] == pytest.approx(p50)


def test_filters_select_runs(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    early, _ = _synthetic(40, seed=12, t0=1_790_000_000_000)
    late, _ = _synthetic(40, seed=13, t0=1_790_000_100_000)
    _ship(tmp_path, mlflow_server, "cmp-filters", early + late)
    assert build_report("cmp-filters", mlflow_server.url, since=1_790_000_100_000)[0]["n_records"] == 40
    assert build_report("cmp-filters", mlflow_server.url, until=1_790_000_100_000)[0]["n_records"] == 40
    report = build_report("cmp-filters", mlflow_server.url, config_hash="c0ffee")[0]
    assert report["n_records"] == 80
    assert report["filters"]["role"] == "all", "the filter as given (a loop variable once overwrote it)"
    from experiments.report.analyse import NoRuns

    with pytest.raises(NoRuns):
        build_report("cmp-filters", mlflow_server.url, role="shadow")


def test_cli_json_html_summary_runs_and_compare_page(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    records, _ = _synthetic(120, seed=14)
    _ship(tmp_path, mlflow_server, "cmp-cli", records)
    html = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", "cmp-cli", "--json",
                           "--html", str(html), "--tracking-uri", mlflow_server.url],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for v in ("v1.0", "v2.0"):
        assert set(report["versions"][v]) >= {"count", "share", "latency_ms", "classes"}
        assert set(report["versions"][v]["latency_ms"]) >= {"mean", "p50", "p95", "p99"}
    assert set(report["tests"]) >= {"class_chi2", "latency_mwu", "srm"} and "shadow" in report
    text = html.read_text()
    assert text.count("data:image/png;base64,") >= 2 and "Verdicts" in text
    ml = report["mlflow"]
    assert len(ml["summary_run_ids"]) == 2
    assert ml["compare_url"].startswith(mlflow_server.url + "/#/compare-runs?runs=[")
    assert ml["experiment"] == "cmp-cli-comparison"  # the served experiment's name + "-comparison"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    children = [client.get_run(r) for r in ml["summary_run_ids"]]
    assert {c.data.tags["model_version"] for c in children} == {"v1.0", "v2.0"}
    assert all(c.data.tags["mlflow.parentRunId"] == ml["parent_run_id"] for c in children)
    assert all({"count", "latency_p50_ms", "class_share_Setosa", "latency_mwu_p_value",
                "sequential_p_latency_p95_ratio", "sequential_p_sample_ratio"} <= set(c.data.metrics)
               for c in children)
    arts = {a.path for a in client.list_artifacts(ml["parent_run_id"])}
    assert {"report.html", "report.json"} <= arts
    _screenshot_compare_page(ml["compare_url"], [c.data.metrics["count"] for c in children], tmp_path)


def _screenshot_compare_page(url: str, counts: list[float], tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed; `make system-deps` installs it")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "compare-runs.png"
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
            "--window-size=1600,3200", "--virtual-time-budget=20000"]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    subprocess.run([*args, f"--screenshot={shot}", url], capture_output=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 10_000
    # The page lists the summary runs' metrics: the record counts appear in the comparison table.
    assert "latency_p50_ms" in dom, "Compare Runs page did not render the metrics"
    for c in counts:
        assert f"{int(c)}" in dom


def test_no_runs_exit_2_and_single_version(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", "does-not-exist",
                           "--tracking-uri", mlflow_server.url], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "no data" in proc.stderr
    records, _ = _synthetic(30, seed=15)
    only_v1 = [r for r in records if r.model_version == "v1.0"]
    _ship(tmp_path, mlflow_server, "cmp-one", only_v1)
    report, _ = build_report("cmp-one", mlflow_server.url)
    assert list(report["versions"]) == ["v1.0"] and report["tests"]["latency_mwu"] is None
    assert "only v1.0 answered traffic" in render_terminal(report)
    ids = log_summary_runs(report, mlflow_server.url, None, "cmp-one-comparison")
    assert len(ids["summary_run_ids"]) == 1


def test_window_tables_are_parquet_and_the_report_reads_them_all(mlflow_server: MlflowServer) -> None:
    """The generator behind `make bench-report`, small: every record through the spool and the
    window exporter into Parquet tables, and every one back in the report."""
    from mlflow import MlflowClient

    from experiments.bench.synthetic_windows import generate
    from experiments.report.build import build_report

    written = generate(mlflow_server.url, "syn-windows", 2500, window_records=500, workers=2, progress=False)
    assert written["left_unexported"] == 0
    report, records = build_report("syn-windows", mlflow_server.url)
    assert report["n_records"] == 2500 and records["request_id"].is_unique
    assert report["n_runs"] == 6  # per version (about 1,250 each): windows of 500, 500 and the rest
    assert set(report["versions"]) == {"v1.0", "v2.0"}
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run = client.search_runs([client.get_experiment_by_name("syn-windows").experiment_id], max_results=1)[0]
    assert run.data.tags["records_artifact"] == "predictions.parquet"
    assert "predictions.parquet" in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_three_versions_against_the_control_with_adjusted_p_values(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """A/B/n from MLflow: three versions with feedback, each compared with the control on classes,
    latency and accuracy; raw and Holm-adjusted p-values in the JSON, the terminal, the HTML and the
    summary runs."""
    rng = np.random.default_rng(21)
    recs = []
    for i in range(450):
        v = ("v1.0", "v2.0", "v3.0")[i % 3]
        slow = v == "v3.0"
        cls = int(rng.choice(3, p=[0.2, 0.3, 0.5] if slow else [0.34, 0.33, 0.33]))
        recs.append(PredictionRecord(
            request_id=f"abn-{i}", role="primary", model_version=v,
            features={"sepal_length": round(float(rng.uniform(4.3, 7.9)), 1), "sepal_width": 3.0,
                      "petal_length": 1.5, "petal_width": 0.2},
            prediction=CLASSES[cls], class_index=cls,
            inference_time_ms=float(rng.lognormal(-0.6 if slow else -1.2, 0.25)), ts_ms=1_791_000_000_000 + i,
            routing="weighted", config_hash="abc123", weights="v1.0=0.333,v2.0=0.333,v3.0=0.334",
            headers='{"x-country": "%s"}' % ("de" if i % 2 else "fr")))
    _ship(tmp_path, mlflow_server, "cmp-abn", recs)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("cmp-abn")
    for run in client.search_runs([exp.experiment_id], max_results=1000)[:150]:  # ground truth for some
        client.log_metric(run.info.run_id, "correct", float(rng.random() < 0.9))
    html = tmp_path / "abn.html"
    args = [sys.executable, "-m", "experiments.compare", "--experiment", "cmp-abn", "--tracking-uri",
            mlflow_server.url, "--control", "v1.0"]
    proc = subprocess.run([*args, "--json", "--html", str(html)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    section = report["comparisons"]
    assert section["control"] == "v1.0" and section["correction"] == "holm"
    assert set(section["pairs"]) == {"v2.0", "v3.0"} and {"classes", "latency"} <= set(section["pairs"]["v3.0"])
    assert section["pairs"]["v3.0"]["latency"]["significant"]
    assert all(t["p_adjusted"] >= t["p_value"] for pair in section["pairs"].values() for t in pair.values())
    assert "Against the control" in html.read_text() and "v1.0 <small>(control)</small>" in html.read_text()
    children = [client.get_run(r) for r in report["mlflow"]["summary_run_ids"]]
    by_version = {c.data.tags["model_version"]: c for c in children}
    assert by_version["v3.0"].data.tags["correction"] == "holm" and by_version["v1.0"].data.tags["is_control"] == "true"
    assert {"vs_control_latency_p_value", "vs_control_latency_p_adjusted"} <= set(by_version["v3.0"].data.metrics)
    text = subprocess.run([*args, "--no-log", "--correction", "bh", "--segment-by", "sepal_length"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert text.returncode == 0, text.stderr
    assert "against the control v1.0 (Benjamini-Hochberg-adjusted across" in text.stdout
    assert "segments by sepal_length (quartiles of the numeric column" in text.stdout
    by_header = subprocess.run([*args, "--no-log", "--json", "--segment-by", "header:X-Country"], capture_output=True,
                               text=True, timeout=300, cwd=ROOT)
    assert by_header.returncode == 0, by_header.stderr
    segments = json.loads(by_header.stdout)["segments"]
    assert segments["by"] == "header:X-Country" and set(segments["segments"]) == {"de", "fr"}


def test_three_registered_versions_through_a_gateway_with_sticky_users_and_a_logged_header(
        mlflow_server: MlflowServer, start_gateway: Any) -> None:
    """A real gateway serving three registered versions (the constant candidate among them) to sticky
    users with feedback and a logged X-Country header; the report from MLflow: the user as its unit,
    both versions against the control with adjusted p-values, segments by the header."""
    import httpx
    from sklearn.datasets import load_iris

    from stack.processes import register_constant_model
    from tests.harness.delivery import wait_drained

    const = register_constant_model(mlflow_server.url)
    experiment = f"abn-gateway-{time.monotonic_ns()}"
    gw = start_gateway(name="abn", mlflow={"tracking_uri": mlflow_server.url, "experiment": experiment,
                                           "granularity": "window", "window_seconds": 1.0, "retry_max_seconds": 2.0},
                       routing={"mode": "weighted", "salt": "abn", "log_headers": ["X-Country"]},
                       variants=[{"name": "v1.0", "model_uri": "models:/IrisClassifier/1", "weight": 1.0},
                                 {"name": "v2.0", "model_uri": "models:/IrisClassifier/2", "weight": 1.0},
                                 {"name": "const", "model_uri": const, "weight": 1.0}],
                       model={"class_names": CLASSES})
    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        for i in range(600):
            row, truth = iris.data[i % 150], CLASSES[int(iris.target[i % 150])]
            user = f"user-{i % 120}"
            r = http.post("/predict", json=dict(zip(names, map(float, row), strict=True)),
                          headers={"X-User-ID": user, "X-Country": "de" if i % 120 < 60 else "fr"})
            assert r.status_code == 200, r.text
            assert http.post("/feedback", json={"request_id": r.json()["request_id"], "true_label": truth},
                             headers=FEEDBACK_AUTH).status_code == 202
    wait_drained(gw, timeout=120, labels=True)
    proc = subprocess.run([sys.executable, "-m", "experiments.compare", "--experiment", experiment, "--tracking-uri",
                           mlflow_server.url, "--control", "v1.0", "--segment-by", "header:X-Country", "--json",
                           "--no-log"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["unit"]["unit"] == "user" and report["tests"]["srm"]["unit"] == "user"
    section = report["comparisons"]
    assert section["unit"] == "user" and set(section["pairs"]) == {"v2.0", "const"}
    accuracy = section["pairs"]["const"]["accuracy"]  # the constant model is right on a third of the rows
    assert accuracy["test"] == "cluster_bootstrap" and accuracy["significant"] and accuracy["difference"] < -0.3
    assert set(report["segments"]["segments"]) == {"de", "fr"}
    assert report["health"]["multiple_exposure"]["in_more_than_one_version"] == 0


def test_segments_read_the_same_from_per_input_columns_and_json_text(tmp_path: Path,
                                                                      mlflow_server: MlflowServer) -> None:
    """A window whose table has one column per input, one whose table keeps JSON text (a row with
    other inputs), and per-prediction runs of the same records: the same segments."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    recs = []
    for i in range(160):
        features: dict[str, object] = {"sepal_length": round(float(rng.uniform(4.3, 7.9)), 1), "sepal_width": 3.0}
        if i == 100:
            features["extra"] = 1.0  # v2.0's window keeps JSON text, v1.0's has a column per input
        cls = int(rng.integers(3))
        recs.append(PredictionRecord(
            request_id=f"seg-{i}", role="primary", model_version="v1.0" if i % 2 else "v2.0", features=features,
            prediction=CLASSES[cls], class_index=cls, inference_time_ms=float(rng.lognormal(-1, 0.3)),
            ts_ms=1_792_000_000_000 + i * 10, routing="weighted", config_hash="seg",
            weights="v1.0=0.5,v2.0=0.5"))
    _ship(tmp_path, mlflow_server, "seg-runs", recs)
    _ship(tmp_path, mlflow_server, "seg-windows", recs, granularity="window")
    from mlflow import MlflowClient

    from gateway.mlflow.readback import search_all, window_records

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("seg-windows")
    runs = search_all([exp.experiment_id], "")
    kinds = set()
    for run_id in runs["run_id"]:
        path = client.download_artifacts(run_id, "predictions.parquet", str(tmp_path / run_id))
        names = pq.read_schema(path).names
        kinds.add("json" if "features" in names else "columns")
    assert kinds == {"json", "columns"}
    windows = window_records(runs, mlflow_server.url, segment="sepal_length")
    assert sorted(zip(windows["request_id"], windows["segment"], strict=True)) == sorted(
        (r.request_id, r.features["sepal_length"]) for r in recs)
    by_runs, _ = build_report("seg-runs", mlflow_server.url, segment_by="sepal_length")
    by_windows, _ = build_report("seg-windows", mlflow_server.url, segment_by="sepal_length")
    assert by_windows["segments"] == by_runs["segments"]
