"""The prediction log's guarantees under faults, against real processes.

The tests that stop MLflow share one server of this module's (``own_mlflow``), which each of them may
stop and restart; the others share the session's. Request ids are unique, so one test's runs never
count in another's exactly-once check. Slow: tens of seconds each.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config.settings import load_settings
from stack.processes import GatewayProcess, MlflowServer, train_models, wait_http, write_config
from tests.harness.delivery import FEATURES, TrafficThread, assert_exactly_once, wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# About 30 requests/s: a 10 s outage leaves a backlog of ~300 to drain afterwards (FAULT_OUTAGE_SECONDS=60
# for the long version).
OUTAGE_SECONDS = float(os.environ.get("FAULT_OUTAGE_SECONDS", "10"))


@pytest.fixture(scope="module")
def stoppable_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("stoppable-mlflow"), workers=2).start()
    train_models(server.url)
    yield server
    server.stop()


@pytest.fixture
def own_mlflow(stoppable_mlflow: MlflowServer) -> Iterator[MlflowServer]:
    """The module's server, running at the start of each test that may stop it."""
    if not stoppable_mlflow.running:
        stoppable_mlflow.start()
    yield stoppable_mlflow
    if not stoppable_mlflow.running:
        stoppable_mlflow.start()


def _gateway(tmp_path: Path, server: MlflowServer, env: dict[str, str] | None = None,
             **sections: object) -> GatewayProcess:
    config = write_config(tmp_path / "gateway.toml", server.url, tmp_path / "spool", tmp_path / "cache",
                          **sections)  # type: ignore[arg-type]
    return GatewayProcess(config=config, workdir=tmp_path / "gw", env=env or {})


def test_mlflow_down_mid_traffic_then_back(tmp_path: Path, own_mlflow: MlflowServer) -> None:
    gw = _gateway(tmp_path, own_mlflow).start()
    try:
        with TrafficThread(gw.url, connections=3, pause=0.1) as traffic:
            time.sleep(3)
            before = len(traffic.ok_ids)
            own_mlflow.stop(signal.SIGKILL)
            outage_start = len(traffic.latencies_ms)
            time.sleep(OUTAGE_SECONDS)
            outage_lat = traffic.latencies_ms[outage_start:]
            during = len(traffic.ok_ids) - before
            backlog = httpx.get(gw.url + "/stats").json()["spool"]["backlog"]
            own_mlflow.start()
            time.sleep(3)
        assert not traffic.failures, traffic.failures[:5]
        assert during > 50 and backlog > 0
        stats = wait_drained(gw, timeout=300)
        assert stats["exporter"]["failed_attempts"] > 0
        print(f"outage {OUTAGE_SECONDS:.0f}s: served {during} during it, backlog peak ~{backlog}, "
              f"p50 during outage {statistics.median(outage_lat):.1f} ms")
        assert_exactly_once(own_mlflow.url, traffic.ok_ids)
    finally:
        gw.stop()


def test_mlflow_down_at_startup_serves_from_cache(tmp_path: Path, own_mlflow: MlflowServer) -> None:
    gw = _gateway(tmp_path, own_mlflow).start()  # fills the model cache
    gw.stop()
    own_mlflow.stop()
    gw = _gateway(tmp_path, own_mlflow).start()
    try:
        served = []
        with httpx.Client(base_url=gw.url, timeout=5) as http:
            for _ in range(40):
                r = http.post("/predict", json=FEATURES)
                assert r.status_code == 200
                served.append(r.json()["request_id"])
            assert {v["source"] for v in http.get("/variants").json()["variants"]} == {"cache"}
        assert httpx.get(gw.url + "/stats").json()["spool"]["backlog"] == 40
        own_mlflow.start()
        wait_drained(gw, timeout=120)
        assert_exactly_once(own_mlflow.url, served)
    finally:
        gw.stop()


