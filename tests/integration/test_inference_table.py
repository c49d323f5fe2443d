"""The inference table against a real MLflow server and real gateway processes: window runs with
[table] enabled, 100- and 1,000-row OIP batches, the exporter SIGKILLed and then the whole gateway:
every answered row is in the Delta table once, and each window's run names the table as a dataset
input, read back through MLflow's own client."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from stack.processes import FEEDBACK_AUTH, GatewayProcess, MlflowServer, write_config
from stack.s3 import CREDENTIALS, S3Server
from tests.harness.delivery import wait_drained
from tests.integration.test_faults import _exporter_pid

pytestmark = pytest.mark.integration

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _gateway(tmp_path: Path, server: MlflowServer, cache: Path, **table: Any) -> GatewayProcess:
    config = write_config(tmp_path / "gateway.toml", server.url, tmp_path / "spool", cache,
                          mlflow={"granularity": "window", "window_seconds": 1.0,
                                  "experiment": f"table-{tmp_path.name}"},
                          table={"enabled": True, "uri": str(tmp_path / "table"), **table})
    return GatewayProcess(config=config, workdir=tmp_path / "gw", env={"GATEWAY_ADMIN_TOKEN": "tok"})


class Batches:
    """OIP batches of 100 and 1,000 rows from two threads; remembers each answered request's rows."""

    def __init__(self, url: str) -> None:
        self.url, self.answered, self._stop = url, {}, threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in (100, 1000)]

    def _run(self, rows: int) -> None:
        rng = np.random.default_rng(rows)
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self._stop.is_set():
                data = rng.uniform(0.1, 7.0, size=(rows, 4))
                body = {"inputs": [{"name": "input-0", "shape": [rows, 4], "datatype": "FP64",
                                    "data": data.ravel().tolist()}]}
                try:
                    r = http.post("/v2/models/IrisClassifier/infer", json=body)
                except httpx.HTTPError:
                    time.sleep(0.1)
                    continue
                if r.status_code == 200:
                    with self._lock:
                        self.answered[r.json()["id"]] = rows
                time.sleep(0.05)

    def __enter__(self) -> Batches:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


@pytest.mark.slow
def test_every_answered_row_is_in_the_table_once_after_sigkills(tmp_path: Path, mlflow_server: MlflowServer,
                                                                 session_model_cache: Path) -> None:
    answered: dict[str, int] = {}
    for round_ in range(2):
        gw = _gateway(tmp_path, mlflow_server, session_model_cache).start()
        exporter = _exporter_pid(gw)
        with Batches(gw.url) as traffic:
            time.sleep(4)
            if round_ == 0:
                os.kill(exporter, signal.SIGKILL)  # mid-append or mid-run: the gateway starts another
                time.sleep(3)
            gw.stop(signal.SIGKILL)  # the whole process group, mid-request and mid-export
        answered.update(traffic.answered)
    gw = _gateway(tmp_path, mlflow_server, session_model_cache).start()
    try:
        wait_drained(gw, timeout=300)
    finally:
        gw.stop()
    uri = str(tmp_path / "table" / "predictions")
    table = DeltaTable(uri)
    _assert_once(table, answered, "after a SIGKILL of the exporter and one of the gateway")

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name(_experiment(tmp_path))
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.granularity = 'window'", max_results=1000)
    assert runs
    for run in runs:
        assert run.data.tags["records_table"] == uri
        inputs = run.inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == ["predictions"] and inputs[0].dataset.source_type == "delta_table"
        assert not client.list_artifacts(run.info.run_id)  # the rows are in the table, not copied into the run
    # The registry names each version's LoggedModel in its source (models:/m-...).
    model_ids = {v: client.get_model_version("IrisClassifier", v[1:2]).source.removeprefix("models:/")
                 for v in ("v1.0", "v2.0")}
    assert all(model_ids.values())
    in_rows = pa.table(QueryBuilder().register("p", table).execute(
        "SELECT model_version, model_id, COUNT(*) AS n FROM p GROUP BY model_version, model_id").read_all())
    assert {(r["model_version"], r["model_id"]) for r in in_rows.to_pylist()} == set(model_ids.items())
    for run in runs:  # the run names the version's LoggedModel, and its metrics are linked to it
        inputs = client.get_run(run.info.run_id).inputs
        assert [m.model_id for m in inputs.model_inputs] == [model_ids[run.data.tags["model_version"]]]
    for version, model_id in model_ids.items():
        linked = {m.key for m in client.get_logged_model(model_id).metrics or []}
        assert "count" in linked, (version, linked)
    per_run = {r.data.tags["window_id"]: r.data.metrics["count"] for r in runs}
    by_window = pa.table(QueryBuilder().register("p", table).execute(
        "SELECT window_id, COUNT(*) AS n FROM p GROUP BY window_id").read_all()).to_pylist()
    assert {r["window_id"]: float(r["n"]) for r in by_window} == per_run  # one run per window, its count


