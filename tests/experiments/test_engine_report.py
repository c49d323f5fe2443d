"""The report where the rows are: its statistics from an engine's aggregates equal the pandas path's
row-level ones on the same inference table (experiments/report/engine/)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from scipy import stats

from experiments.bench.table_rows import Shape, write
from experiments.report import statistics as st
from experiments.report.analyse import analyse
from experiments.report.engine.engines import DuckDBEngine, TableMissing, spark_sql
from experiments.report.engine.queries import Filters
from experiments.report.engine.report import engine_report
from gateway.delta.spec import TableSection
from gateway.mlflow.readback import join_labels, records_of_rows


def row_level_report(root: Path, **kwargs: Any) -> dict[str, Any]:
    """The pandas path's report on the same table: every row read, labels joined, analysed."""
    return analyse(_row_records(root), **kwargs)


def _raw(root: Path) -> pd.DataFrame:
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    result = QueryBuilder().register("t", DeltaTable(str(root / "predictions"))).execute(
        "SELECT * FROM t ORDER BY ts_ms")
    table = pa.table(result.read_all())
    return pa.table([c.cast(pa.string()) if pa.types.is_string_view(c.type) else c for c in table.columns],
                    names=table.column_names).to_pandas()


def _row_records(root: Path) -> pd.DataFrame:
    """Every row of the table as the pandas path's records, its labels joined."""
    from deltalake import DeltaTable, QueryBuilder

    def read(name: str) -> pd.DataFrame:
        path = root / name
        if not path.exists():
            return pd.DataFrame()
        result = QueryBuilder().register("t", DeltaTable(str(path))).execute("SELECT * FROM t ORDER BY ts_ms")
        import pyarrow as pa

        table = pa.table(result.read_all())
        return pa.table([c.cast(pa.string()) if pa.types.is_string_view(c.type) else c for c in table.columns],
                        names=table.column_names).to_pandas()

    records = records_of_rows(read("predictions"))
    labels = read("feedback")
    if not labels.empty:
        labels["true_label"] = [json.loads(v) for v in labels["true_label"]]
        records = join_labels(records, labels)
    return records


def engine_side(root: Path, **kwargs: Any) -> dict[str, Any]:
    engine = DuckDBEngine(TableSection(enabled=True, uri=str(root)))
    try:
        return engine_report(engine, Filters(), **kwargs)[0]
    finally:
        engine.close()


def assert_same_exact_figures(engine: dict[str, Any], rows: dict[str, Any]) -> None:
    """Counts, classes, accuracy, the chi-square and sample-ratio tests, latency quantiles and the
    Mann-Whitney test: equal. Bootstrap intervals are compared elsewhere (Monte Carlo error)."""
    assert engine["n_records"] == rows["n_records"]
    assert list(engine["versions"]) == list(rows["versions"])
    assert list(engine["shadow_versions"]) == list(rows["shadow_versions"])
    for section in ("versions", "shadow_versions"):
        for v, e in engine[section].items():
            r = rows[section][v]
            assert (e["count"], e["classes"]) == (r["count"], r["classes"])
            assert e["share"] == pytest.approx(r["share"])
            for q in ("mean", "p50", "p95", "p99"):
                assert e["latency_ms"][q] == pytest.approx(r["latency_ms"][q], rel=1e-9), (v, q)
            assert (e["accuracy"] is None) == (r["accuracy"] is None)
            if e["accuracy"]:
                assert (e["accuracy"]["n"], e["accuracy"]["correct"]) == (r["accuracy"]["n"], r["accuracy"]["correct"])
                assert e["accuracy"]["ci"] == pytest.approx(r["accuracy"]["ci"])
    for test in ("class_chi2", "srm", "accuracy"):
        e, r = engine["tests"].get(test), rows["tests"].get(test)
        assert (e is None) == (r is None), test
        if e is not None:
            assert e["p_value"] == pytest.approx(r["p_value"], rel=1e-6, abs=1e-300), test
    e, r = engine["tests"]["latency_mwu"], rows["tests"]["latency_mwu"]
    assert (e is None) == (r is None)
    if e is not None:
        assert e["u"] == pytest.approx(r["u"])
        assert e["p_value"] == pytest.approx(r["p_value"], rel=1e-6, abs=1e-300)
        assert e["median_diff_ms"] == pytest.approx(r["median_diff_ms"])
    assert engine["unit"]["unit"] == rows["unit"]["unit"]
    assert (engine.get("health") or {}).get("multiple_exposure") == (rows.get("health") or {}).get("multiple_exposure")


