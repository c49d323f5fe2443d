"""make bench: the gateway side by side with the other ways to serve the same registered model.

Every setup serves ``models:/IrisClassifier/1`` in one process, alone on the machine, in alternating
rounds, driven by wrk at c=1, 8 and 64 with the seed's one-row input in the setup's own protocol:

    bare            a bare FastAPI app around the model (experiments.bench.bare_app), no logging
    mlserver        MLServer with its scikit-learn runtime, Open Inference Protocol (its own venv)
    mlflow-serve    ``mlflow models serve``
    gw-prediction   the gateway, one MLflow run per prediction (the seed's schema)
    gw-window       the gateway, one MLflow run per window of predictions
    gw-off          the gateway with its prediction log off

Then a 100-row batch through each setup's batch endpoint (rows/s). Ratios are against the bare app of
the same round. After a logging setup's load, its records are counted in MLflow once exported: lost
and duplicated must both be 0.

    python -m experiments.bench [--seconds 8] [--rounds 2] [--setups bare,gw-prediction,...]

``--setups seed`` adds the seed document's own design (one synchronous MLflow run inside every
request, experiments/bench/seed_app.py) for comparison; it is not in the default run.

Prints the tables and the targets of the fast-path issue; writes JSON and Markdown under var/bench/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from experiments.bench.peers import Setup, mlserver_venv, setups
from experiments.bench.wrk import BATCH_ROWS, WrkResult, ensure_wrk, run_wrk
from gateway.spool.schema import RowState
from tests.harness.processes import ROOT, MlflowServer, free_port, train_models

CONCURRENCY = (1, 8, 64)


@dataclass
class Point:
    setup: str
    round: int
    connections: int
    load: str  # "single" | "batch"
    rows: int
    wrk: WrkResult

    @property
    def rows_per_s(self) -> float:
        return self.wrk.rps * self.rows


@dataclass
class Integrity:
    setup: str
    round: int
    served_rows: int
    in_mlflow: int
    runs: int
    lost: int
    duplicated: int
    pending: int
    drain_seconds: float
    max_export_lag_s: float | None


def mlflow_run_stats(tracking_uri: str, experiment: str) -> tuple[int, set[Any], int]:
    """(runs, distinct prediction keys, records in window runs) in the experiment, read page by page:
    what MLflow holds, not what the exporter says it sent."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0, set(), 0
    runs, ids, windowed, token = 0, set(), 0, None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=10_000, page_token=token)
        runs += len(page)
        for r in page:
            if r.data.tags.get("granularity") == "window":
                ids.add(r.data.tags.get("window_id"))
                windowed += int(r.data.metrics.get("count", 0))
            else:
                ids.add((r.data.tags.get("request_id"), int(r.data.tags.get("row_index", 0)),
                         r.data.tags.get("role")))
        token = page.token
        if not token:
            return runs, ids, windowed


def pending_in_spool(spool_dir: Path) -> set[tuple[str, int, str]]:
    """Records still waiting in a stopped gateway's spool: kept for its next start, not lost."""
    import sqlite3

    path = spool_dir / "predictions.sqlite3"
    if not path.exists():
        return set()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT request_id, row_index, role FROM predictions WHERE status != ?",
                            (int(RowState.DONE),)).fetchall()
    return {(str(r), int(i), str(role)) for r, i, role in rows}


# -- one setup, one round -------------------------------------------------------------------------

def _stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/stats", timeout=10).json()  # type: ignore[no-any-return]


def run_setup(setup: Setup, rnd: int, work: Path, tracking_uri: str, seconds: int, scripts: Path,
              drain_timeout: float) -> tuple[list[Point], Integrity | None]:
    url = f"http://127.0.0.1:{free_port()}"
    work = work / f"{setup.name}-r{rnd}"
    print(f"== round {rnd}: {setup.name}", file=sys.stderr)
    assert setup.start is not None
    service = setup.start(work, tracking_uri, url)
    points: list[Point] = []
    lags: list[float] = []
    stop = threading.Event()

    def sample_lag() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):  # sampling is best effort
                lags.append(float(_stats(url)["spool"]["export_lag_seconds"]))

    sampler = threading.Thread(target=sample_lag, daemon=True)
    if setup.logging == "window":
        sampler.start()
    try:
        loads = [("single", setup.single)] + ([("batch", setup.batch)] if setup.batch else [])
        for kind, load in loads:
            script = scripts / f"{setup.name}-{kind}.lua"
            script.write_text(load.script)
            load.check(url)
            run_wrk(url + load.path, 1, 8, script)  # warm-up, not reported
            for c in CONCURRENCY if kind == "single" else (8,):
                wrk = run_wrk(url + load.path, seconds, c, script)
                print(f"   {kind:<6} c={c:<3} {wrk.rps:9.1f} req/s  p50 {wrk.p50_ms:6.2f} ms  "
                      f"p99 {wrk.p99_ms:6.2f} ms  non-2xx {wrk.non_2xx}", file=sys.stderr)
                points.append(Point(setup.name, rnd, c, kind, load.rows, wrk))
        served, drain = _wait_exported(url, drain_timeout) if setup.logging else (0, 0.0)
    finally:
        stop.set()
        service.stop()
    if not setup.logging:
        return points, None
    return points, _integrity(setup, rnd, work, tracking_uri, served, drain, lags)


