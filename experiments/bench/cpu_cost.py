"""python -m experiments.bench.cpu_cost: where the CPU goes, per 1,000 rows answered, in each setup's
processes: the gateway's workers, its exporter, its supervisor; MLServer's processes.

Throughput on this 2-core machine moves by half from one hour to the next, and a ratio of two setups
measured minutes apart moves with it. CPU time per row answered adds up where ratios do not: a
setup whose processes spend C ms of CPU per 1,000 rows cannot answer more than cores / C thousand rows
a second. For each setup and batch size: a fresh server, wrk at 8 connections for ``--seconds`` after
a 2 s warm-up, each process's user + system time (``/proc/PID/stat``) from before the first request
to the end of the load, and for a setup that logs, again once its spool is exported (the export of
the load's rows is its cost too, paid later when the exporter falls behind). Prints a Markdown table
and writes it, with JSON, under ``var/bench/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from experiments.bench.counts import rows_served
from experiments.bench.memory import EXPORTER, command_of, group_members
from experiments.bench.peers import OIP_100, OIP_1000, Setup, mlserver_venv, setups
from experiments.bench.serving import wait_exported
from experiments.bench.wrk import ensure_wrk, run_wrk
from stack.processes import ROOT, MlflowServer, free_port, train_models

LOADS = {100: OIP_100, 1000: OIP_1000}
DEFAULT_SETUPS = "mlserver,gw-off-2p,gw-window-2p,gw-table-2p"
_TICKS = os.sysconf("SC_CLK_TCK")


def role_of(command: str) -> str:
    """A process's part, from its command line."""
    if EXPORTER in command:
        return "exporter"
    if "multiprocessing" in command and "resource_tracker" in command:
        return "other"
    if "spawn_main" in command:
        return "worker"
    if "-m gateway" in command:
        return "supervisor"
    if "mlserver" in command:
        return "mlserver"
    return "other"


def cpu_seconds(fields: list[str]) -> float:
    """User + system CPU seconds from a process's stat fields after its command (utime, stime)."""
    return (int(fields[11]) + int(fields[12])) / _TICKS


def group_cpu(pgid: int) -> dict[int, tuple[str, float]]:
    """Each process of process group ``pgid``: (its role, CPU seconds so far)."""
    out: dict[int, tuple[str, float]] = {}
    for entry, fields in group_members(pgid):
        try:
            out[int(entry.name)] = (role_of(command_of(entry)), cpu_seconds(fields))
        except OSError:  # the process ended meanwhile
            continue
    return out


def per_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two readings, summed by role (a process started in between counts
    from zero; one that ended in between is not seen)."""
    spent: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        spent[role] = spent.get(role, 0.0) + seconds - (before[pid][1] if pid in before else 0.0)
    return spent


@dataclass
class Cost:
    setup: str
    rows: int  # rows per request
    rows_per_s: float
    rows_answered: int  # warm-up and load, answered with a 2xx
    load_ms: dict[str, float]  # CPU ms per 1,000 rows answered, by role, until the load's end
    drained_ms: dict[str, float] | None  # the same until the spool was exported (logging setups)
    drain_s: float | None

    @property
    def total_load_ms(self) -> float:
        return sum(self.load_ms.values())

    @property
    def total_drained_ms(self) -> float | None:
        return None if self.drained_ms is None else sum(self.drained_ms.values())


def measure(setup: Setup, rows: int, root: Path, tracking_uri: str, seconds: int) -> Cost:
    load = setup.batches[LOADS[rows]]
    url = f"http://127.0.0.1:{free_port()}"
    work = root / f"{setup.name}-{rows}"
    assert setup.start is not None
    service = setup.start(work, tracking_uri, url)
    try:
        pgid = service.proc.pid
        script = root / f"{setup.name}-{rows}.lua"
        script.write_text(load.script)
        load.check(url)
        before = group_cpu(pgid)
        warm = run_wrk(url + load.path, 2, 8, script)
        wrk = run_wrk(url + load.path, seconds, 8, script)
        at_end = group_cpu(pgid)
        answered = sum(max(0, w.requests - w.non_2xx - w.socket_errors) for w in (warm, wrk)) * rows + rows
        drained, drain_s = None, None
        if setup.logging is not None:
            served, drain_s = wait_exported(url, 300)
            answered = served  # every row the gateway answered, the check's and wrk's, from /metrics
            drained = {role: s * 1e6 / answered for role, s in per_role(before, group_cpu(pgid)).items()}
        elif setup.name.startswith("gw-"):
            answered = rows_served(url)
        return Cost(setup.name, rows, wrk.rps * rows, answered,
                    {role: s * 1e6 / answered for role, s in per_role(before, at_end).items()}, drained, drain_s)
    finally:
        service.stop()


def table(costs: list[Cost]) -> str:
    roles = sorted({r for c in costs for r in (*c.load_ms, *(c.drained_ms or {}))} - {"other"})
    head = ("| setup | rows/request | rows/s | CPU ms per 1,000 rows, load | with the export drained | "
            + " | ".join(f"{r}, drained" for r in roles) + " |")
    lines = [head, "|" + "---|" * (5 + len(roles))]
    for c in costs:
        shown = c.drained_ms if c.drained_ms is not None else c.load_ms
        lines.append(f"| {c.setup} | {c.rows:,} | {c.rows_per_s:,.0f} | {c.total_load_ms:.2f} | "
                     f"{'-' if c.total_drained_ms is None else f'{c.total_drained_ms:.2f}'} | "
                     + " | ".join(f"{shown[r]:.2f}" if r in shown else "-" for r in roles) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.cpu_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default=DEFAULT_SETUPS, help="comma-separated (default %(default)s)")
    parser.add_argument("--rows", default="100,1000", help="rows per request, 100 and/or 1000 (default %(default)s)")
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per point (default %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench"))
    args = parser.parse_args(argv)
    wanted, sizes = args.setups.split(","), [int(r) for r in args.rows.split(",")]
    if bad := [r for r in sizes if r not in LOADS]:
        parser.error(f"--rows takes 100 and 1000, not {bad}")
    ensure_wrk()
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    venv = mlserver_venv(out / "venvs") if "mlserver" in wanted else None
    chosen = [s for s in setups(venv) if s.name in wanted]
    if unknown := sorted(set(wanted) - {s.name for s in chosen}):
        parser.error(f"unknown setup(s) {unknown}")
    if missing := [s.name for s in chosen if not all(LOADS[r] in s.batches for r in sizes)]:
        parser.error(f"{missing} take no OIP batches")
    costs: list[Cost] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="gateway-cpu-") as tmp, MlflowServer(Path(tmp) / "mlflow") as server:
        train_models(server.url)
        for rows in sizes:
            for setup in chosen:
                print(f"== {setup.name}, {rows} rows a request", file=sys.stderr)
                costs.append(cost := measure(setup, rows, Path(tmp), server.url, args.seconds))
                print(f"   {cost.rows_per_s:,.0f} rows/s, {cost.total_load_ms:.2f} ms CPU per 1,000 rows "
                      f"(drained: {cost.total_drained_ms})", file=sys.stderr)
    report = (f"Measured {started}; {os.cpu_count()} cores, {args.seconds} s of load at 8 connections a point.\n\n"
              + table(costs) + "\n")
    print(report)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"cpu-{stamp}.md").write_text(report)
    (out / f"cpu-{stamp}.json").write_text(json.dumps({"started": started, "costs": [asdict(c) for c in costs]},
                                                      indent=2))
    print(f"written {out / f'cpu-{stamp}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