@pytest.fixture(scope="module")
def sticky_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sticky-table")
    # A clear accuracy gain: the recommendation is the same on both paths, not a coin flip of the
    # cluster bootstrap's Monte Carlo error at the edge of significance.
    write(str(root), Shape(rows=30_000, users=400, labelled=0.3, days=3, accuracy=(0.85, 0.93)), progress=False,
          chunk_rows=12_000)
    return root


def test_the_engine_gives_the_row_level_figures_on_sticky_users(sticky_table: Path) -> None:
    engine, rows = engine_side(sticky_table), row_level_report(sticky_table)
    assert_same_exact_figures(engine, rows)
    assert engine["unit"]["unit"] == "user" and engine["comparisons"]["unit"] == "user"
    # The per-user (clustered) comparisons: the same ratios; intervals of a bootstrap over the same
    # users in another order, so within Monte Carlo error.
    for metric, e in engine["comparisons"]["pairs"]["v2.0"].items():
        r = rows["comparisons"]["pairs"]["v2.0"][metric]
        assert e["test"] == r["test"] == "cluster_bootstrap"
        assert (e["a"], e["b"], e["units"]) == (pytest.approx(r["a"]), pytest.approx(r["b"]), r["units"])
        width = r["ci"][1] - r["ci"][0]
        assert abs(e["ci"][0] - r["ci"][0]) < 0.15 * width and abs(e["ci"][1] - r["ci"][1]) < 0.15 * width, metric
    decisions = [{v: c["decision"] for v, c in r["recommendation"]["candidates"].items()} for r in (engine, rows)]
    assert decisions[0] == decisions[1]


def test_the_engine_gives_the_shadow_figures(tmp_path: Path) -> None:
    write(str(tmp_path), Shape(rows=8_000, users=1, labelled=0.5, days=2, shadow=True), progress=False)
    engine, rows = engine_side(tmp_path), row_level_report(tmp_path)
    assert_same_exact_figures(engine, rows)
    e, r = engine["shadow"], rows["shadow"]
    assert (e["pairs"], e["agreement"], e["confusion"]) == (r["pairs"], r["agreement"], r["confusion"])
    assert e["paired_accuracy"] == r["paired_accuracy"]
    assert e["paired_latency"]["median_diff_ms"] == pytest.approx(r["paired_latency"]["median_diff_ms"])
    assert e["paired_latency"]["p_value"] == pytest.approx(r["paired_latency"]["p_value"])  # all 8,000 pairs


def test_the_engine_gives_the_bandit_section(tmp_path: Path) -> None:
    write(str(tmp_path), Shape(rows=12_000, labelled=0.4, days=4, bandit=True), progress=False)
    engine, rows = engine_side(tmp_path), row_level_report(tmp_path)
    assert_same_exact_figures(engine, rows)
    from experiments.report.bandit import bandit_section

    expected = bandit_section(_row_records(tmp_path))
    got = engine["bandit"]
    assert expected is not None and got is not None
    assert got["reward"] == expected["reward"] == "correct"
    assert got["weights_over_time"] == expected["weights_over_time"] and len(got["weights_over_time"]) == 4
    for arm, e in expected["versions"].items():
        for key, value in e.items():
            assert got["versions"][arm][key] == pytest.approx(value, rel=1e-9), (arm, key)
    assert got["regret"] == pytest.approx(expected["regret"]) if expected["regret"]["best"] is None else (
        got["regret"]["best"] == expected["regret"]["best"]
        and got["regret"]["total"] == pytest.approx(expected["regret"]["total"], rel=1e-9))