def _wait_exported(url: str, timeout: float) -> tuple[int, float]:
    """(rows answered, seconds waited) once the spool is exported, or ``timeout`` passed. Requests
    still in flight when wrk stops are answered (and logged) after it, so the count is read once it
    stops moving."""
    served, t0 = -1, time.monotonic()
    while (now := int(_stats(url)["requests"]["rows_served"])) != served and time.monotonic() - t0 < 30:
        served = now
        time.sleep(0.5)
    t0 = time.monotonic()
    while _stats(url)["spool"]["backlog"] > 0 and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
    return served, time.monotonic() - t0


def _integrity(setup: Setup, rnd: int, work: Path, tracking_uri: str, served: int, drain: float,
               lags: list[float]) -> Integrity:
    """After the gateway stopped: every row it answered is in MLflow or still in its spool (which the
    next start exports), and no row has two runs. Per-prediction export into a stock MLflow server
    runs at tens of runs/s, so a bench-sized backlog is not waited for to the end."""
    runs, keys, windowed = mlflow_run_stats(tracking_uri, f"bench-{work.name}")
    pending = pending_in_spool(work / "spool")
    if setup.logging == "window":
        accounted, in_mlflow, duplicated = windowed + len(pending), windowed, runs - len(keys)
    else:
        accounted, in_mlflow, duplicated = len(keys | pending), len(keys), runs - len(keys)
    print(f"   answered {served} rows: {in_mlflow} in MLflow ({runs} runs), {len(pending)} still in the spool; "
          f"waited {drain:.1f}s for the export", file=sys.stderr)
    return Integrity(setup.name, rnd, served, in_mlflow, runs, lost=served - accounted, duplicated=duplicated,
                     pending=len(pending), drain_seconds=round(drain, 1),
                     max_export_lag_s=round(max(lags), 2) if lags else None)


# -- the report -----------------------------------------------------------------------------------

def summarise(points: list[Point]) -> dict[tuple[str, str, int], dict[str, float]]:
    """Per (setup, load, connections): the mean over rounds of req/s, rows/s, p50 and p99, and non-2xx summed."""
    groups: dict[tuple[str, str, int], list[Point]] = {}
    for p in points:
        groups.setdefault((p.setup, p.load, p.connections), []).append(p)
    return {key: {"rps": statistics.fmean(p.wrk.rps for p in ps),
                  "rows_per_s": statistics.fmean(p.rows_per_s for p in ps),
                  "p50_ms": statistics.fmean(p.wrk.p50_ms for p in ps),
                  "p99_ms": statistics.fmean(p.wrk.p99_ms for p in ps),
                  "non_2xx": sum(p.wrk.non_2xx + p.wrk.socket_errors for p in ps),
                  "rounds": len(ps)} for key, ps in groups.items()}