def _exporter_pid(gw: GatewayProcess) -> int:
    """The exporter child's pid, from /stats (shown to the admin token only)."""
    for _ in range(100):
        stats = httpx.get(gw.url + "/stats", headers={"Authorization": "Bearer tok"}).json()
        pid = (stats["exporter"] or {}).get("pid")
        if pid:
            return int(pid)
        time.sleep(0.1)
    raise AssertionError("the exporter never reported its pid")


def _seconds_until_gone(pid: int, limit: float) -> float | None:
    """How long until process ``pid`` has exited (a zombie counts as gone), or None past ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return time.monotonic() - start
        if state in ("Z", "X"):
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def test_sigkill_during_traffic_loses_and_duplicates_nothing(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """Three SIGKILLs mid-traffic. The first kills the gateway alone, as the kernel's OOM killer would:
    its exporter child, orphaned, stops within seconds instead of exporting beside the next one's."""
    served: list[str] = []
    orphan_lived: float | None = None
    for round_ in range(3):
        gw = _gateway(tmp_path, mlflow_server, env={"GATEWAY_ADMIN_TOKEN": "tok"}).start()
        exporter = _exporter_pid(gw)
        with TrafficThread(gw.url, connections=4, pause=0.05) as traffic:
            time.sleep(2 + round_)
            if round_ == 0:
                assert gw.proc is not None
                os.kill(gw.proc.pid, signal.SIGKILL)  # the gateway's process only: its exporter is orphaned
                orphan_lived = _seconds_until_gone(exporter, 30)
            gw.stop(signal.SIGKILL)  # mid-request, mid-export (the whole process group)
        served += traffic.ok_ids
    print(f"an orphaned exporter stopped {orphan_lived} s after its gateway was SIGKILLed")
    assert orphan_lived is not None and orphan_lived < 10
    gw = _gateway(tmp_path, mlflow_server).start()
    try:
        stats = wait_drained(gw, timeout=300)
        counts = assert_exactly_once(mlflow_server.url, served)
        assert counts["served"] > 100
        print("after 3 SIGKILLs:", counts, "duplicates avoided by tag lookup:",
              stats["spool"].get("total_duplicates_avoided", 0))
    finally:
        gw.stop()


def test_sigterm_drains_within_grace_and_keeps_the_rest(tmp_path: Path, own_mlflow: MlflowServer) -> None:
    gw = _gateway(tmp_path, own_mlflow, spool={"dir": str(tmp_path / "spool"), "shutdown_grace_seconds": 3.0}).start()
    own_mlflow.stop()
    with httpx.Client(base_url=gw.url, timeout=5) as http:
        served = [http.post("/predict", json=FEATURES).json()["request_id"] for _ in range(30)]
    start = time.monotonic()
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit here.
    assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    took = time.monotonic() - start
    assert took < 3.0 + 10, took
    assert "30 record(s) left in the spool" in gw.log_text() and "Application shutdown complete" in gw.log_text()
    # With MLflow back, the next start ships what the last one could not.
    own_mlflow.start()
    gw = _gateway(tmp_path, own_mlflow).start()
    try:
        wait_drained(gw)
        with httpx.Client(base_url=gw.url, timeout=5) as http:
            served += [http.post("/predict", json=FEATURES).json()["request_id"] for _ in range(10)]
        assert gw.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # MLflow up: drains before exiting
        assert "shutdown: 0 record(s) left in the spool" in gw.log_text()
        assert_exactly_once(own_mlflow.url, served)
    finally:
        gw.stop()


