"""The benchmark's own logic (no load is generated here): wrk scripts, the summary over rounds, the
targets it reports, and what it counts as still in the spool."""

from __future__ import annotations

from pathlib import Path

from experiments.bench.serving import Integrity, Point, pending_in_spool, summarise, targets
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
        _point("mlserver", 8, 1200, 9), _point("bare", 1, 1000, 1), _point("gw-prediction", 1, 850, 2),
        _point("gw-window", 8, 300, 20, load="batch", rows=100)]
    summary = summarise(points)
    assert summary[("gw-prediction", "single", 8)]["rps"] == 1600
    met = {what: (value, ok) for what, value, _, ok in targets(summary, [
        Integrity("gw-window", 1, 100, 100, 1, 0, 0, 0, 1.0, 4.0)])}
    assert met["gw-prediction / bare, c=8"] == (1.6, True)
    assert met["gw-prediction / mlserver, c=8"] == (1.33, True)
    assert met["gw-prediction / bare, c=1"] == (0.85, False)
    assert met["gw-prediction p99 / bare p99, c=1"] == (2.0, False)
    assert met["gw-window 100-row batch rows/s"] == (30000, True)
    assert met["gw-window max export lag s"] == (4.0, True)
    assert met["lost + duplicated, every logging setup"] == (0, True)
    assert met["gw-prediction / bare, c=64"] == (None, None)  # not measured: neither met nor missed


def test_rows_not_yet_exported_are_counted_as_still_in_the_spool(tmp_path: Path) -> None:
    spool = PredictionSpool(tmp_path)
    spool.append_many([rec(1, row=0), rec(1, row=1)])
    spool.append(rec(2))
    claimed = spool.queue.claim(1)
    spool.queue.mark_done([claimed[0].id], "run-1")
    assert pending_in_spool(tmp_path) == {("r1", 1, "primary"), ("r2", 0, "primary")}
    assert pending_in_spool(tmp_path / "nowhere") == set()