def _assert_once(table: DeltaTable, answered: dict[str, int], what: str) -> None:
    """Every answered request's rows in the table, each row once."""
    counts = pa.table(QueryBuilder().register("p", table).execute(
        "SELECT request_id, COUNT(*) AS n, COUNT(DISTINCT row_index) AS distinct_rows FROM p "
        "WHERE role = 'primary' GROUP BY request_id").read_all()).to_pylist()
    in_table = {r["request_id"]: (r["n"], r["distinct_rows"]) for r in counts}
    missing = [rid for rid in answered if rid not in in_table]
    wrong = {rid: in_table[rid] for rid, n in answered.items() if rid in in_table and in_table[rid] != (n, n)}
    rows = sum(answered.values())
    print(f"{what}: {len(answered)} requests, {rows} rows answered; {len(missing)} missing, {len(wrong)} with other "
          f"than their rows once; table version {table.version()}, {len(table.file_uris())} files")
    assert len(answered) > 10 and rows > 5000
    assert not missing and not wrong


def test_two_replicas_append_to_one_table_at_once(tmp_path: Path, mlflow_server: MlflowServer,
                                                  session_model_cache: Path) -> None:
    table_uri = str(tmp_path / "shared-table")
    replicas = [_gateway(tmp_path / name, mlflow_server, session_model_cache, uri=table_uri).start()
                for name in ("replica-a", "replica-b")]
    answered: dict[str, int] = {}
    try:
        traffic = [Batches(gw.url) for gw in replicas]
        for t in traffic:
            t.__enter__()
        time.sleep(5)
        for t in traffic:
            t.__exit__()
            answered.update(t.answered)
        labelled = {rid: replicas[0].url for rid in list(traffic[0].answered)[:20]}
        with httpx.Client(timeout=10) as http:
            for rid, url in labelled.items():
                for row in (0, 7):
                    r = http.post(url + "/feedback", json={"request_id": rid, "row_index": row, "true_label": "Setosa"},
                                  headers=FEEDBACK_AUTH)
                    assert r.status_code == 202, r.text
        for gw in replicas:
            wait_drained(gw, timeout=120, labels=True)
    finally:
        for gw in replicas:
            gw.stop()
    table = DeltaTable(f"{table_uri}/predictions")
    import sqlite3

    for name in ("replica-a", "replica-b"):  # each replica's spool appended under its own app id
        with sqlite3.connect(tmp_path / name / "spool" / "predictions.sqlite3") as db:
            (spool_id,) = db.execute("SELECT value FROM meta WHERE key = 'spool_id'").fetchone()
        assert (table.transaction_version(f"gateway-spool-{spool_id}") or 0) > 0, name
    _assert_once(table, answered, "two replicas appending to one table")
    feedback = pa.table(QueryBuilder().register("f", DeltaTable(f"{table_uri}/feedback")).execute(
        "SELECT request_id, row_index, true_label FROM f").read_all()).to_pylist()
    assert sorted((r["request_id"], r["row_index"]) for r in feedback) == sorted(
        (rid, row) for rid in labelled for row in (0, 7))  # each label once
    assert {r["true_label"] for r in feedback} == {'"Setosa"'}


def test_the_table_on_an_s3_api_server_holds_every_row_once(tmp_path: Path, mlflow_server: MlflowServer,
                                                             session_model_cache: Path) -> None:
    s3 = S3Server(tmp_path / "s3").start()
    try:
        s3.bucket("lake")
        gw = _gateway(tmp_path, mlflow_server, session_model_cache, uri="s3://lake/gateway",
                      storage_options=s3.storage_options())
        gw.env.update(CREDENTIALS)
        gw.start()
        try:
            with Batches(gw.url) as traffic:
                time.sleep(4)
            wait_drained(gw, timeout=120)
        finally:
            gw.stop()
        table = DeltaTable("s3://lake/gateway/predictions", storage_options=s3.storage_options())
        _assert_once(table, traffic.answered, "on the S3 API server (moto)")
    finally:
        s3.stop()


def _experiment(tmp_path: Path) -> str:
    import tomllib

    return str(tomllib.loads((tmp_path / "gateway.toml").read_text())["mlflow"]["experiment"])


def test_writers_of_one_app_id_on_s3_commit_it_once_and_other_app_ids_side_by_side(tmp_path: Path) -> None:
    from gateway.delta.appender import DeltaAppender
    from gateway.delta.reader import read_windows

    s3 = S3Server(tmp_path / "s3").start()
    try:
        s3.bucket("lake")
        uri, options = "s3://lake/race/predictions", s3.storage_options()

        def rows(window: str) -> pa.Table:
            return pa.table({"request_id": [f"{window}-0", f"{window}-1"], "ts_ms": [1_765_100_000_000] * 2,
                             "window_id": [window] * 2})

        DeltaAppender(uri, options).append_once(rows("w0"), "init", 1)
        appended: list[bool] = []
        start = threading.Barrier(6)

        def write(app: str, window: str) -> None:
            start.wait()
            appended.append(DeltaAppender(uri, options, retries=20).append_once(rows(window), app, 1).appended)

        threads = [threading.Thread(target=write, args=(app, f"{app}{i}")) for app in "abc" for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        windows = read_windows(uri, [f"{a}{i}" for a in "abc" for i in range(2)], options).column("window_id")
        per_app = {a: sum(1 for w in windows.to_pylist() if w.startswith(a)) for a in "abc"}
        assert per_app == {"a": 2, "b": 2, "c": 2}  # one window (two rows) per app id: its version once
        assert sorted(appended) == [False, False, False, True, True, True]
    finally:
        s3.stop()
