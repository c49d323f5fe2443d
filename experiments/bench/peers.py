"""The setups the benchmark compares: the gateway in its logging modes, and the other ways to serve
the same registered model (a bare FastAPI app, MLServer, ``mlflow models serve``, the seed's design),
each a server process started on a free port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.bench.wrk import COLUMNS, FORM, ROW, Load, _batch_rows, _oip, _split
from stack.processes import ROOT, VENV_BIN, GatewayProcess, free_port, stop_group, wait_http, write_config

MODEL_URI = "models:/IrisClassifier/1"
GATEWAY_OIP = "/v2/models/IrisClassifier/infer"
MLSERVER_OIP = "/v2/models/iris/infer"
# The batch loads, by name: the same Open Inference Protocol body (one [N, 4] FP64 tensor) for the
# gateway and MLServer, and a dataframe_split on /invocations for the gateway and `mlflow models serve`.
OIP_100, OIP_1000, SPLIT_100 = "oip-100", "oip-1000", "split-100"
BATCH_LOADS = (OIP_100, OIP_1000, SPLIT_100)


def oip_batch(path: str, rows: int) -> Load:
    return Load(path, _oip(_batch_rows(rows)), "application/json", rows)


def split_batch(rows: int = 100) -> Load:
    return Load("/invocations", _split(_batch_rows(rows)), "application/json", rows)


@dataclass
class Setup:
    name: str
    single: Load | None  # None: batches only
    batches: dict[str, Load] = field(default_factory=dict)  # load name -> body, each at c=8
    logging: str | None = None  # "prediction" | "window" | None
    start: Callable[[Path, str, str], Any] | None = field(default=None, repr=False)
    memory: Load | None = None  # the memory check's load (1,000-row batches at 64 connections)


class Service:
    """A server process in its own process group, stopped with its children."""

    def __init__(self, cmd: list[str], ready_url: str, workdir: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT, timeout: float = 180) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            wait_http(ready_url, timeout, self.proc)
        except Exception as exc:
            self.stop()
            tail = (workdir / "server.log").read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{cmd[0]} did not start: {exc}\n" + "\n".join(tail)) from None

    def stop(self) -> None:
        stop_group(self.proc)
        self._log.close()


def start_bare(work: Path, tracking_uri: str, url: str) -> Service:
    port = url.rsplit(":", 1)[1]
    return Service([sys.executable, "-m", "experiments.bench.bare_app", "--port", port, "--tracking-uri", tracking_uri],
                   f"{url}/docs", work)


def start_mlflow_serve(work: Path, tracking_uri: str, url: str) -> Service:
    port = url.rsplit(":", 1)[1]
    return Service([str(VENV_BIN / "mlflow"), "models", "serve", "-m", MODEL_URI, "-h", "127.0.0.1", "-p", port,
                    "--env-manager", "local"], f"{url}/ping", work,
                   env={"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
                        # it starts `uvicorn` by name: the venv's must be on PATH
                        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})


def start_seed(work: Path, tracking_uri: str, url: str) -> Service:
    port = url.rsplit(":", 1)[1]
    return Service([sys.executable, "-m", "experiments.bench.seed_app", "--port", port, "--tracking-uri", tracking_uri,
                    "--experiment", f"bench-{work.name}"], f"{url}/docs", work)


def mlserver_venv(cache: Path) -> Path:
    """MLServer and its scikit-learn runtime in their own venv (cached), with our scikit-learn version
    so that the exported estimator loads as it is."""
    import sklearn

    venv = cache / "mlserver"
    stamp = venv / f".installed-{sklearn.__version__}-uvloop021"
    if not stamp.exists():
        print("installing MLServer into its own venv (once) ...", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # uvloop 0.22 made asyncio.get_event_loop() raise in a fresh process; MLServer 1.7's inference
        # workers call it at start and die (seen here with 1.7.1), so the venv keeps the last uvloop before.
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "mlserver>=1.6,<2",
                        "mlserver-sklearn>=1.6,<2", f"scikit-learn=={sklearn.__version__}", "uvloop<0.22"],
                       check=True)
        stamp.touch()
    return venv


def start_mlserver(work: Path, tracking_uri: str, url: str, venv: Path, grpc_port: int | None = None) -> Service:
    """MLServer serving the registered model as ``iris`` on ``url``, and gRPC on ``grpc_port`` (a free one
    when not given)."""
    import joblib
    import mlflow.sklearn

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    repo = work / "models"
    model_dir = repo / "iris"
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(mlflow.sklearn.load_model(MODEL_URI), model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    port = int(url.rsplit(":", 1)[1])
    (repo / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": grpc_port or free_port(), "metrics_port": free_port(), "host": "127.0.0.1",
        "debug": False}))
    return Service([str(venv / "bin" / "mlserver"), "start", str(repo)], f"{url}/v2/models/iris/ready", work,
                   cwd=repo)


def gateway_starter(logging: str | None, workers: int = 1, *, table: bool = False,
                    grpc_port: int | None = None) -> Callable[[Path, str, str], GatewayProcess]:
    """The gateway with the given prediction log (None: off) and worker processes; ``table``: window
    rows into the Delta inference table under the setup's directory, not into Parquet artifacts;
    ``grpc_port``: the Open Inference Protocol over gRPC there too."""
    def start(work: Path, tracking_uri: str, url: str) -> GatewayProcess:
        experiment = f"bench-{work.name}"
        bounds = {c: {"gt": 0, "le": 100} for c in COLUMNS}
        config = write_config(
            work / "gateway.toml", tracking_uri, work / "spool", work.parent / "cache",
            variants=[{"name": "v1.0", "model_uri": MODEL_URI, "weight": 1.0}],
            model={"class_names": ["Setosa", "Versicolor", "Virginica"], "bounds": bounds},
            spool={"dir": str(work / "spool"), "enabled": logging is not None},
            # 64 connections of 1,000 rows (the memory check) all queue instead of getting a 503
            batching={"max_queue_rows": 100_000},
            mlflow={"tracking_uri": tracking_uri, "model_cache_dir": str(work.parent / "cache"), "export_workers": 8,
                    "granularity": logging or "prediction", "window_seconds": 5.0, "experiment": experiment},
            **({"table": {"enabled": True, "uri": str(work / "table")}} if table else {}),
            **({"grpc": {"port": grpc_port}} if grpc_port else {}))
        gw = GatewayProcess(config=config, workdir=work, port=int(url.rsplit(":", 1)[1]),
                            args=["--workers", str(workers)] if workers > 1 else [])
        return gw.start(timeout=180)

    return start


def setups(mlserver: Path | None) -> list[Setup]:
    single_form = Load("/predict", FORM, "application/x-www-form-urlencoded")
    gateway_batches = {OIP_100: oip_batch(GATEWAY_OIP, 100), OIP_1000: oip_batch(GATEWAY_OIP, 1000),
                       SPLIT_100: split_batch()}
    out = [
        Setup("bare", single_form, start=start_bare),
        Setup("mlflow-serve", Load("/invocations", _split([ROW]), "application/json"), {SPLIT_100: split_batch()},
              start=start_mlflow_serve),
        Setup("gw-prediction", single_form, {}, "prediction", gateway_starter("prediction")),
        Setup("gw-window", single_form, gateway_batches, "window", gateway_starter("window"),
              memory=oip_batch(GATEWAY_OIP, 1000)),
        Setup("gw-off", single_form, gateway_batches, None, gateway_starter(None)),
        # The window log into the Delta inference table ([table] enabled): each window's rows appended
        # to <work>/table/predictions, its MLflow run holding the summary and a dataset input.
        Setup("gw-table", single_form, gateway_batches, "window", gateway_starter("window", table=True)),
        # Two worker processes: as many as MLServer runs by default (its HTTP process and one inference
        # worker process). Batches only.
        Setup("gw-window-2p", None, gateway_batches, "window", gateway_starter("window", 2)),
        Setup("gw-off-2p", None, gateway_batches, None, gateway_starter(None, 2)),
        Setup("gw-table-2p", None, gateway_batches, "window", gateway_starter("window", 2, table=True),
              memory=oip_batch(GATEWAY_OIP, 1000)),
        # Only when asked for (--setups seed): the seed document's design, a synchronous MLflow run
        # inside every request; tens of requests/s.
        Setup("seed", single_form, start=start_seed),
    ]
    if mlserver is not None:
        out.insert(1, Setup("mlserver", Load(MLSERVER_OIP, _oip([ROW]), "application/json"),
                            {OIP_100: oip_batch(MLSERVER_OIP, 100), OIP_1000: oip_batch(MLSERVER_OIP, 1000)},
                            start=lambda w, t, u: start_mlserver(w, t, u, mlserver)))
    return out
