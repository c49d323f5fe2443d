"""Benchmark: the gateway with its prediction log against the same gateway without it, and against
the seed's design (a synchronous MLflow run inside every request). All three in one run, each with
its own fresh stock `mlflow server`, each driven by wrk at the same concurrency.

    python -m experiments.bench [--seconds 10] [--connections 8] [--skip-seed] [--skip-window]

Prints a table and writes JSON under var/bench/. Ratios are against (b), measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from experiments.local_stack import (
    ROOT,
    GatewayProcess,
    MlflowServer,
    free_port,
    train_models,
    wait_http,
    write_config,
)

FORM = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = "{FORM}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


@dataclass
class ScenarioResult:
    name: str
    wrk: WrkResult
    served: int | None = None
    runs_in_mlflow: int | None = None
    distinct_request_ids: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    drain_seconds: float | None = None
    drain_runs_per_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("wrk not found; installing it with apt-get", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("error: wrk could not be installed")
    return path


def _to_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {value!r}")
    number, unit = float(m[1]), m[2]
    return number * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, seconds: int, connections: int, script: Path) -> WrkResult:
    out = subprocess.run(
        [ensure_wrk(), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
         "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (total and rps and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return WrkResult(
        requests=int(total[1]), seconds=float(total[2]), rps=float(rps[1]), p50_ms=_to_ms(p50[1]),
        p99_ms=_to_ms(p99[1]), non_2xx=int(non2xx[1]) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


def mlflow_run_stats(tracking_uri: str, experiment: str = "iris-flower-prediction") -> tuple[int, int, int]:
    """(runs, distinct prediction keys, records in window runs) in the experiment, read page by page:
    what MLflow holds, not what the exporter says it sent."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0, 0, 0
    runs, ids, windowed, token = 0, set(), 0, None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=10_000, page_token=token)
        runs += len(page)
        for r in page:
            if r.data.tags.get("granularity") == "window":
                ids.add(r.data.tags.get("window_id"))
                windowed += int(r.data.metrics.get("count", 0))
            else:
                ids.add((r.data.tags.get("request_id"), r.data.tags.get("row_index"), r.data.tags.get("role")))
        token = page.token
        if not token:
            return runs, len(ids), windowed


def _stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/stats", timeout=10).json()  # type: ignore[no-any-return]


def scenario_gateway(work: Path, script: Path, seconds: int, connections: int, logging_on: bool,
                     granularity: str = "prediction", window_seconds: float = 5.0) -> ScenarioResult:
    name = ("(a) gateway, logging on" if granularity == "prediction" else f"(d) gateway, window {window_seconds:g}s") \
        if logging_on else "(b) gateway, logging off"
    print(f"== {name}", file=sys.stderr)
    with MlflowServer(work / "mlflow", workers=None) as server:  # type: ignore[arg-type]
        train_models(server.url)
        config = write_config(work / "gateway.toml", server.url, work / "spool", work / "cache",
                              spool={"dir": str(work / "spool"), "enabled": logging_on},
                              mlflow={"tracking_uri": server.url, "model_cache_dir": str(work / "cache"),
                                      "export_workers": 8, "granularity": granularity,
                                      "window_seconds": window_seconds})
        with GatewayProcess(config=config, workdir=work) as gw:
            lags: list[float] = []
            stop = threading.Event()

            def sample_lag() -> None:
                while not stop.wait(0.5):
                    with contextlib.suppress(Exception):  # sampling is best effort
                        lags.append(float(_stats(gw.url)["spool"]["export_lag_seconds"]))

            sampler = threading.Thread(target=sample_lag, daemon=True)
            if logging_on:
                sampler.start()
            wrk = run_wrk(gw.url + "/predict", seconds, connections, script)
            result = ScenarioResult(name=name, wrk=wrk)
            if not logging_on:
                return result
            stats = _stats(gw.url)
            served = int(stats["requests"]["served"])
            backlog_at_end = int(stats["spool"]["backlog"])
            exported_at_end = int(stats["exporter"]["exported"])
            t0 = time.monotonic()
            while _stats(gw.url)["spool"]["backlog"] > 0:
                if time.monotonic() - t0 > 1800:
                    raise TimeoutError("drain took longer than 30 min")
                time.sleep(0.5)
            drain = time.monotonic() - t0
            stop.set()
            final = _stats(gw.url)
        runs, distinct, windowed = mlflow_run_stats(server.url)
    drained = int(final["exporter"]["exported"]) - exported_at_end
    result.served = served
    result.drain_seconds = round(drain, 1)
    if granularity == "prediction":
        result.runs_in_mlflow = runs
        result.distinct_request_ids = distinct
        result.lost = served - distinct
        result.duplicated = runs - distinct
        result.drain_runs_per_s = round(drained / drain, 1) if drain > 0 else None
    else:
        result.extra["window_runs"] = runs
        result.extra["records_in_window_runs"] = windowed
        result.lost = served - windowed
        result.duplicated = runs - distinct  # two runs for one window id
        result.drain_runs_per_s = round(drained / drain, 1) if drain > 0 else None
    result.extra.update({"backlog_at_end_of_load": backlog_at_end,
                         "max_export_lag_s": round(max(lags), 2) if lags else None,
                         "window_seconds": window_seconds if granularity == "window" else None,
                         "duplicates_avoided": final["exporter"]["duplicates_avoided"],
                         "failed_attempts": final["exporter"]["failed_attempts"]})
    return result


