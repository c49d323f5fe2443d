"""The report where the rows are, on both engines: a real local Spark session (local[2], one for the
module) and DuckDB over the same inference table give the same figures, quantiles included. And
python -m experiments.compare --engine reads the table the config names."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.bench.table_rows import Shape, write
from experiments.report.engine.engines import DuckDBEngine, SparkEngine
from experiments.report.engine.queries import Filters
from experiments.report.engine.report import engine_report
from experiments.traffic import run_traffic
from gateway.delta.spec import TableSection
from stack.processes import ROOT, GatewayProcess
from tests.experiments.test_engine_report import row_level_report
from tests.harness.delivery import wait_drained

pytestmark = [pytest.mark.integration, pytest.mark.long]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> TableSection:
    root = tmp_path_factory.mktemp("engines-table")
    write(str(root), Shape(rows=40_000, users=2_000, labelled=0.2, days=3), progress=False, chunk_rows=20_000)
    return TableSection(enabled=True, uri=str(root))


@pytest.fixture(scope="module")
def spark(table: TableSection) -> Iterator[SparkEngine]:
    engine = SparkEngine(table, "local[2]", memory="1g")
    yield engine
    engine.spark.stop()


def _report(engine: Any, **filters: Any) -> dict[str, Any]:
    return engine_report(engine, Filters(**filters))[0]


def test_spark_and_duckdb_give_the_same_report(table: TableSection, spark: SparkEngine) -> None:
    duck = DuckDBEngine(table)
    try:
        d = _report(duck)
    finally:
        duck.close()
    s = _report(spark)
    assert (s["n_records"], s["unit"], s["labels"]) == (d["n_records"], d["unit"], d["labels"])
    for v, dv in d["versions"].items():
        sv = s["versions"][v]
        assert (sv["count"], sv["classes"], sv["accuracy"]) == (dv["count"], dv["classes"], dv["accuracy"])
        assert sv["latency_ms"]["mean"] == pytest.approx(dv["latency_ms"]["mean"])
        for q in ("p50", "p95", "p99"):  # exact and interpolated on both
            assert sv["latency_ms"][q] == pytest.approx(dv["latency_ms"][q], rel=1e-9), (v, q)
    for test in ("class_chi2", "srm", "accuracy"):
        assert s["tests"][test]["p_value"] == pytest.approx(d["tests"][test]["p_value"], rel=1e-9), test
    # Mann-Whitney from value counts: exact on both.
    assert s["tests"]["latency_mwu"]["u"] == d["tests"]["latency_mwu"]["u"]
    assert s["tests"]["latency_mwu"]["p_value"] == pytest.approx(d["tests"]["latency_mwu"]["p_value"], rel=1e-9)
    assert s["health"] == d["health"]
    for metric, dt in d["comparisons"]["pairs"]["v2.0"].items():
        st = s["comparisons"]["pairs"]["v2.0"][metric]
        assert (st["a"], st["b"], st["units"]) == (pytest.approx(dt["a"]), pytest.approx(dt["b"]), dt["units"])
    decisions = [{v: c["decision"] for v, c in r["recommendation"]["candidates"].items()} for r in (s, d)]
    assert decisions[0] == decisions[1]


def test_a_real_gateways_table_gives_one_report_on_both_engines_and_the_row_level_path(
        spark: SparkEngine, start_gateway: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    """Sticky users' traffic with labels through a real gateway into its table, then the report on
    DuckDB, on Spark and on the rows in pandas: the same figures."""
    gw = start_gateway(name="engines", mlflow={"granularity": "window", "window_seconds": 1.0,
                                               "experiment": "engines-real"},
                       table={"enabled": True, "uri": str(tmp_path / "table")})
    result = asyncio.run(run_traffic(gw.url, 400, concurrency=8, users=60, seed=5, progress=False, feedback=True))
    assert result.ok == 400
    wait_drained(gw, labels=True)
    section = TableSection(enabled=True, uri=str(tmp_path / "table"))
    duck = DuckDBEngine(section)
    try:
        d = _report(duck)
    finally:
        duck.close()
    s = _report(SparkEngine(section, "local[2]"))
    rows = row_level_report(tmp_path / "table")
    assert d["n_records"] == s["n_records"] == rows["n_records"] == 400
    for v, r in rows["versions"].items():
        for e in (d, s):
            assert (e["versions"][v]["count"], e["versions"][v]["classes"]) == (r["count"], r["classes"])
            assert (e["versions"][v]["accuracy"] or {}).get("correct") == (r["accuracy"] or {}).get("correct")
        assert d["versions"][v]["latency_ms"]["p95"] == pytest.approx(r["latency_ms"]["p95"])
        assert s["versions"][v]["latency_ms"]["p95"] == pytest.approx(r["latency_ms"]["p95"])
    assert d["unit"] == s["unit"] == rows["unit"] and d["unit"]["unit"] == "user"
    assert d["tests"]["srm"]["p_value"] == pytest.approx(rows["tests"]["srm"]["p_value"])
    assert s["tests"]["srm"]["p_value"] == pytest.approx(rows["tests"]["srm"]["p_value"])


def test_spark_prunes_the_day_partitions(spark: SparkEngine) -> None:
    start = Shape(rows=1).start_ms
    day = Filters(since=start, until=start + 86_400_000)
    plan = spark.spark.sql(f"SELECT COUNT(*) FROM predictions WHERE {day.sql()}")._jdf.queryExecution() \
        .executedPlan().toString()
    assert "PartitionFilters: [isnotnull(day" in plan, plan
    whole = _report(spark)["n_records"]
    assert 0 < _report(spark, since=start, until=start + 86_400_000)["n_records"] < whole


def test_compare_reads_the_table_the_config_names(table: TableSection, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[mlflow]\ngranularity = "window"\n\n[table]\nenabled = true\nuri = "{table.uri}"\n\n'
                      '[[variants]]\nname = "v1.0"\nmodel_uri = "models:/IrisClassifier/1"\n\n'
                      '[[variants]]\nname = "v2.0"\nmodel_uri = "models:/IrisClassifier/2"\n')
    out = subprocess.run([sys.executable, "-m", "experiments.compare", "--config", str(config), "--engine", "duckdb",
                          "--json", "--no-log", "--html", str(tmp_path / "report.html")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    source = report["source"]
    assert report["n_records"] == 40_000 and (source["path"], source["engine"], source["table"]) == (
        "engine", "duckdb", table.uri)
    assert {"versions", "classes", "accuracy", "per_user"} <= set(source["query_seconds"])  # the stages, timed
    assert set(report["recommendation"]["candidates"]) == {"v2.0"}
    assert report["engine_note"].startswith("engine path (duckdb)")
    assert "<img" in (tmp_path / "report.html").read_text()  # the charts drawn from the engine's sample
