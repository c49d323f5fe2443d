"""make bench: the gateway side by side with the other ways to serve the same registered model.

Every setup serves ``models:/IrisClassifier/1`` in one process (but the -2p ones and MLServer, which
runs its model in an inference worker process beside its HTTP process), alone on the machine, in alternating
rounds, driven by wrk at c=1, 8 and 64 with the seed's one-row input in the setup's own protocol:

    bare            a bare FastAPI app around the model (experiments.bench.bare_app), no logging
    mlserver        MLServer with its scikit-learn runtime, Open Inference Protocol (its own venv)
    mlflow-serve    ``mlflow models serve``
    gw-prediction   the gateway, one MLflow run per prediction (the seed's schema)
    gw-window       the gateway, one MLflow run per window of predictions
    gw-off          the gateway with its prediction log off
    gw-window-2p    gw-window with two worker processes (``--workers 2``), batches only
    gw-off-2p       gw-off with two worker processes, batches only
    gw-table        gw-window with the Delta inference table ([table] enabled): rows to Delta, runs to MLflow
    gw-table-2p     gw-table with two worker processes (one exporter), batches only

Then batches at c=8 (rows/s): 100 and 1,000 rows as one [N, 4] FP64 Open Inference Protocol tensor
(the gateway and MLServer, the same body), and a 100-row ``dataframe_split`` on ``/invocations``
(the gateway and ``mlflow models serve``). Single-row ratios are against the bare app of the same
round, batch ratios against the peer given the same body. After a logging setup's load, its records
are counted in MLflow (or in the table its window runs name) once exported: lost and duplicated must
both be 0. In round 1, gw-window and gw-table-2p also take 1,000-row batches at 64 connections for
``--memory-seconds`` while their RSS (every process of the gateway, and the exporter's alone) is read.

    python -m experiments.bench [--seconds 8] [--rounds 2] [--setups bare,gw-prediction,...] [--memory-seconds 60]

``--setups seed`` adds the seed document's own design (one synchronous MLflow run inside every
request, experiments/bench/seed_app.py) for comparison; it is not in the default run.

Prints the tables and the targets (single rows and batches) as met or NO; writes JSON and Markdown
under var/bench/.
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

from experiments.bench.counts import mlflow_run_stats, pending_in_spool, rows_served
from experiments.bench.memory import Memory, measure_memory
from experiments.bench.peers import BATCH_LOADS, OIP_100, OIP_1000, SPLIT_100, Setup, mlserver_venv, setups
from experiments.bench.wrk import WrkResult, ensure_wrk, run_wrk
from stack.processes import ROOT, MlflowServer, free_port, train_models

CONCURRENCY = (1, 8, 64)


@dataclass
class Point:
    setup: str
    round: int
    connections: int
    load: str  # "single", or a batch load's name (peers.BATCH_LOADS)
    rows: int
    wrk: WrkResult

    @property
    def rows_per_s(self) -> float:
        """Rows answered with a 2xx per second (a 503 or a timeout answers none)."""
        ok = max(0, self.wrk.requests - self.wrk.non_2xx - self.wrk.socket_errors)
        return ok / self.wrk.seconds * self.rows if self.wrk.seconds else 0.0


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
    unanswered: int = 0  # rows logged whose client had gone before the answer (not lost, not duplicated)
    max_export_lag_any_s: float | None = None  # during any load, the memory check's included


def points_rows(wrk: WrkResult, rows: int) -> float:
    return Point("", 0, 0, "", rows, wrk).rows_per_s


# -- one setup, one round -------------------------------------------------------------------------

def _stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/stats", timeout=10).json()  # type: ignore[no-any-return]


def run_setup(setup: Setup, rnd: int, work: Path, tracking_uri: str, seconds: int, scripts: Path,
              drain_timeout: float, memory_seconds: int = 0) -> tuple[list[Point], Integrity | None, Memory | None]:
    url = f"http://127.0.0.1:{free_port()}"
    work = work / f"{setup.name}-r{rnd}"
    print(f"== round {rnd}: {setup.name}", file=sys.stderr)
    assert setup.start is not None
    service = setup.start(work, tracking_uri, url)
    points: list[Point] = []
    lags: list[tuple[str, float]] = []  # (the load running, the export lag then)
    phase = ["single"]
    memory = None
    stop = threading.Event()

    def sample_lag() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):  # sampling is best effort
                lags.append((phase[0], float(_stats(url)["spool"]["export_lag_seconds"])))

    sampler = threading.Thread(target=sample_lag, daemon=True)
    if setup.logging == "window":
        sampler.start()
    try:
        for kind, load in [*([("single", setup.single)] if setup.single else []), *setup.batches.items()]:
            phase[0] = kind
            script = scripts / f"{setup.name}-{kind}.lua"
            script.write_text(load.script)
            load.check(url)
            run_wrk(url + load.path, 1, 8, script)  # warm-up, not reported
            for c in CONCURRENCY if kind == "single" else (8,):
                time.sleep(1)  # requests the last run left in flight are dropped, not queued before this run's
                wrk = run_wrk(url + load.path, seconds, c, script)
                print(f"   {kind:<9} c={c:<3} {wrk.rps:9.1f} req/s {points_rows(wrk, load.rows):10.0f} rows/s  "
                      f"p50 {wrk.p50_ms:7.2f} ms  p99 {wrk.p99_ms:7.2f} ms  non-2xx {wrk.non_2xx}", file=sys.stderr)
                points.append(Point(setup.name, rnd, c, kind, load.rows, wrk))
        served, drain = wait_exported(url, drain_timeout) if setup.logging else (0, 0.0)
        if setup.memory is not None and memory_seconds > 0 and rnd == 1:
            phase[0] = "memory"
            memory = measure_memory(setup, service.proc.pid, url, memory_seconds, scripts)
            if setup.logging:
                served, _ = wait_exported(url, drain_timeout)
    finally:
        stop.set()
        service.stop()
    if not setup.logging:
        return points, None, memory
    return points, integrity_of(setup, rnd, work, tracking_uri, served, drain, lags), memory


def wait_exported(url: str, timeout: float) -> tuple[int, float]:
    """(rows answered, seconds waited) once the spool is exported, or ``timeout`` passed. Requests
    still in flight when wrk stops are answered (and logged) after it, so the count is read once it
    stops moving."""
    served, t0 = -1, time.monotonic()
    while (now := rows_served(url)) != served and time.monotonic() - t0 < 30:
        served = now
        time.sleep(0.5)
    t0 = time.monotonic()
    while _stats(url)["spool"]["backlog"] > 0 and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
    return served, time.monotonic() - t0


def integrity_of(setup: Setup, rnd: int, work: Path, tracking_uri: str, served: int, drain: float,
               lags: list[tuple[str, float]]) -> Integrity:
    """After the gateway stopped: every row it answered is in MLflow or still in its spool (which the
    next start exports), and no row has two runs. Per-prediction export into a stock MLflow server
    runs at tens of runs/s, so a bench-sized backlog is not waited for to the end."""
    runs, keys, logged, in_table = mlflow_run_stats(tracking_uri, f"bench-{work.name}")
    pending, waiting = pending_in_spool(work / "spool")
    # Rows counted in an inference table are not read back as keys: the spool's open rows are not in
    # the table yet (a window is marked exported once appended), so the two add up; so do a backlog
    # too large to read back as keys and what MLflow holds.
    accounted = len(keys | pending) + in_table if len(pending) == waiting else len(keys) + in_table + waiting
    # A request whose client left after its rows were committed, before the answer went out, is logged
    # and not answered (wrk stopping mid-request does that): counted apart, neither lost nor a duplicate.
    print(f"   answered {served} rows: {len(keys) + in_table} in MLflow or its table ({runs} runs), {waiting} "
          f"still in the spool; waited {drain:.1f}s for the export", file=sys.stderr)
    return Integrity(setup.name, rnd, served, len(keys) + in_table, runs, lost=max(0, served - accounted),
                     duplicated=logged - len(keys) - in_table, pending=waiting, drain_seconds=round(drain, 1),
                     max_export_lag_s=_peak(lags, OIP_100), max_export_lag_any_s=_peak(lags, None),
                     unanswered=max(0, accounted - served))


def _peak(lags: list[tuple[str, float]], load: str | None) -> float | None:
    """The highest export lag seen during ``load`` (None: during any), or None when none was sampled."""
    seen = [lag for phase, lag in lags if load is None or phase == load]
    return round(max(seen), 2) if seen else None


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
           names: list[str], memory: list[Memory] | None = None) -> str:
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
    titles = {OIP_100: "OIP 100 rows", OIP_1000: "OIP 1,000 rows", SPLIT_100: "dataframe_split 100 rows"}
    lines += ["", "Batches at c=8, rows/s (p99 ms):", "",
              "| setup | " + " | ".join(titles[k] for k in BATCH_LOADS) + " | non-2xx |",
              "|---|" + "---|" * (len(BATCH_LOADS) + 1)]
    for name in names:
        cells = [summary.get((name, load, 8)) for load in BATCH_LOADS]
        if any(cells):
            lines.append(f"| {name} | " + " | ".join(
                "-" if s is None else f"{s['rows_per_s']:.0f} ({s['p99_ms']:.1f})" for s in cells)
                + f" | {sum(s['non_2xx'] for s in cells if s):.0f} |")
    lines += ["", "| setup | round | rows answered | in MLflow | runs | still in spool | lost | duplicated | "
              "logged, client gone | export waited s | max lag s, 100-row load | max lag s, any load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i in integrity:
        lag = "-" if i.max_export_lag_s is None else i.max_export_lag_s
        lines.append(f"| {i.setup} | {i.round} | {i.served_rows} | {i.in_mlflow} | {i.runs} | {i.pending} | "
                     f"{i.lost} | {i.duplicated} | {i.unanswered} | {i.drain_seconds} | {lag} | "
                     f"{'-' if i.max_export_lag_any_s is None else i.max_export_lag_any_s} |")
    if memory:
        lines += ["", "| setup | load | rows/s | RSS at start MB | at end MB | peak MB | growth MB | "
                  "exporter MB: start, end, peak |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in memory:
            lines.append(f"| {m.setup} | 1,000-row OIP batches, c={m.connections}, {m.seconds} s | "
                         f"{m.rows_per_s:.0f} | {m.rss_start_mb} | {m.rss_end_mb} | {m.rss_peak_mb} | "
                         f"{m.growth_mb:.1f} | {m.exporter_start_mb}, {m.exporter_end_mb}, {m.exporter_peak_mb} |")
    return "\n".join(lines)


def targets(summary: dict[tuple[str, str, int], dict[str, float]], integrity: list[Integrity],
            window_seconds: float = 5.0, memory: list[Memory] | None = None
            ) -> list[tuple[str, float | None, str, bool | None]]:
    """The targets of the fast-path and batch issues: (what, measured, goal, met); None: not measured."""
    def ratio(a: str, b: str, c: int, key: str = "rps") -> float | None:
        x, y = summary.get((a, "single", c)), summary.get((b, "single", c))
        return round(x[key] / y[key], 2) if x and y and y[key] else None

    def batch_ratio(a: str, b: str, load: str) -> float | None:
        x, y = summary.get((a, load, 8)), summary.get((b, load, 8))
        return round(x["rows_per_s"] / y["rows_per_s"], 2) if x and y and y["rows_per_s"] else None

    out: list[tuple[str, float | None, str, bool | None]] = []

    def check(what: str, value: float | None, goal: str, ok: Callable[[float], bool]) -> None:
        out.append((what, value, goal, None if value is None else ok(value)))

    check("gw-prediction / bare, c=1", ratio("gw-prediction", "bare", 1), ">= 0.9", lambda v: v >= 0.9)
    check("gw-prediction / bare, c=8", ratio("gw-prediction", "bare", 8), ">= 1.2", lambda v: v >= 1.2)
    check("gw-prediction / bare, c=64", ratio("gw-prediction", "bare", 64), ">= 1.0", lambda v: v >= 1.0)
    check("gw-prediction / mlserver, c=8", ratio("gw-prediction", "mlserver", 8), ">= 1.2", lambda v: v >= 1.2)
    for c in CONCURRENCY:
        check(f"gw-prediction / mlflow-serve, c={c}", ratio("gw-prediction", "mlflow-serve", c), ">= 3",
              lambda v: v >= 3)
    for c in CONCURRENCY:
        check(f"gw-prediction p99 / bare p99, c={c}", ratio("gw-prediction", "bare", c, "p99_ms"), "<= 1.5",
              lambda v: v <= 1.5)
    # Batches: the gateway with two worker processes, as many as MLServer runs by default (its HTTP
    # process and one inference worker); the one-process figures are in the batch table.
    check("gw-window-2p / mlserver, OIP 100 rows, rows/s", batch_ratio("gw-window-2p", "mlserver", OIP_100),
          ">= 1.0", lambda v: v >= 1.0)
    check("gw-off-2p / mlserver, OIP 100 rows, rows/s", batch_ratio("gw-off-2p", "mlserver", OIP_100), ">= 1.5",
          lambda v: v >= 1.5)
    check("gw-window-2p / mlserver, OIP 1,000 rows, rows/s", batch_ratio("gw-window-2p", "mlserver", OIP_1000),
          ">= 1.0", lambda v: v >= 1.0)
    # The inference table ([table] enabled): the window log's rows into Delta, not through MLflow.
    check("gw-table-2p / mlserver, OIP 1,000 rows, rows/s", batch_ratio("gw-table-2p", "mlserver", OIP_1000),
          ">= 1.0", lambda v: v >= 1.0)
    check("gw-table-2p / mlserver, OIP 100 rows, rows/s", batch_ratio("gw-table-2p", "mlserver", OIP_100),
          ">= 1.5", lambda v: v >= 1.5)
    check("gw-table / mlserver, single rows, c=8", ratio("gw-table", "mlserver", 8), ">= 1.2", lambda v: v >= 1.2)
    check("gw-table p99 / bare p99, c=8", ratio("gw-table", "bare", 8, "p99_ms"), "<= 1.5", lambda v: v <= 1.5)
    check("gw-window / mlflow-serve, dataframe_split 100 rows, rows/s (one process each)",
          batch_ratio("gw-window", "mlflow-serve", SPLIT_100), ">= 2", lambda v: v >= 2)
    windowed = [i for i in integrity if i.setup.startswith(("gw-window", "gw-table"))]
    lag = max((i.max_export_lag_s or 0.0 for i in windowed), default=None)
    check("gw-window/gw-table(-2p) max export lag during the 100-row load, s", lag, f"< {2 * window_seconds:g}",
          lambda v: v < 2 * window_seconds)
    lag_any = max((i.max_export_lag_any_s or 0.0 for i in windowed if i.setup.startswith("gw-table")), default=None)
    check("gw-table(-2p) max export lag during any load, s", lag_any, f"< {2 * window_seconds:g}",
          lambda v: v < 2 * window_seconds)
    drain = max((i.drain_seconds for i in windowed), default=None)
    check("gw-window/gw-table(-2p) backlog gone after the load, s", drain, "<= 15", lambda v: v <= 15)
    bad = sum(i.lost + i.duplicated for i in integrity) if integrity else None
    check("lost + duplicated, every logging setup", bad, "== 0", lambda v: v == 0)
    growth = max((round(m.growth_mb, 1) for m in memory or []), default=None)
    check("gw-window(-2p)/gw-table-2p RSS growth after 1,000-row batches at c=64, MB", growth, "<= 300",
          lambda v: v <= 300)
    exporter = max((round(m.exporter_end_mb - m.exporter_start_mb, 1) for m in memory or []
                    if m.setup.startswith("gw-table")), default=None)
    check("gw-table-2p exporter RSS growth over the memory load, MB", exporter, "<= 100", lambda v: v <= 100)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per point (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--setups", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to let a logging setup export after its load (default %(default)s)")
    parser.add_argument("--skip-mlserver", action="store_true", help="no MLServer venv install")
    parser.add_argument("--memory-seconds", type=int, default=60,
                        help="gw-window's memory check under 1,000-row batches at c=64 (0: skip; default %(default)s)")
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
    memory: list[Memory] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        root = Path(tmp)
        with MlflowServer(root / "mlflow", workers=None) as server:  # type: ignore[arg-type]
            train_models(server.url)
            for rnd in range(1, args.rounds + 1):
                order = chosen if rnd % 2 else list(reversed(chosen))  # alternate the order between rounds
                for setup in order:
                    pts, integ, mem = run_setup(setup, rnd, root, server.url, args.seconds, root,
                                                args.drain_timeout, args.memory_seconds)
                    points += pts
                    integrity += [integ] if integ is not None else []
                    memory += [mem] if mem is not None else []
    summary = summarise(points)
    text = tables(summary, integrity, names, memory)
    goals = targets(summary, integrity, memory=memory)
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
        "memory": [{**asdict(m), "growth_mb": m.growth_mb} for m in memory],
        "targets": [{"what": w, "measured": v, "goal": g, "met": m} for w, v, g, m in goals]}, indent=2))
    print(f"written {out / f'bench-{stamp}.md'} and .json")
    return 1 if any(i.lost or i.duplicated for i in integrity) else 0


if __name__ == "__main__":
    sys.exit(main())
