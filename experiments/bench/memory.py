"""The benchmark's memory check: the resident memory of a setup's processes before, during and after
a load of large batches."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from experiments.bench.peers import Setup
from experiments.bench.wrk import run_wrk

EXPORTER = "gateway.export"  # the exporter child's command line: python -m gateway.export --follow


@dataclass
class Memory:
    setup: str
    seconds: int
    connections: int
    rows_per_s: float
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    failed: int = 0  # requests answered with no 2xx (a 503 when the queue is full) or not at all
    exporter_start_mb: float = 0.0  # the exporter process(es) alone, within the figures above
    exporter_end_mb: float = 0.0
    exporter_peak_mb: float = 0.0

    @property
    def growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb


def group_members(pgid: int) -> Iterator[tuple[Path, list[str]]]:
    """Each process of process group ``pgid``: its ``/proc`` directory and its stat fields after the
    command (which may hold spaces and parentheses itself): the state first, the group third."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5, pgrp
                yield entry, fields
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue


def command_of(entry: Path) -> str:
    return (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def group_rss_mb(pid: int, command: str | None = None) -> float:
    """The resident memory of every process in ``pid``'s process group (the gateway and its exporter),
    or of those whose command line holds ``command``."""
    total_kb = 0
    for entry, _ in group_members(pid):
        try:
            if command is not None and command not in command_of(entry):
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    return total_kb / 1024


def measure_memory(setup: Setup, pid: int, url: str, seconds: int, scripts: Path, connections: int = 64) -> Memory:
    """RSS before, during (peak) and after ``seconds`` of the setup's memory load."""
    assert setup.memory is not None
    script = scripts / f"{setup.name}-memory.lua"
    script.write_text(setup.memory.script)
    start, exporter_start = group_rss_mb(pid), group_rss_mb(pid, EXPORTER)
    peak, exporter_peak = [start], [exporter_start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            peak.append(group_rss_mb(pid))
            exporter_peak.append(group_rss_mb(pid, EXPORTER))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wrk = run_wrk(url + setup.memory.path, seconds, connections, script)
    finally:
        done.set()
        sampler.join()
    end, exporter_end = group_rss_mb(pid), group_rss_mb(pid, EXPORTER)
    ok = max(0, wrk.requests - wrk.non_2xx - wrk.socket_errors)
    out = Memory(setup.name, seconds, connections, round(ok / wrk.seconds * setup.memory.rows), round(start, 1),
                 round(end, 1), round(max(*peak, end), 1), wrk.non_2xx + wrk.socket_errors,
                 round(exporter_start, 1), round(exporter_end, 1), round(max(*exporter_peak, exporter_end), 1))
    print(f"   memory   c={connections} {seconds}s: {out.rows_per_s:.0f} rows/s, RSS {start:.0f} -> {end:.0f} MB "
          f"(peak {out.rss_peak_mb:.0f}; the exporter {exporter_start:.0f} -> {exporter_end:.0f}, peak "
          f"{out.exporter_peak_mb:.0f}), {out.failed} requests not 2xx", file=sys.stderr)
    return out
