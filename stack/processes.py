"""Start real local processes (an ``mlflow server``, a gateway) for the benchmark and the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> dict[int, list[str]]:
    """Every process below ``pid`` (children, theirs, ...), with its command line, read from /proc."""
    parents: dict[int, int] = {}
    commands: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, list[str]] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = commands[child]
                frontier.append(child)
    return found


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None,
              ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with code {proc.returncode}")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code in ok:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s ({last})")


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class MlflowServer:
    """``mlflow server`` on a free port with a SQLite (or given) backend under ``workdir``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    backend_uri: str | None = None
    workers: int | None = 1  # None: the server's own default (a "stock" server)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        backend = self.backend_uri or f"sqlite:///{self.workdir / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self._log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             *(["--workers", str(self.workers)] if self.workers else []), "--backend-store-uri", backend,
             "--artifacts-destination", str(self.workdir / "artifacts")],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.workdir,
        )
        wait_http(self.url + "/health", timeout, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_group(self.proc, sig)
        if self._log:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The secrets every test gateway process gets, as a deployment's secret store would give them: the label
# pipelines' token (tests that post /feedback as a pipeline send FEEDBACK_AUTH) and the keys replicas share.
FEEDBACK_TOKEN = "label-pipeline-token-0123456789"
FEEDBACK_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
SECRETS = {"GATEWAY_FEEDBACK_TOKEN": FEEDBACK_TOKEN, "GATEWAY_RECEIPT_KEY": "receipt-key-of-the-tests-0123456",
           "GATEWAY_PSEUDONYM_KEY": "pseudonym-key-of-the-tests-0123"}


@dataclass
class GatewayProcess:
    """``python -m gateway`` on a free port, with a config file and environment overrides."""

    config: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"gateway-{self.port}.log"

    def start(self, wait_ready: bool = True, timeout: float = 90) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the config file decides
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(self.config), "--port", str(self.port), *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**env, **SECRETS, **self.env},
            start_new_session=True, cwd=ROOT,
        )
        if wait_ready:
            wait_http(self.url + "/readyz", timeout, self.proc)
        return self

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.proc is not None:
            stop_group(self.proc, sig, timeout)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc else None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(path: Path, tracking_uri: str, spool_dir: Path, cache_dir: Path, **sections: dict[str, Any]) -> Path:
    """A gateway TOML with both IrisClassifier versions; ``sections`` override keys per section."""
    base: dict[str, dict[str, Any]] = {
        # retry_max_seconds 2: after an outage the fault tests' backlogs move again within 2 s, not 30
        "mlflow": {"tracking_uri": tracking_uri, "model_cache_dir": str(cache_dir), "export_workers": 4,
                   "retry_max_seconds": 2.0},
        "routing": {"mode": "weighted", "salt": "iris-ab"},
        "shadow": {"primary": "v1.0", "candidate": "v2.0", "sample_rate": 1.0},
        "spool": {"dir": str(spool_dir), "shutdown_grace_seconds": 10.0},
    }
    variants = sections.pop("variants", None)
    if variants is None:  # the embedded default: both IrisClassifier versions, as config/gateway.toml
        variants = [
            {"name": "v1.0", "model_uri": "models:/IrisClassifier/1", "weight": 0.5},
            {"name": "v2.0", "model_uri": "models:/IrisClassifier/2", "weight": 0.5},
        ]
        bounds = {c: {"gt": 0, "le": 100} for c in ("sepal_length", "sepal_width", "petal_length", "petal_width")}
        base["model"] = {"class_names": ["Setosa", "Versicolor", "Virginica"], "bounds": bounds}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{_key(k)} = {_toml(v)}" for k, v in values.items()]
        lines.append("")
    for v in variants:
        lines.append("[[variants]]")
        lines += [f"{k} = {_toml(val)}" for k, val in v.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml(key)


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def train_models(tracking_uri: str) -> None:
    subprocess.run([sys.executable, "-m", "models.train", "--tracking-uri", tracking_uri], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri})


CONSTANT_MODEL = "IrisConstant"


def register_constant_model(tracking_uri: str) -> str:
    """A registered model with the iris signature that always answers class 0 (a broken candidate);
    registered once per tracking server. Returns its models:/ URI."""
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier

    from models.train import FEATURES, pip_requirements

    client = MlflowClient(tracking_uri=tracking_uri)
    if client.search_model_versions(f"name = '{CONSTANT_MODEL}'"):
        return f"models:/{CONSTANT_MODEL}/1"
    iris = load_iris()
    x = pd.DataFrame(iris.data, columns=FEATURES)
    model = DummyClassifier(strategy="constant", constant=0).fit(x, iris.target)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("iris-constant-training")
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x.head(5), model.predict(x.head(5))),
                                 registered_model_name=CONSTANT_MODEL, pip_requirements=pip_requirements())
    return f"models:/{CONSTANT_MODEL}/1"


def runs_by_request(tracking_uri: str, experiment: str = "iris-flower-prediction") -> dict[tuple[str, str], list[Any]]:
    """Every prediction run in the experiment, keyed by (request_id, role), read page by page."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out: dict[tuple[str, str], list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string="tags.granularity = 'prediction'",
                                  max_results=1000, page_token=token)
        for run in page:
            key = (run.data.tags["request_id"], run.data.tags["role"])
            out.setdefault(key, []).append(run)
        token = page.token
        if not token:
            return out


def local_models_config(work: Path, local_models: dict[str, str], tracking_uri: str = "http://127.0.0.1:9",
                        cache: Path | None = None, **sections: dict[str, Any]) -> Path:
    """A gateway TOML serving the local iris model files (no registry), the shipped [model] section,
    the spool's export off unless ``sections`` say otherwise."""
    from stack.iris import IRIS_MODEL

    variants = [{"name": n, "model_uri": p, "weight": 0.5} for n, p in local_models.items()]
    spool = {"export": False, **sections.pop("spool", {})}
    return write_config(work / "gateway.toml", tracking_uri, work / "spool", cache or work / "cache",
                        variants=variants, model=IRIS_MODEL, spool=spool, **sections)
