"""The benchmark's own logic (no load is generated here): wrk scripts, the summary over rounds, the
targets it reports, and what it counts as still in the spool."""

from __future__ import annotations

from pathlib import Path

from experiments.bench.counts import pending_in_spool
from experiments.bench.memory import Memory
from experiments.bench.serving import Integrity, Point, summarise, tables, targets
from experiments.bench.wrk import WrkResult, _lua, _split
from gateway.spool.store import PredictionSpool
from tests.harness.records import rec


def _point(setup: str, c: int, rps: float, p99: float, rnd: int = 1, load: str = "single", rows: int = 1) -> Point:
    return Point(setup, rnd, c, load, rows, WrkResult(int(rps * 8), 8.0, rps, p99 / 3, p99, 0, 0))


def test_a_json_body_with_nested_arrays_survives_the_lua_script() -> None:
    body = _split([[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 4.5, 1.4]])
    assert "]]" in body
    script = _lua(body, "application/json")
    assert f"[==[{body}]==]" in script  # a plain [[...]] would end at the body's first "]]"


def test_summary_is_the_mean_over_rounds_and_targets_use_the_bare_app() -> None:
    points = [_point("bare", 8, 1000, 10, rnd) for rnd in (1, 2)] + [
        _point("gw-prediction", 8, 1500, 9, 1), _point("gw-prediction", 8, 1700, 11, 2),
        _point("mlserver", 8, 1200, 9), _point("bare", 1, 1000, 1), _point("gw-prediction", 1, 850, 2)]
    summary = summarise(points)
    assert summary[("gw-prediction", "single", 8)]["rps"] == 1600
    met = {what: (value, ok) for what, value, _, ok in targets(summary, [
        Integrity("gw-window", 1, 100, 100, 1, 0, 0, 0, 1.0, 4.0)])}
    assert met["gw-prediction / bare, c=8"] == (1.6, True)
    assert met["gw-prediction / mlserver, c=8"] == (1.33, True)
    assert met["gw-prediction / bare, c=1"] == (0.85, False)
    assert met["gw-prediction p99 / bare p99, c=1"] == (2.0, False)
    assert met["gw-window/gw-table(-2p) max export lag during the 100-row load, s"] == (4.0, True)
    assert met["gw-window/gw-table(-2p) backlog gone after the load, s"] == (1.0, True)
    assert met["lost + duplicated, every logging setup"] == (0, True)
    assert met["gw-prediction / bare, c=64"] == (None, None)  # not measured: neither met nor missed
    assert met["gw-window(-2p)/gw-table-2p RSS growth after 1,000-row batches at c=64, MB"] == (None, None)
    assert met["gw-table-2p / mlserver, OIP 1,000 rows, rows/s"] == (None, None)


def test_batch_targets_compare_rows_per_second_with_the_peer_given_the_same_body() -> None:
    points = [_point("mlserver", 8, 400, 30, load="oip-100", rows=100),
              _point("gw-window", 8, 300, 40, load="oip-100", rows=100),
              _point("gw-off-2p", 8, 700, 20, load="oip-100", rows=100),
              _point("gw-window-2p", 8, 450, 30, load="oip-100", rows=100),
              _point("mlserver", 8, 250, 60, load="oip-1000", rows=1000),
              _point("gw-window", 8, 30, 200, load="oip-1000", rows=1000),
              _point("gw-window-2p", 8, 60, 100, load="oip-1000", rows=1000),
              _point("mlflow-serve", 8, 140, 70, load="split-100", rows=100),
              _point("gw-window", 8, 300, 40, load="split-100", rows=100)]
    summary = summarise(points)
    memory = [Memory("gw-window", 60, 64, 25000.0, 180.0, 530.0, 560.0)]
    met = {what: (value, ok) for what, value, _, ok in targets(summary, [], memory=memory)}
    # the batch targets are the two-process gateway's (MLServer's own default is two processes)
    assert met["gw-window-2p / mlserver, OIP 100 rows, rows/s"] == (1.12, True)
    assert met["gw-off-2p / mlserver, OIP 100 rows, rows/s"] == (1.75, True)
    assert met["gw-window-2p / mlserver, OIP 1,000 rows, rows/s"] == (0.24, False)
    assert met["gw-window / mlflow-serve, dataframe_split 100 rows, rows/s (one process each)"] == (2.14, True)
    assert met["gw-window(-2p)/gw-table-2p RSS growth after 1,000-row batches at c=64, MB"] == (350.0, False)
    assert met["gw-table-2p exporter RSS growth over the memory load, MB"] == (None, None)  # gw-window's only
    assert met["lost + duplicated, every logging setup"] == (None, None)
    text = tables(summary, [], ["mlserver", "gw-window", "gw-window-2p", "mlflow-serve"], memory)
    assert "| gw-window | 30000 (40.0) | 30000 (200.0) | 30000 (40.0) | 0 |" in text
    assert "| mlserver | 40000 (30.0) | 250000 (60.0) | - | 0 |" in text
    assert "| 180.0 | 530.0 | 560.0 | 350.0 | 0.0, 0.0, 0.0 |" in text