def scenario_seed(work: Path, script: Path, seconds: int, connections: int) -> ScenarioResult:
    name = "(c) seed-style, sync MLflow"
    print(f"== {name}", file=sys.stderr)
    with MlflowServer(work / "mlflow", workers=None) as server:  # type: ignore[arg-type]
        train_models(server.url)
        port = free_port()
        log = open(work / "seed.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "experiments.seed_app", "--port", str(port),
                                 "--tracking-uri", server.url], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/docs", 120, proc)
            wrk = run_wrk(f"http://127.0.0.1:{port}/predict", seconds, connections, script)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
        runs, _, _ = mlflow_run_stats(server.url)
    served = wrk.requests - wrk.non_2xx
    return ScenarioResult(name=name, wrk=wrk, served=served, runs_in_mlflow=runs, distinct_request_ids=None,
                          drain_seconds=0.0, extra={"note": "runs are written inside each request"})


def format_table(results: list[ScenarioResult], baseline: ScenarioResult) -> str:
    head = f"{'scenario':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs (b)':>7} {'served':>7} " \
           f"{'runs':>7} {'lost':>5} {'dup':>4} {'drain s':>8} {'drain/s':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        def cell(v: Any, width: int) -> str:
            return f"{'-' if v is None else v:>{width}}"
        lines.append(
            f"{r.name:<30} {r.wrk.rps:>8.1f} {r.wrk.p50_ms:>8.2f} {r.wrk.p99_ms:>8.2f} "
            f"{r.wrk.rps / baseline.wrk.rps:>6.2f}x {cell(r.served, 7)} "
            f"{cell(r.runs_in_mlflow if r.runs_in_mlflow is not None else r.extra.get('window_runs'), 7)} "
            f"{cell(r.lost, 5)} {cell(r.duplicated, 4)} {cell(r.drain_seconds, 8)} {cell(r.drain_runs_per_s, 8)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per scenario (default %(default)s)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window-seconds", type=float, default=5.0)
    parser.add_argument("--skip-seed", action="store_true")
    parser.add_argument("--skip-window", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"))
    args = parser.parse_args(argv)
    ensure_wrk()
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    with tempfile.TemporaryDirectory(prefix="iris-bench-") as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        baseline = scenario_gateway(root / "b", script, args.seconds, args.connections, logging_on=False)
        results = [scenario_gateway(root / "a", script, args.seconds, args.connections, logging_on=True), baseline]
        if not args.skip_seed:
            results.append(scenario_seed(root / "c", script, args.seconds, args.connections))
        if not args.skip_window:
            results.append(scenario_gateway(root / "d", script, args.seconds * 2, args.connections, logging_on=True,
                                            granularity="window", window_seconds=args.window_seconds))
    table = format_table(results, baseline)
    print(table)
    a = results[0]
    summary = {"logging_on_vs_off": round(a.wrk.rps / baseline.wrk.rps, 3)}
    seed = next((r for r in results if r.name.startswith("(c)")), None)
    if seed:
        summary["logging_on_vs_seed"] = round(a.wrk.rps / seed.wrk.rps, 1)
    window = next((r for r in results if r.name.startswith("(d)")), None)
    if window:
        summary["window_max_lag_s"] = window.extra["max_export_lag_s"]
        summary["window_lag_limit_s"] = 2 * args.window_seconds
    print("\n" + ", ".join(f"{k} = {v}" for k, v in summary.items()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "summary": summary, "table": table,
                                "results": [asdict(r) for r in results]}, indent=2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