def test_segments_by_an_input_column_are_the_row_level_ones(sticky_table: Path) -> None:
    from experiments.report.comparisons import by_segment

    engine = DuckDBEngine(TableSection(enabled=True, uri=str(sticky_table)))
    try:
        got = engine_report(engine, Filters(), segment_by="petal_length")[0]["segments"]
    finally:
        engine.close()
    records = _row_records(sticky_table)
    records["segment"] = records_of_rows(_raw(sticky_table), "petal_length")["segment"].to_numpy()
    primary = records[records["role"] == "primary"]
    expected = by_segment(primary, "petal_length", "v1.0", sorted(primary["prediction"].unique()), unit="user")
    assert got["bins"] == expected["bins"] and list(got["segments"]) == list(expected["segments"])
    assert got["skipped"] == expected["skipped"] and got["family_size"] == expected["family_size"]
    for seg, e in expected["segments"].items():
        for metric, test in e["pairs"]["v2.0"].items():
            mine = got["segments"][seg]["pairs"]["v2.0"][metric]
            assert (mine["a"], mine["b"], mine["units"]) == (pytest.approx(test["a"]), pytest.approx(test["b"]),
                                                             test["units"]), (seg, metric)


def test_the_always_valid_column_follows_the_row_level_one(sticky_table: Path) -> None:
    """The engine looks at the ends of slices of time, the pandas path at exact row counts: the
    estimates are equal, the always-valid p-values (minimums along slightly different paths) close."""
    engine, rows = engine_side(sticky_table), row_level_report(sticky_table)
    assert set(engine["sequential"]["tests"]) == set(rows["sequential"]["tests"])
    for name, r in rows["sequential"]["tests"].items():
        e = engine["sequential"]["tests"][name]["always_valid"]
        r = r["always_valid"]
        if name != "latency_p95_ratio":  # a histogram's estimate is a bin middle
            assert e.get("estimate") == pytest.approx(r.get("estimate")), name
        else:
            assert e["estimate"] == pytest.approx(r["estimate"], rel=0.02)
        assert abs(e["p_value"] - r["p_value"]) <= 0.15, name
        assert (e["p_value"] < 0.05) == (r["p_value"] < 0.05), name


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=hs.integers(30, 3_000), users=hs.integers(1, 60), labelled=hs.sampled_from([0.0, 0.05, 0.5]),
       seed=hs.integers(0, 10_000))
def test_property_aggregates_equal_row_level_statistics(tmp_path_factory: pytest.TempPathFactory, rows: int,
                                                         users: int, labelled: float, seed: int) -> None:
    """Random sizes: units of random sizes (few users, many requests each, or one each), no labels or
    some, a version with no traffic (one user: one version)."""
    root = tmp_path_factory.mktemp("random-table")
    write(str(root), Shape(rows=rows, users=users, labelled=labelled, days=2), seed=seed, progress=False)
    assert_same_exact_figures(engine_side(root), row_level_report(root))


def test_filters_push_down_to_the_day_partitions(sticky_table: Path) -> None:
    whole = engine_side(sticky_table)
    engine = DuckDBEngine(TableSection(enabled=True, uri=str(sticky_table)))
    try:
        day_ms = 86_400_000
        start = Shape(rows=1).start_ms
        first_day = engine_report(engine, Filters(since=start, until=start + day_ms))[0]
        plan = engine.con.execute(f"EXPLAIN SELECT COUNT(*) FROM predictions WHERE "
                                  f"{Filters(since=start, until=start + day_ms).sql()}").df().to_string()
    finally:
        engine.close()
    assert 0 < first_day["n_records"] < whole["n_records"]
    assert "day" in plan  # the filter reaches the scan of the dataset, where partitions are pruned