def test_rows_not_yet_exported_are_counted_as_still_in_the_spool(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    spool.append_many([rec(1, row=0), rec(1, row=1)])
    spool.append(rec(2))
    claimed = spool.queue.claim(1)
    spool.queue.mark_done([claimed[0].id], "run-1")
    assert pending_in_spool(tmp_path) == ({("r1", 1, "primary"), ("r2", 0, "primary")}, 2)
    assert pending_in_spool(tmp_path, limit=1) == (set(), 2)  # a backlog too large to read back: counted
    assert pending_in_spool(tmp_path / "nowhere") == (set(), 0)


def test_a_wrk_run_of_a_minute_is_sixty_seconds() -> None:
    from experiments.bench.wrk import parse_wrk

    out = """Running 1m test @ http://127.0.0.1:1/v2/models/IrisClassifier/infer
  Latency Distribution
     50%   22.04ms
     75%   30.00ms
     90%   40.00ms
     99%   53.84ms
  19470 requests in 1.00m, 10.51MB read
  Non-2xx or 3xx responses: 70
Requests/sec:    324.50
"""
    result = parse_wrk(out)
    assert result.seconds == 60.0 and result.requests == 19470 and result.non_2xx == 70
    assert _point("gw-window", 64, 0, 0).rows_per_s == 0.0
    assert Point("gw-window", 1, 64, "memory", 1000, result).rows_per_s == (19470 - 70) / 60 * 1000


def test_cpu_cost_reads_each_process_cpu_time_and_names_it_by_its_part() -> None:
    import os

    from experiments.bench.cpu_cost import _TICKS, cpu_seconds, group_cpu, role_of

    # The fields after the command: state, ppid, pgrp, ..., utime (14th of the line), stime (15th).
    fields = ["S", "1", "4200", "4200", "0", "-1", "4194560", "100", "0", "0", "0", str(3 * _TICKS), str(_TICKS)]
    assert cpu_seconds(fields) == 4.0
    # This test's own process group holds this process, its CPU time counted.
    own = group_cpu(os.getpgid(0))
    assert os.getpid() in own and own[os.getpid()][1] > 0
    assert role_of("python -m gateway.export --follow --nice 10") == "exporter"
    assert role_of("python -B -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=12)") == "worker"
    assert role_of("python -B -c from multiprocessing.resource_tracker import main;main(11)") == "other"
    assert role_of("python -m gateway --config g.toml --port 1 --workers 2") == "supervisor"
    assert role_of("/v/bin/python /v/bin/mlserver start /tmp/repo") == "mlserver"


def test_cpu_cost_counts_what_each_part_spent_between_two_readings() -> None:
    from experiments.bench.cpu_cost import Cost, per_role, table

    before = {1: ("worker", 10.0), 2: ("worker", 20.0), 3: ("exporter", 1.0), 9: ("other", 5.0)}
    after = {1: ("worker", 12.5), 2: ("worker", 21.0), 3: ("exporter", 4.0), 4: ("exporter", 0.5)}  # 4 new, 9 gone
    assert per_role(before, after) == {"worker": 3.5, "exporter": 3.5}
    cost = Cost("gw-table-2p", 1000, 500_000.0, 7_000_000, {"worker": 0.5, "exporter": 0.25},
                {"worker": 0.5, "exporter": 0.5}, 4.0)
    assert cost.total_load_ms == 0.75 and cost.total_drained_ms == 1.0
    text = table([cost, Cost("mlserver", 1000, 700_000.0, 10_000_000, {"mlserver": 0.25, "worker": 1.5}, None, None)])
    assert "| gw-table-2p | 1,000 | 500,000 | 0.75 | 1.00 | 0.50 | - | 0.50 |" in text
    assert "| mlserver | 1,000 | 700,000 | 1.75 | - | - | 0.25 | 1.50 |" in text
