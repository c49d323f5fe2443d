"""The comparison's statistics: hand-checked values, an A/A simulation, and detection of known shifts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.report import statistics as st
from experiments.report.analyse import analyse
from experiments.report.build import build_filter, parse_time

REPS = 200


def test_chi2_and_cramers_v_hand_computed() -> None:
    # [[10, 20], [20, 10]]: expected 15 everywhere, chi2 = 4 * 25 / 15 = 6.667, V = sqrt(6.667 / 60) = 1/3.
    res = st.class_chi2(np.array([[10, 20], [20, 10]]))
    assert res is not None
    assert math.isclose(res["chi2"], 20 / 3, rel_tol=1e-9)
    assert math.isclose(res["cramers_v"], 1 / 3, rel_tol=1e-9)
    assert math.isclose(res["p_value"], math.erfc(math.sqrt(20 / 3 / 2)), rel_tol=1e-9)  # chi2, 1 dof
    assert res["dof"] == 1 and res["significant"]


def test_srm_hand_computed() -> None:
    # 70/30 configured, 720/280 observed of 1000: chi2 = 20^2/700 + 20^2/300 = 1.905
    res = st.srm({"v1.0": 720, "v2.0": 280}, {"v1.0": 0.7, "v2.0": 0.3})
    assert res is not None and math.isclose(res["chi2"], 400 / 700 + 400 / 300, rel_tol=1e-9)
    assert not res["mismatch"]
    assert st.srm({"v1.0": 600, "v2.0": 400}, {"v1.0": 0.5, "v2.0": 0.5})["mismatch"]  # type: ignore[index]
    assert st.srm({"v1.0": 10}, {"v1.0": 1.0, "v2.0": 0.0}) is None


def test_agreement_wilson_interval() -> None:
    res = st.agreement(np.array([0, 1, 2, 2] * 25), np.array([0, 1, 2, 1] * 25))
    assert res is not None and res["n"] == 100 and res["agree"] == 75 and res["rate"] == 0.75
    # Wilson 95% interval for 75/100: 0.6569-0.8245
    assert res["ci"][0] == pytest.approx(0.6569, abs=1e-3) and res["ci"][1] == pytest.approx(0.8245, abs=1e-3)


def test_latency_summary_figures() -> None:
    values = np.arange(1, 101, dtype=float)  # 1..100
    s = st.latency_summary(values)
    assert s["mean"] == 50.5 and s["p50"] == 50.5
    assert s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)
    assert s["p50_ci"][0] < 50.5 < s["p50_ci"][1]


def _aa_false_positive_rates(seed: int = 20261126) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    hits = {"class_chi2": 0, "latency_mwu": 0, "srm": 0}
    probs = [0.3, 0.35, 0.35]
    for _ in range(REPS):
        n_a, n_b = rng.multinomial(800, [0.5, 0.5])
        table = np.array([rng.multinomial(n_a, probs), rng.multinomial(n_b, probs)])
        hits["class_chi2"] += st.class_chi2(table)["p_value"] < 0.05  # type: ignore[index]
        a = rng.lognormal(0.0, 0.4, size=n_a)
        b = rng.lognormal(0.0, 0.4, size=n_b)
        hits["latency_mwu"] += st.latency_mwu(a, b, n_resamples=20)["p_value"] < 0.05  # type: ignore[index]
        srm = st.srm({"v1.0": int(n_a), "v2.0": int(n_b)}, {"v1.0": 0.5, "v2.0": 0.5})
        hits["srm"] += srm["p_value"] < 0.05  # type: ignore[index]
    return {k: v / REPS for k, v in hits.items()}


def test_aa_simulation_false_positive_rates_are_nominal() -> None:
    rates = _aa_false_positive_rates()
    print("A/A false-positive rates at alpha 0.05 over", REPS, "replications:", rates)
    for name, rate in rates.items():
        assert 0.02 <= rate <= 0.09, (name, rate)


def _records(n: int, seed: int, shift_ms: float = 0.0, class_probs_b: list[float] | None = None,
             split: float = 0.5, weights: str = "v1.0=0.5,v2.0=0.5") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    version = np.where(rng.random(n) < split, "v1.0", "v2.0")
    latency = rng.lognormal(-1.0, 0.3, size=n) + np.where(version == "v2.0", shift_ms, 0.0)
    pa, pb = [0.33, 0.33, 0.34], class_probs_b or [0.33, 0.33, 0.34]
    classes = [st_choice(rng, pa if v == "v1.0" else pb) for v in version]
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "role": "primary", "model_version": version,
                         "prediction": classes, "latency_ms": latency, "ts_ms": np.arange(n), "routing": "weighted",
                         "config_hash": "h1", "weights": weights})


def st_choice(rng: np.random.Generator, probs: list[float]) -> str:
    return ["Setosa", "Versicolor", "Virginica"][int(rng.choice(3, p=probs))]


def test_known_shifts_are_detected() -> None:
    report = analyse(_records(1200, 1, shift_ms=0.05, class_probs_b=[0.2, 0.3, 0.5]))
    mwu = report["tests"]["latency_mwu"]
    assert mwu["significant"] and mwu["median_diff_ms"] > 0 and mwu["a"] == "v1.0" and mwu["b"] == "v2.0"
    assert mwu["median_diff_ci"][0] < 0.05 < mwu["median_diff_ci"][1]
    assert report["tests"]["class_chi2"]["significant"]
    assert any("v2.0 is slower than v1.0" in v for v in report["verdicts"])
    srm = analyse(_records(2000, 2, split=0.6))["tests"]["srm"]
    assert srm["mismatch"] and srm["p_value"] < 0.001


def test_no_difference_verdict_mentions_sample_size() -> None:
    df = _records(60, 3, split=0.5)
    v1 = df["model_version"] == "v1.0"
    df.loc[~v1, "latency_ms"] = np.resize(df.loc[v1, "latency_ms"].to_numpy() * 10, (~v1).sum())
    df.loc[v1, "latency_ms"] = df.loc[v1, "latency_ms"] * 10  # both groups the same wide distribution
    report = analyse(df)
    text = " ".join(report["verdicts"])
    assert "no detectable difference" in text and "n = 60" in text


def test_single_version_reports_without_tests() -> None:
    df = _records(100, 4, split=1.0)
    report = analyse(df)
    assert list(report["versions"]) == ["v1.0"] and report["tests"]["class_chi2"] is None
    assert report["tests"]["latency_mwu"] is None
    assert any("only v1.0" in v for v in report["verdicts"])


def test_shadow_pairs_by_request_id() -> None:
    primary = _records(300, 5, split=1.0)
    shadow = primary.copy()
    shadow["role"], shadow["model_version"], shadow["routing"] = "shadow", "v2.0", "shadow"
    shadow["latency_ms"] = primary["latency_ms"] + 0.2
    flip = shadow.index[:30]
    shadow.loc[flip, "prediction"] = shadow.loc[flip, "prediction"].map(
        {"Setosa": "Versicolor", "Versicolor": "Virginica", "Virginica": "Setosa"})
    report = analyse(pd.concat([primary, shadow]))
    sh = report["shadow"]
    assert sh["agreement"]["rate"] == pytest.approx(0.9) and sh["pairs"] == 300
    assert np.array(sh["confusion"]["matrix"]).sum() == 300 and np.trace(sh["confusion"]["matrix"]) == 270
    assert sh["paired_latency"]["median_diff_ms"] == pytest.approx(0.2) and sh["paired_latency"]["p_value"] < 0.001


def test_filters_and_times() -> None:
    assert build_filter(since=1, until=2, config_hash="abc", role="shadow") == (
        "attributes.start_time >= 1 and attributes.start_time < 2 and tags.config_hash = 'abc' "
        "and tags.role = 'shadow'")
    assert build_filter(role="all") == ""
    assert parse_time("2h", now=10_000.0) == (10_000 - 7200) * 1000
    assert parse_time("2026-01-01T00:00") == 1767225600000
    with pytest.raises(Exception, match="not a time"):
        parse_time("yesterday")
    with pytest.raises(Exception, match="hexadecimal"):
        build_filter(config_hash="x' or 1=1")


def test_accuracy_and_its_difference() -> None:
    acc = st.accuracy(np.array([1, 1, 1, 0, np.nan] * 20))
    assert acc is not None and acc["n"] == 80 and acc["correct"] == 60 and acc["rate"] == 0.75
    res = st.accuracy_difference(np.array([[45, 5], [30, 20]]))
    from scipy.stats import fisher_exact

    assert res is not None and res["test"] == "fisher_exact"
    assert res["p_value"] == pytest.approx(fisher_exact([[45, 5], [30, 20]]).pvalue) and res["significant"]
    df = _records(400, 6)
    df["correct"] = np.where(df["model_version"] == "v1.0", 1.0, (np.arange(400) % 2).astype(float))
    report = analyse(df)
    assert report["versions"]["v1.0"]["accuracy"]["rate"] == 1.0
    assert report["tests"]["accuracy"]["significant"]
    assert any(v.startswith("accuracy differs between v1.0 and v2.0") for v in report["verdicts"])


def _regression_records(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    version = np.where(np.arange(n) % 2 == 0, "v1.0", "v2.0")
    value = rng.normal(150.0, 40.0, size=n) + np.where(version == "v2.0", shift, 0.0)
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "role": "primary", "model_version": version,
                         "kind": "regressor", "prediction": value, "value": value,
                         "latency_ms": rng.lognormal(-1.0, 0.3, size=n), "ts_ms": np.arange(n),
                         "routing": "weighted", "config_hash": "h1", "weights": "v1.0=0.5,v2.0=0.5"})


def test_regressor_distribution_and_two_sample_tests() -> None:
    from scipy import stats

    df = _regression_records(800, 7, shift=20.0)
    report = analyse(df)
    assert report["kind"] == "regressor" and report["labels"] is None
    for v in ("v1.0", "v2.0"):
        values = df.loc[df["model_version"] == v, "value"].to_numpy()
        p = report["versions"][v]["predictions"]
        assert p["mean"] == pytest.approx(values.mean()) and p["p50"] == pytest.approx(np.median(values))
        assert p["p95"] == pytest.approx(np.quantile(values, 0.95))
    a = df.loc[df["model_version"] == "v1.0", "value"].to_numpy()
    b = df.loc[df["model_version"] == "v2.0", "value"].to_numpy()
    assert report["tests"]["prediction_ks"]["p_value"] == pytest.approx(stats.ks_2samp(a, b).pvalue)
    assert report["tests"]["prediction_mwu"]["significant"] and report["tests"]["prediction_mwu"]["median_diff"] > 0
    assert any(v.startswith("predicted values differ between v2.0 and v1.0") for v in report["verdicts"])
    same = analyse(_regression_records(400, 8))
    assert not same["tests"]["prediction_ks"]["significant"]


def test_regressor_shadow_difference_and_correlation() -> None:
    primary = _regression_records(200, 9)
    primary["model_version"] = "v1.0"
    shadow = primary.assign(role="shadow", model_version="v2.0", routing="shadow")
    shadow["value"] = shadow["prediction"] = primary["value"] + 5.0
    report = analyse(pd.concat([primary, shadow]))
    d = report["shadow"]["difference"]
    assert d["n"] == 200 and d["mean_abs_diff"] == pytest.approx(5.0) and d["pearson_r"] == pytest.approx(1.0)
    assert report["shadow"]["agreement"] is None and report["shadow"]["confusion"] is None


def test_batched_records_report_the_request_time_beside_the_call_time() -> None:
    from experiments.report.text import render_terminal

    df = _records(400, 5)
    df["request_time_ms"] = df["latency_ms"] * 3
    df["batch_rows"] = np.where(df["model_version"] == "v1.0", 4.0, 1.0)
    report = analyse(df)
    v1 = report["versions"]["v1.0"]
    assert v1["batch_rows_mean"] == 4.0 and report["versions"]["v2.0"]["batch_rows_mean"] == 1.0
    assert v1["request_time_ms"]["p50"] == pytest.approx(3 * v1["latency_ms"]["p50"], rel=1e-9)
    text = render_terminal(report)
    assert "request p50" in text and "rows/call" in text
    assert "request_time_ms" not in analyse(_records(100, 6))["versions"]["v1.0"]  # runs logged before batching


def test_the_report_puts_always_valid_results_beside_the_fixed_horizon_ones() -> None:
    from experiments.report.text import render_terminal

    df = _records(4000, 11, shift_ms=0.3, class_probs_b=[0.2, 0.3, 0.5], split=0.6)
    df["correct"] = np.where(df["model_version"] == "v1.0", 1.0, (np.arange(len(df)) % 2).astype(float))
    report = analyse(df)
    seq = report["sequential"]
    assert (seq["a"], seq["b"]) == ("v1.0", "v2.0") and seq["alpha"] == 0.05
    tests = seq["tests"]
    p95 = tests["latency_p95_ratio"]
    assert p95["fixed_horizon"]["p_value"] == report["tests"]["latency_mwu"]["p_value"]
    assert p95["always_valid"]["estimate"] > 1 and p95["always_valid"]["p_value"] < 0.05
    acc = tests["accuracy_difference"]["always_valid"]
    assert acc["interval"][1] < 0 and acc["estimate"] == pytest.approx(-0.5, abs=0.02)
    assert tests["class_share_difference[Virginica]"]["always_valid"]["p_value"] < 0.05
    srm = tests["sample_ratio"]  # 60/40 traffic under weights 50/50
    assert srm["always_valid"]["p_value"] < 0.001 and srm["fixed_horizon"]["p_value"] < 0.001
    # No difference: the always-valid test stays quiet.
    same = analyse(_records(600, 12))["sequential"]["tests"]
    assert same["latency_p95_ratio"]["always_valid"]["p_value"] > 0.05
    text = render_terminal(report)
    assert "always-valid p" in text and "fixed-horizon test" in text and "latency_p95_ratio" in text