def test_export_cli_drains_a_spool_without_serving(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    import subprocess
    import sys

    from stack.processes import ROOT

    gw = _gateway(tmp_path, mlflow_server, spool={"dir": str(tmp_path / "spool"), "export": False}).start()
    with httpx.Client(base_url=gw.url, timeout=5) as http:
        served = [http.post("/predict", json=FEATURES).json()["request_id"] for _ in range(25)]
    gw.stop()
    config = write_config(tmp_path / "export.toml", mlflow_server.url, tmp_path / "spool", tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "gateway.export", "--config", str(config), "--quiet"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "exported 25 record(s)" in proc.stdout
    assert_exactly_once(mlflow_server.url, served)


def test_window_mode_one_run_per_version_role_window(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    from mlflow import MlflowClient

    gw = _gateway(tmp_path, mlflow_server, mlflow={"tracking_uri": mlflow_server.url,
                                                 "model_cache_dir": str(tmp_path / "cache"),
                                                 "granularity": "window", "window_seconds": 2.0,
                                                 "experiment": "iris-windows"},
                  routing={"mode": "shadow"}).start()
    try:
        with TrafficThread(gw.url, connections=3, pause=0.01) as traffic:
            time.sleep(5)
        wait_drained(gw, timeout=120)
    finally:
        gw.stop()
    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("iris-windows")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.granularity = 'window'", max_results=1000)
    assert len(runs) >= 4
    counts = {("v1.0", "primary"): 0, ("v2.0", "shadow"): 0}
    for run in runs:
        key = (run.data.tags["model_version"], run.data.tags["role"])
        counts[key] += int(run.data.metrics["count"])
        assert {"inference_time_ms_p50", "inference_time_ms_p95", "inference_time_ms_p99",
                "class_count_Setosa"} <= set(run.data.metrics)
        assert "predictions.parquet" in [a.path for a in client.list_artifacts(run.info.run_id)]
        history = client.get_metric_history(run.info.run_id, "inference_time_ms")
        assert len(history) == int(run.data.metrics["count"])
        assert int(run.data.tags["window_end_ms"]) - int(run.data.tags["window_start_ms"]) < 2000
    assert counts[("v1.0", "primary")] == len(traffic.ok_ids) == counts[("v2.0", "shadow")]


# Another process that takes the spool's write lock: short locks, then one past the busy timeout.
_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for hold in [0.5] * 8 + [6.0]:
    conn.execute("BEGIN IMMEDIATE")
    time.sleep(hold)
    conn.execute("COMMIT")
    time.sleep(0.5)
"""


def test_a_spool_locked_by_another_process_stalls_nothing_else(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """Writes go through the spool's writer thread: while another process holds the write lock the
    event loop keeps answering (/healthz), a write that waits too long follows on_log_failure (503 with
    reject), and every 200 reaches MLflow exactly once."""
    import subprocess
    import sys
    import threading

    gw = _gateway(tmp_path, mlflow_server, spool={"dir": str(tmp_path / "spool"), "write_timeout_ms": 1000.0}).start()
    health_ms: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            while not stop.wait(0.05):
                start = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                health_ms.append((time.perf_counter() - start) * 1000)

    prober = threading.Thread(target=probe, daemon=True)
    try:
        with TrafficThread(gw.url, connections=3, pause=0.02) as traffic:
            prober.start()
            time.sleep(1)
            locker = subprocess.run([sys.executable, "-c", _LOCKER, str(tmp_path / "spool" / "predictions.sqlite3")],
                                    timeout=60, check=True)
            assert locker.returncode == 0
            time.sleep(1)
            stop.set()
            prober.join(10)
        refused = [f for f in traffic.failures if f == "HTTP 503"]
        # only the on_log_failure answer, and fast: nothing waits past the write timeout (the client's is 5 s)
        assert len(refused) == len(traffic.failures), sorted(set(traffic.failures))
        slowest = max(traffic.latencies_ms)
        stats = wait_drained(gw, timeout=300)
        counts = assert_exactly_once(mlflow_server.url, traffic.ok_ids)
        health_ms.sort()
        print(f"spool locked 8 x 0.5 s + 1 x 6 s by another process: {counts['served']} answered 200 and in "
              f"MLflow once, {len(refused)} answered 503 (not logged, on_log_failure = reject); /healthz "
              f"{len(health_ms)} probes, p50 {health_ms[len(health_ms) // 2]:.1f} ms, max {health_ms[-1]:.1f} ms; "
              f"slowest 200 {slowest:.0f} ms; "
              f"export workers {stats['exporter']['workers']}")
        assert counts["served"] > 100 and len(health_ms) > 50
        # The loop never waits for SQLite: a probe takes milliseconds (was 4.6 s behind a locked insert).
        assert health_ms[-1] < 1000
        assert stats["requests"].get("rejected_unlogged", 0) == len(refused)
    finally:
        stop.set()
        gw.stop()


def test_a_deleted_registry_version_is_served_from_the_cache(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """A version deleted from the registry no longer stops a restart when a cached copy exists
    ([model] allow_cached, the default); with it off, start-up fails in one line that says so."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier

    from models.train import FEATURES as COLUMNS
    from models.train import pip_requirements

    iris = load_iris()
    x = pd.DataFrame(iris.data, columns=COLUMNS)
    model = DummyClassifier(strategy="most_frequent").fit(x, iris.target)
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_experiment("deleted-version-training")
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x.head(5), model.predict(x.head(5))),
                                 registered_model_name="SoonDeleted", pip_requirements=pip_requirements())
    variants = [{"name": "v1.0", "model_uri": "models:/IrisClassifier/1", "weight": 0.5},
                {"name": "v2.0", "model_uri": "models:/SoonDeleted/1", "weight": 0.5}]
    iris_model = {"class_names": ["Setosa", "Versicolor", "Virginica"]}
    _gateway(tmp_path, mlflow_server, variants=variants, model=iris_model).start().stop()  # fills the cache
    MlflowClient(tracking_uri=mlflow_server.url).delete_model_version("SoonDeleted", "1")

    gw = _gateway(tmp_path, mlflow_server, variants=variants, model=iris_model).start()
    try:
        described = {v["name"]: v for v in httpx.get(gw.url + "/variants").json()["variants"]}
        assert described["v2.0"]["source"] == "cache" and described["v1.0"]["source"] == "cache"
        assert httpx.post(gw.url + "/predict", json=FEATURES, headers={"X-Model-Version": "v2.0"}).status_code == 200
        assert "is not in MLflow's registry any more" in gw.log_text()
    finally:
        gw.stop()
    refused = _gateway(tmp_path, mlflow_server, variants=variants, model={**iris_model, "allow_cached": False})
    refused.start(wait_ready=False)
    assert refused.proc is not None and refused.proc.wait(timeout=120) != 0
    refused.stop()
    assert "allow_cached = true serves it" in refused.log_text()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, as a spool's disk that fills (mounting needs root; CI's machine runs as root)."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_spool_disk_is_not_ready_keeps_draining_and_loses_nothing(
        tmp_path: Path, own_mlflow: MlflowServer, small_disk: Path) -> None:
    """The spool on a 3 MB disk (1 MB kept free), MLflow down so nothing drains: the disk fills, requests get 503 (never
    500), /readyz answers 503 naming the spool, and the exporter does not crash-loop. MLflow back: the
    exporter drains from the full disk, /readyz returns to 200 without traffic, and every 200 is in
    MLflow exactly once."""
    gw = _gateway(tmp_path, own_mlflow, spool={"dir": str(small_disk / "spool"), "min_free_mb": 1.0}).start()
    served: list[str] = []
    statuses: dict[int, int] = {}
    try:
        own_mlflow.stop()
        refused_in_a_row = 0
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            for i in range(20_000):
                r = http.post("/predict", json=FEATURES, headers={"X-Request-ID": f"full-{i}"})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    served.append(r.json()["request_id"])
                    refused_in_a_row = 0
                else:
                    refused_in_a_row += 1
                    last_refusal = r.text
                    if refused_in_a_row == 50:
                        break
            assert set(statuses) == {200, 503}, statuses  # never a 500
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "spool" in ready.json()["reason"], (ready.text, last_refusal)
            assert ready.json()["spool_writable"] is False
            time.sleep(5)
            exporter = http.get("/stats").json()["exporter"]
            assert exporter["alive"] and exporter["restarts"] == 0, exporter
            own_mlflow.start()
            deadline = time.monotonic() + 180
            while http.get("/readyz").status_code != 200:  # no traffic: the probe finds the space
                assert time.monotonic() < deadline, http.get("/readyz").text
                time.sleep(0.5)
            # Ready says a record fits now; while the exporter still marks rows on a disk this small, its
            # log may take that room back, so the requests after it wait for the drain to finish.
            wait_drained(gw, timeout=180)
            for i in range(50):
                r = http.post("/predict", json=FEATURES, headers={"X-Request-ID": f"after-{i}"})
                assert r.status_code == 200, r.text
                served.append(r.json()["request_id"])
        wait_drained(gw, timeout=180)
        assert httpx.get(gw.url + "/stats").json()["exporter"]["restarts"] == 0
    finally:
        gw.stop()
    counts = assert_exactly_once(own_mlflow.url, served)
    print(f"full spool disk: {statuses.get(200, 0)} answered 200 before it filled, {statuses.get(503, 0)} got 503;",
          counts)