def test_a_regressors_table_asks_for_the_mlflow_path(tmp_path: Path) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from experiments.report.engine.report import EngineUnsupported

    write_deltalake(str(tmp_path / "predictions"), pa.table({
        "request_id": ["r1", "r2"], "row_index": [0, 0], "role": ["primary"] * 2, "model_version": ["v1", "v2"],
        "prediction": ["1.5", "2.5"], "kind": ["regressor"] * 2, "inference_time_ms": [1.0, 2.0],
        "request_time_ms": [1.5, 2.5], "batch_rows": [1, 1], "ts_ms": [1, 2]}))
    with pytest.raises(EngineUnsupported, match="--engine mlflow"):
        engine_side(tmp_path)


def test_a_missing_table_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(TableMissing, match=str(tmp_path / "predictions")):
        DuckDBEngine(TableSection(enabled=True, uri=str(tmp_path)))


def test_spark_gets_exact_percentiles_and_its_own_spelling() -> None:
    sql = spark_sql("SELECT QUANTILE_CONT(x, 0.95) AS q, ARG_MIN(v, ts) AS first, JSON_EXTRACT_STRING(t, '$') AS j, "
                    "\"user\" FROM predictions")
    assert "PERCENTILE(x, 0.95)" in sql
    assert "MIN_BY(v, ts)" in sql and "GET_JSON_OBJECT(t, '$')" in sql and "`user`" in sql


@settings(max_examples=60, deadline=None)
@given(a=hs.lists(hs.integers(0, 30), min_size=2, max_size=300), b=hs.lists(hs.integers(0, 30), min_size=2,
                                                                          max_size=300))
def test_property_mann_whitney_from_counts_equals_scipy(a: list[int], b: list[int]) -> None:
    va, ca = np.unique(np.array(a, dtype=float) / 10, return_counts=True)
    vb, cb = np.unique(np.array(b, dtype=float) / 10, return_counts=True)
    u, p = st.mwu_counts(va, ca, vb, cb)
    expected = stats.mannwhitneyu(np.array(b) / 10, np.array(a) / 10, alternative="two-sided", method="asymptotic")
    assert u == pytest.approx(float(expected.statistic))
    if math.isnan(expected.pvalue):  # every value the same: scipy has no p-value, there is no difference
        assert p == 1.0
    else:
        assert p == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(values=hs.lists(hs.integers(0, 50), min_size=1, max_size=400), q=hs.floats(0, 1))
def test_property_quantiles_from_counts_equal_numpy(values: list[int], q: float) -> None:
    x = np.array(values, dtype=float) / 1000  # microseconds in milliseconds, with ties
    distinct, counts = np.unique(x, return_counts=True)
    assert st.quantiles_counts(distinct, counts, (q,))[0] == pytest.approx(float(np.quantile(x, q)), abs=1e-12)


def test_the_delta_method_agrees_with_the_cluster_bootstrap_on_many_users() -> None:
    rng = np.random.default_rng(3)
    sizes_a, sizes_b = rng.geometric(0.2, 3_000).astype(float), rng.geometric(0.2, 3_000).astype(float)
    num_a = rng.binomial(sizes_a.astype(int), 0.50).astype(float)
    num_b = rng.binomial(sizes_b.astype(int), 0.53).astype(float)
    delta = st.cluster_ratio_delta(num_a, sizes_a, num_b, sizes_b)
    boot = st.cluster_ratio_difference(num_a, sizes_a, num_b, sizes_b, seed=1)
    assert delta is not None and boot is not None
    assert delta["difference"] == pytest.approx(boot["difference"])
    width_delta, width_boot = delta["ci"][1] - delta["ci"][0], boot["ci"][1] - boot["ci"][0]
    assert width_delta == pytest.approx(width_boot, rel=0.12)
    assert (delta["p_value"] < 0.05) == (boot["p_value"] < 0.05)
