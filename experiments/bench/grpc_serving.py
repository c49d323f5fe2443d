"""`make bench`, gRPC: the Open Inference Protocol over gRPC, the gateway against MLServer's gRPC on
the same registered model, and against its own REST, in one run.

    python -m experiments.bench.grpc_serving [--seconds 8] [--setups mlserver,gw-window,gw-window-2p]

Setups (each a server process on free ports, one after the other, on this machine):
    mlserver        MLServer with its scikit-learn runtime (its HTTP/gRPC process and one inference
                    worker), gRPC
    gw-window       the gateway, one process, window log on (every row to MLflow), gRPC and REST
    gw-window-2p    the same with two worker processes (one exporter), gRPC and REST

Loads, each at 8 connections: one [N, 4] FP64 tensor of 1, 100 and 1,000 rows; over gRPC as
Triton's client sends it (raw_input_contents; h2load, experiments/bench/grpc_load.py), over REST
as the JSON body the serving bench sends (wrk). Targets, window log on: the gateway's gRPC against
MLServer's, 1 row >= 1.2x, 100 rows >= 1.5x, 1,000 rows >= 1.0x rows/s; every answered row in
MLflow once. Writes var/bench/grpc-<time>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.bench.grpc_load import GrpcResult, check_call, ensure_h2load, infer_message, run_grpc
from experiments.bench.peers import GATEWAY_OIP, Setup, gateway_starter, mlserver_venv, oip_batch, start_mlserver
from experiments.bench.serving import integrity_of, wait_exported
from experiments.bench.wrk import _batch_rows, ensure_wrk, run_wrk
from stack.processes import ROOT, MlflowServer, free_port, train_models

ROWS = (1, 100, 1000)
CONNECTIONS = 8
TARGETS = {1: 1.2, 100: 1.5, 1000: 1.0}


@dataclass(frozen=True)
class Point:
    setup: str
    transport: str  # grpc | rest
    rows: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _grpc_points(name: str, target: str, model: str, seconds: int) -> list[Point]:
    out = []
    for rows in ROWS:
        message = infer_message(model, _batch_rows(rows))
        check_call(target, message, rows)
        run_grpc(target, message, CONNECTIONS, 1)  # warm-up, not reported
        r: GrpcResult = run_grpc(target, message, CONNECTIONS, seconds)
        if r.errors:
            print(f"   {name} gRPC {rows} rows: {r.errors} calls without HTTP/2 200", file=sys.stderr)
        out.append(Point(name, "grpc", rows, r.rps, r.rps * rows, r.p50_ms, r.p99_ms, r.errors))
        print(f"   {name:<13} grpc {rows:>5} rows {r.rps:9.1f} req/s {r.rps * rows:11.0f} rows/s p50 {r.p50_ms:7.2f} ms"
              f"  p99 {r.p99_ms:7.2f} ms", file=sys.stderr)
        time.sleep(1)
    return out


def _rest_points(name: str, url: str, seconds: int, scratch: Path) -> list[Point]:
    out = []
    for rows in ROWS[1:]:
        load = oip_batch(GATEWAY_OIP, rows)
        script = scratch / f"{name}-{rows}.lua"
        script.write_text(load.script)
        load.check(url)
        run_wrk(url + load.path, 1, CONNECTIONS, script)
        w = run_wrk(url + load.path, seconds, CONNECTIONS, script)
        out.append(Point(name, "rest", rows, w.rps, w.rps * rows, w.p50_ms, w.p99_ms, w.non_2xx + w.socket_errors))
        print(f"   {name:<13} rest {rows:>5} rows {w.rps:9.1f} req/s {w.rps * rows:11.0f} rows/s p50 {w.p50_ms:7.2f} ms"
              f"  p99 {w.p99_ms:7.2f} ms", file=sys.stderr)
        time.sleep(1)
    return out


def _ratio(points: list[Point], a: tuple[str, str], b: tuple[str, str], rows: int) -> float | None:
    def rate(key: tuple[str, str]) -> float | None:
        found = [p.rows_per_s for p in points if (p.setup, p.transport, p.rows) == (*key, rows)]
        return statistics.fmean(found) if found else None

    x, y = rate(a), rate(b)
    return round(x / y, 2) if x and y else None


def report(points: list[Point], integrity: list[dict[str, object]], started: str, seconds: int) -> str:
    lines = [f"Measured {started}; {os.cpu_count()} cores, {seconds} s a point, {CONNECTIONS} connections.", "",
             "| setup | transport | rows a call | req/s | rows/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {p.setup} | {p.transport} | {p.rows:,} | {p.rps:,.1f} | {p.rows_per_s:,.0f} | {p.p50_ms:.2f} | "
              f"{p.p99_ms:.2f} | {p.errors} |" for p in points]
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    for setup in ("gw-window", "gw-window-2p"):
        for rows, goal in TARGETS.items():
            v = _ratio(points, (setup, "grpc"), ("mlserver", "grpc"), rows)
            met = "-" if v is None else "yes" if v >= goal else "NO"
            lines.append(f"| {setup} gRPC / MLServer gRPC, {rows:,} rows, rows/s | {v if v is not None else '-'} | "
                         f">= {goal} | {met} |")
        for rows in ROWS[1:]:
            v = _ratio(points, (setup, "grpc"), (setup, "rest"), rows)
            lines.append(f"| {setup} gRPC / its REST, {rows:,} rows | {v if v is not None else '-'} | (reported) | - |")
    bad = sum(int(i["lost"]) + int(i["duplicated"]) for i in integrity) if integrity else None  # type: ignore[call-overload]
    lines.append(f"| lost + duplicated, gateway setups | {bad if bad is not None else '-'} | == 0 | "
                 f"{'-' if bad is None else 'yes' if bad == 0 else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.grpc_serving",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="load per point (default %(default)s)")
    parser.add_argument("--setups", default="mlserver,gw-window,gw-window-2p")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"))
    args = parser.parse_args(argv)
    ensure_wrk()
    ensure_h2load()
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in args.setups.split(",") if s]
    venv = mlserver_venv(out / "venvs") if "mlserver" in wanted else None
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    points: list[Point] = []
    integrity: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-grpc-bench-") as tmp:
        root = Path(tmp)
        with MlflowServer(root / "mlflow", workers=None) as server:  # type: ignore[arg-type]
            train_models(server.url)
            for name in wanted:
                print(f"== {name}", file=sys.stderr)
                url, grpc_port = f"http://127.0.0.1:{free_port()}", free_port()
                work = root / name
                if name == "mlserver":
                    assert venv is not None
                    service = start_mlserver(work, server.url, url, venv, grpc_port=grpc_port)
                    try:
                        points += _grpc_points(name, f"127.0.0.1:{grpc_port}", "iris", args.seconds)
                    finally:
                        service.stop()
                    continue
                workers = 2 if name.endswith("-2p") else 1
                gw = gateway_starter("window", workers, grpc_port=grpc_port)(work, server.url, url)
                try:
                    points += _grpc_points(name, f"127.0.0.1:{grpc_port}", "IrisClassifier", args.seconds)
                    points += _rest_points(name, url, args.seconds, root)
                    served, drain = wait_exported(url, 60.0)
                finally:
                    gw.stop()
                setup = Setup(name, None, {}, "window")
                integrity.append(asdict(integrity_of(setup, 1, work, server.url, served, drain, [])))
    text = report(points, integrity, started, args.seconds)
    print(text)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    (out / f"grpc-{stamp}.md").write_text(text)
    (out / f"grpc-{stamp}.json").write_text(json.dumps({"points": [asdict(p) for p in points],
                                                        "integrity": integrity}, indent=1))
    print(f"written: {out / f'grpc-{stamp}.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