def test_promotion_and_change_log_while_mlflow_is_down_land_once_when_it_is_back(
        tmp_path: Path, own_mlflow: MlflowServer) -> None:
    """MLflow down: POST /admin/promote answers at once (the routing change is local), the champion
    alias and the change-log runs wait in the outbox, GET /rollout lists them as pending, and they
    survive a SIGKILL of the gateway. MLflow back: each lands exactly once."""
    from mlflow import MlflowClient

    auth = {"Authorization": "Bearer tok"}
    client = MlflowClient(tracking_uri=own_mlflow.url, registry_uri=own_mlflow.url)
    client.set_registered_model_alias("IrisClassifier", "champion", "1")
    gw = GatewayProcess(config=write_config(tmp_path / "gateway.toml", own_mlflow.url, tmp_path / "spool",
                                            tmp_path / "cache"),
                        workdir=tmp_path / "gw", env={"GATEWAY_ADMIN_TOKEN": "tok"}).start()
    try:
        r = httpx.post(gw.url + "/admin/rollout", headers=auth, timeout=30,
                       json={"control": "v1.0", "candidate": "v2.0", "steps": [0.1, 1.0], "min_samples": 100})
        assert r.status_code == 201, r.text
        own_mlflow.stop()
        assert httpx.post(gw.url + "/admin/rollout/abort", headers=auth, timeout=10).status_code == 200
        started = time.monotonic()
        promoted = httpx.post(gw.url + "/admin/promote", json={"variant": "v2.0"}, headers=auth, timeout=15)
        took = time.monotonic() - started
        assert promoted.status_code == 200, promoted.text
        registry = promoted.json()["registry"]
        assert registry["moved"] is False and registry["pending"] is True and registry["version"] == "2", registry
        assert httpx.get(gw.url + "/variants").json()["weights"] == {"v1.0": 0.0, "v2.0": 1.0}
        pending = httpx.get(gw.url + "/rollout", timeout=10).json()["pending_in_mlflow"]
        kinds = [p["kind"] for p in pending]
        assert "champion_alias" in kinds and kinds.count("change_run") >= 2, pending  # abort's and promote's
    finally:
        gw.stop(signal.SIGKILL)  # mid-retry: the outbox is on disk
    own_mlflow.start()
    gw = GatewayProcess(config=gw.config, workdir=tmp_path / "gw", env={"GATEWAY_ADMIN_TOKEN": "tok"}).start()
    try:
        deadline = time.monotonic() + 120
        while httpx.get(gw.url + "/rollout", timeout=10).json()["pending_in_mlflow"]:
            assert time.monotonic() < deadline, httpx.get(gw.url + "/rollout").json()["pending_in_mlflow"]
            time.sleep(0.5)
    finally:
        gw.stop()
    assert client.get_model_version_by_alias("IrisClassifier", "champion").version == "2"
    exp = client.get_experiment_by_name(load_settings(gw.config).mlflow.routing_changes)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.change_id != ''", max_results=1000)
    by_change: dict[str, int] = {}
    for run in runs:
        by_change[run.data.tags["change_id"]] = by_change.get(run.data.tags["change_id"], 0) + 1
    assert by_change and max(by_change.values()) == 1, by_change  # none twice
    sources = [run.data.tags["source"] for run in runs]
    assert sources.count("POST /admin/promote v2.0") == 1 and any("abort" in s for s in sources), sources
    print(f"promote with MLflow down answered in {took:.2f} s; {len(pending)} item(s) pending, "
          f"{len(runs)} change-log run(s) once each after MLflow came back")