def tables(summary: dict[tuple[str, str, int], dict[str, float]], integrity: list[Integrity],
           names: list[str]) -> str:
    lines = ["| setup | c | req/s | p50 ms | p99 ms | vs bare | p99 vs bare | non-2xx |",
             "|---|---|---|---|---|---|---|---|"]
    for c in CONCURRENCY:
        bare = summary.get(("bare", "single", c))
        for name in names:
            s = summary.get((name, "single", c))
            if s is None:
                continue
            ratio = f"{s['rps'] / bare['rps']:.2f}" if bare else "-"
            p99 = f"{s['p99_ms'] / bare['p99_ms']:.2f}" if bare and bare["p99_ms"] else "-"
            lines.append(f"| {name} | {c} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {ratio} | "
                         f"{p99} | {s['non_2xx']:.0f} |")
    lines += ["", f"| setup | {BATCH_ROWS}-row batch, c=8: rows/s | req/s | p99 ms | non-2xx |",
              "|---|---|---|---|---|"]
    for name in names:
        s = summary.get((name, "batch", 8))
        if s is not None:
            lines.append(f"| {name} | {s['rows_per_s']:.0f} | {s['rps']:.0f} | {s['p99_ms']:.2f} | "
                         f"{s['non_2xx']:.0f} |")
    lines += ["", "| setup | round | rows answered | in MLflow | runs | still in spool | lost | duplicated | "
              "export waited s | max lag s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i in integrity:
        lag = "-" if i.max_export_lag_s is None else i.max_export_lag_s
        lines.append(f"| {i.setup} | {i.round} | {i.served_rows} | {i.in_mlflow} | {i.runs} | {i.pending} | "
                     f"{i.lost} | {i.duplicated} | {i.drain_seconds} | {lag} |")
    return "\n".join(lines)


def targets(summary: dict[tuple[str, str, int], dict[str, float]], integrity: list[Integrity],
            window_seconds: float = 5.0) -> list[tuple[str, float | None, str, bool | None]]:
    """The fast-path issue's targets: (what, measured, goal, met)."""
    def ratio(a: str, b: str, c: int, key: str = "rps") -> float | None:
        x, y = summary.get((a, "single", c)), summary.get((b, "single", c))
        return round(x[key] / y[key], 2) if x and y and y[key] else None

    out: list[tuple[str, float | None, str, bool | None]] = []

    def check(what: str, value: float | None, goal: str, ok: Callable[[float], bool]) -> None:
        out.append((what, value, goal, None if value is None else ok(value)))

    check("gw-prediction / bare, c=1", ratio("gw-prediction", "bare", 1), ">= 0.9", lambda v: v >= 0.9)
    check("gw-prediction / bare, c=8", ratio("gw-prediction", "bare", 8), ">= 1.0", lambda v: v >= 1.0)
    check("gw-prediction / bare, c=64", ratio("gw-prediction", "bare", 64), ">= 1.0", lambda v: v >= 1.0)
    check("gw-prediction / mlserver, c=8", ratio("gw-prediction", "mlserver", 8), ">= 1.2", lambda v: v >= 1.2)
    for c in CONCURRENCY:
        check(f"gw-prediction / mlflow-serve, c={c}", ratio("gw-prediction", "mlflow-serve", c), ">= 3",
              lambda v: v >= 3)
    for c in CONCURRENCY:
        check(f"gw-prediction p99 / bare p99, c={c}", ratio("gw-prediction", "bare", c, "p99_ms"), "<= 1.5",
              lambda v: v <= 1.5)
    batch = summary.get(("gw-window", "batch", 8))
    check(f"gw-window {BATCH_ROWS}-row batch rows/s", round(batch["rows_per_s"]) if batch else None, ">= 20000",
          lambda v: v >= 20000)
    lag = max((i.max_export_lag_s or 0.0 for i in integrity if i.setup == "gw-window"), default=None)
    check("gw-window max export lag s", lag, f"< {2 * window_seconds:g}", lambda v: v < 2 * window_seconds)
    bad = sum(i.lost + i.duplicated for i in integrity) if integrity else None
    check("lost + duplicated, every logging setup", bad, "== 0", lambda v: v == 0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per point (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--setups", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to let a logging setup export after its load (default %(default)s)")
    parser.add_argument("--skip-mlserver", action="store_true", help="no MLServer venv install")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"))
    args = parser.parse_args(argv)
    ensure_wrk()
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in args.setups.split(",") if s]
    venv = None if args.skip_mlserver or (wanted and "mlserver" not in wanted) else mlserver_venv(out / "venvs")
    chosen = [s for s in setups(venv) if s.name in wanted or (not wanted and s.name != "seed")]
    names = [s.name for s in chosen]
    points: list[Point] = []
    integrity: list[Integrity] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        root = Path(tmp)
        with MlflowServer(root / "mlflow", workers=None) as server:  # type: ignore[arg-type]
            train_models(server.url)
            for rnd in range(1, args.rounds + 1):
                order = chosen if rnd % 2 else list(reversed(chosen))  # alternate the order between rounds
                for setup in order:
                    pts, integ = run_setup(setup, rnd, root, server.url, args.seconds, root, args.drain_timeout)
                    points += pts
                    if integ is not None:
                        integrity.append(integ)
    summary = summarise(points)
    text = tables(summary, integrity, names)
    goals = targets(summary, integrity)
    goal_lines = ["| target | measured | goal | met |", "|---|---|---|---|"] + [
        f"| {what} | {'-' if v is None else v} | {goal} | {'-' if met is None else 'yes' if met else 'NO'} |"
        for what, v, goal, met in goals]
    machine = (f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.seconds}s per point, "
               f"{args.rounds} rounds")
    report = f"Measured {started}; {machine}.\n\n{text}\n\n" + "\n".join(goal_lines) + "\n"
    print(report)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"bench-{stamp}.md").write_text(report)
    (out / f"bench-{stamp}.json").write_text(json.dumps({
        "args": vars(args), "started": started, "machine": machine,
        "summary": [{"setup": k[0], "load": k[1], "connections": k[2], **v} for k, v in summary.items()],
        "points": [asdict(p) for p in points], "integrity": [asdict(i) for i in integrity],
        "targets": [{"what": w, "measured": v, "goal": g, "met": m} for w, v, g, m in goals]}, indent=2))
    print(f"written {out / f'bench-{stamp}.md'} and .json")
    return 1 if any(i.lost or i.duplicated for i in integrity) else 0


if __name__ == "__main__":
    sys.exit(main())
