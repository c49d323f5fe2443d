"""The replicas' stack on one machine: PostgreSQL-backed MLflow, three gateways with their own spools
and the routing state in MLflow, HAProxy in front, Prometheus, the standalone rollout controller; and
traffic through the load balancer. The scenarios are in replicas.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from stack.processes import (
    FEEDBACK_AUTH,
    ROOT,
    GatewayProcess,
    MlflowServer,
    free_port,
    register_constant_model,
    train_models,
    wait_http,
    write_config,
)

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
TOKEN = "replicas-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CANDIDATE = "v3-constant"
ROWS = [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.2, "sepal_width": 2.9, "petal_length": 4.3, "petal_width": 1.3},
        {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}]
TRUE_CLASS = [0, 1, 2]  # the rows' iris species (setosa, versicolor, virginica)


def psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql],
                   check=True, capture_output=True)


class HelperFailed(RuntimeError):
    """A helper process exited or never answered; ``port_taken`` when its log says its port was in use."""

    def __init__(self, message: str, port_taken: bool) -> None:
        super().__init__(message)
        self.port_taken = port_taken


@dataclass
class Process:
    """A helper process (HAProxy, Prometheus, the controller) with its log in the work directory."""

    name: str
    argv: list[str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> Process:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **self.env}, start_new_session=True)
        return self

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def wait_ready(self, url: str, timeout: float) -> None:
        try:
            wait_http(url, timeout, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            if self._log is not None:
                self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise HelperFailed(f"{self.name}: {exc}; the end of {self.log_path}:\n{tail}",
                               port_taken="address already in use" in tail.lower()) from exc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class ReplicaStack:
    workdir: Path
    replicas: int = 3
    postgres: str = POSTGRES
    database: str = field(default_factory=lambda: f"mlflow_replicas_{uuid.uuid4().hex[:8]}")
    mlflow: MlflowServer | None = None
    gateways: list[GatewayProcess] = field(default_factory=list)
    helpers: dict[str, Process] = field(default_factory=dict)
    lb_port: int = 0  # the helpers' ports: chosen as they start (_start_helpers)
    prometheus_port: int = 0
    controller_port: int = 0
    granularity: str = "window"  # a run per 2 s window per replica: drains in seconds on two cores
    config: Path | None = None

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def start(self) -> ReplicaStack:
        for tool in ("psql", "haproxy", "prometheus"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is missing: `make system-deps` installs it (Debian's package)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        psql(f"CREATE DATABASE {self.database}")
        self.mlflow = MlflowServer(self.workdir / "mlflow", backend_uri=f"{self.postgres}/{self.database}",
                                   workers=2).start()
        train_models(self.mlflow.url)
        constant = register_constant_model(self.mlflow.url)
        self.config = write_config(
            self.workdir / "gateway.toml", self.mlflow.url, self.workdir / "unused-spool", self.workdir / "cache",
            mlflow={"granularity": self.granularity, "window_seconds": 2.0},
            state={"backend": "mlflow", "poll_seconds": 1.0},
            rollout={"interval_seconds": 1.0},
            # the controller's Prometheus and port come from its environment, chosen when it starts
            controller={"metrics_host": "127.0.0.1", "accuracy_refresh_seconds": 2.0},
            variants=[{"name": "v1.0", "model_uri": "models:/IrisClassifier/1", "weight": 0.5},
                      {"name": "v2.0", "model_uri": "models:/IrisClassifier/2", "weight": 0.5},
                      {"name": CANDIDATE, "model_uri": constant, "weight": 0.0}])
        # One config file for all: a replica's own settings are its spool and cache, from the environment.
        for i in range(self.replicas):
            home = self.workdir / f"replica-{i}"
            self.gateways.append(GatewayProcess(config=self.config, workdir=home, env={
                "GATEWAY_SPOOL__DIR": str(home / "spool"), "GATEWAY_MLFLOW__MODEL_CACHE_DIR": str(home / "cache"),
                "GATEWAY_ADMIN_TOKEN": TOKEN}))
        for gw in self.gateways:
            gw.start(wait_ready=False)
        for gw in self.gateways:
            assert gw.proc is not None
            wait_http(gw.url + "/readyz", 120, gw.proc)
        self._start_helpers()
        return self

    def _start_helpers(self, attempts: int = 3) -> None:
        """Prometheus, HAProxy and the controller, on ports chosen just before they bind.

        A port found free when the stack was built can be taken minutes later, by an outgoing
        connection's ephemeral port among others; a helper that finds its port taken is started
        again, with the others, on new ports."""
        for attempt in range(1, attempts + 1):
            self.lb_port, self.prometheus_port, self.controller_port = free_port(), free_port(), free_port()
            try:
                self._start_controller()
                self._start_prometheus()
                self._start_haproxy()
                return
            except HelperFailed as exc:
                for name in ("controller", "haproxy", "prometheus"):
                    if name in self.helpers:
                        self.helpers.pop(name).stop()
                if not exc.port_taken or attempt == attempts:
                    raise

    def _start_controller(self) -> None:
        assert self.config is not None
        controller = Process("controller", [sys.executable, "-m", "gateway.rollout", "--config", str(self.config)],
                             self.workdir, env={"GATEWAY_CONTROLLER__PROMETHEUS_URL": self.prometheus_url,
                                                "GATEWAY_CONTROLLER__METRICS_PORT": str(self.controller_port)})
        self.helpers["controller"] = controller.start()
        controller.wait_ready(f"http://127.0.0.1:{self.controller_port}/metrics", 60)

    def _start_prometheus(self) -> None:
        targets = ", ".join(f"'127.0.0.1:{gw.port}'" for gw in self.gateways)
        (self.workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n"
            f"  - job_name: gateway\n    static_configs:\n      - targets: [{targets}]\n"
            "  - job_name: rollout-controller\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.controller_port}']\n")
        prom = Process("prometheus", [str(shutil.which("prometheus")),
                                      f"--config.file={self.workdir / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.prometheus_port}"], self.workdir)
        self.helpers["prometheus"] = prom.start()
        prom.wait_ready(self.prometheus_url + "/-/ready", 60)

    def _start_haproxy(self) -> None:
        servers = "\n".join(f"  server r{i} 127.0.0.1:{gw.port} check" for i, gw in enumerate(self.gateways))
        (self.workdir / "haproxy.cfg").write_text(f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
  retry-on conn-failure
frontend gateway
  bind 127.0.0.1:{self.lb_port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2
{servers}
""")
        subprocess.run(["haproxy", "-c", "-f", str(self.workdir / "haproxy.cfg")], check=True, capture_output=True)
        lb = Process("haproxy", ["haproxy", "-db", "-f", str(self.workdir / "haproxy.cfg")], self.workdir)
        self.helpers["haproxy"] = lb.start()
        lb.wait_ready(self.lb_url + "/readyz", 60)

    def stop(self) -> None:
        for name in ("controller", "haproxy", "prometheus"):
            if name in self.helpers:
                self.helpers[name].stop()
        for gw in self.gateways:
            gw.stop()
        if self.mlflow is not None:
            self.mlflow.stop()
        with contextlib.suppress(subprocess.CalledProcessError):
            psql(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    def __enter__(self) -> ReplicaStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- traffic through the load balancer ------------------------------------------------------------------

@dataclass
class Answer:
    at: float  # time.monotonic() when the answer arrived
    status: int
    variant: str | None = None
    request_id: str | None = None


class Load:
    """Clients posting to the load balancer until stopped; every answer is kept."""

    def __init__(self, url: str, clients: int = 4, feedback: bool = False) -> None:
        self.url = url
        self.feedback = feedback  # also send each answer's true label, through the load balancer too
        self.answers: list[Answer] = []
        self.failures: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()  # "local" (the answering replica) | "remote" | "HTTP nnn"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, i: int) -> None:
        n = i
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                n += 1
                try:
                    r = client.post("/predict", json=ROWS[n % len(ROWS)])
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures[type(exc).__name__] += 1
                    continue
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                answer = Answer(time.monotonic(), r.status_code, body.get("model_version"), body.get("request_id"))
                with self._lock:
                    self.answers.append(answer)
                if self.feedback and r.status_code == 200:
                    self._label(client, answer, TRUE_CLASS[n % len(ROWS)])

    def _label(self, client: httpx.Client, answer: Answer, true_class: int) -> None:
        try:
            r = client.post("/feedback", json={"request_id": answer.request_id, "true_label": true_class},
                            headers=FEEDBACK_AUTH)  # a label pipeline: the token works on every replica
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        else:
            outcome = f"HTTP {r.status_code}"
            if r.status_code == 202:
                outcome = "remote" if "joined" in r.json() else "local"
        with self._lock:
            self.labels[outcome] += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= t]


def weights_of(url: str) -> dict[str, float]:
    return dict(httpx.get(url + "/variants", timeout=5).json()["weights"])