def test_a_replica_started_during_an_outage_serves_the_shared_split_not_the_files(
        tmp_path: Path, own_mlflow: MlflowServer) -> None:
    """State in MLflow at 90/10 (the file says 50/50). MLflow down, a replica restarts: with the
    default (start_without_mlflow = "last_read") it serves 90/10 from its local copy at once; with
    "unready" it answers /readyz 503 until MLflow is back, then serves 90/10."""
    state = {"backend": "mlflow", "registered_model": f"state-{os.getpid()}-{time.monotonic_ns()}",
             "poll_seconds": 0.5}
    env = {"GATEWAY_ADMIN_TOKEN": "tok"}

    def replica(name: str, **state_keys: object) -> GatewayProcess:
        config = write_config(tmp_path / f"{name}.toml", own_mlflow.url, tmp_path / name / "spool",
                              tmp_path / "cache", state={**state, **state_keys})
        return GatewayProcess(config=config, workdir=tmp_path / name, env=env)

    first = replica("a").start()
    try:
        r = httpx.put(first.url + "/admin/routing", json={"weights": {"v1.0": 0.9, "v2.0": 0.1}},
                      headers={"Authorization": "Bearer tok"}, timeout=30)
        assert r.status_code == 200, r.text
        time.sleep(1.5)  # a poll or two: the copy holds the newest state read
    finally:
        first.stop()
    own_mlflow.stop()
    # Both start at once (one start's wait, not two): "a" on its old spool (its local copy), "b" new.
    restarted = replica("a").start(wait_ready=False)
    waiting = replica("b", start_without_mlflow="unready").start(wait_ready=False)
    try:
        wait_http(restarted.url + "/readyz", 90, restarted.proc)
        variants = httpx.get(restarted.url + "/variants").json()
        assert variants["weights"] == {"v1.0": 0.9, "v2.0": 0.1}, variants
        assert "local copy" in variants["routing_state"]["source"]
        ready = httpx.get(restarted.url + "/readyz").json()
        assert ready["ready"] and ready["shared_state"]["from_local_copy"]["versions_seen"] >= 1, ready
        wait_for = time.monotonic() + 60
        while True:  # up, and unready because it has not read the shared state
            try:
                unready = httpx.get(waiting.url + "/readyz", timeout=5)
                if "shared routing state" in unready.json().get("reason", ""):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < wait_for, waiting.log_text()[-2000:]
            time.sleep(0.3)
        assert unready.status_code == 503
        own_mlflow.start()
        wait_for = time.monotonic() + 60
        while httpx.get(waiting.url + "/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < wait_for, httpx.get(waiting.url + "/readyz").text
            time.sleep(0.3)
        assert httpx.get(waiting.url + "/variants").json()["weights"] == {"v1.0": 0.9, "v2.0": 0.1}
    finally:
        restarted.stop()
        waiting.stop()
