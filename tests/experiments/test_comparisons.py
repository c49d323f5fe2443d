"""A/B/n against a control with the p-values adjusted for the number of tests: Holm keeps the chance
of any false positive at alpha where unadjusted tests do not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from experiments.report.analyse import analyse
from experiments.report.comparisons import adjust, compare_to_control
from experiments.report.html import render_html
from experiments.report.text import render_terminal

LABELS = ["a", "b", "c"]


def _records(rng: np.random.Generator, versions: dict[str, tuple[float, list[float]]], n: int) -> pd.DataFrame:
    """n answered rows per version: latency lognormal around its median, classes drawn from its shares."""
    rows = []
    for v, (median_ms, shares) in versions.items():
        for i, (ms, label) in enumerate(zip(rng.lognormal(np.log(median_ms), 0.3, n), rng.choice(LABELS, n, p=shares),
                                            strict=True)):
            rows.append({"request_id": f"{v}-{i}", "role": "primary", "model_version": v, "prediction": label,
                         "latency_ms": ms, "routing": "weighted", "weights": "", "config_hash": "h", "ts_ms": i,
                         "row_index": 0, "correct": np.nan})
    return pd.DataFrame(rows)


def test_holm_and_bh_match_their_definitions() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])  # 4 * 0.005, 3 * 0.01, max(2 * .03, .03)...
    assert adjust(p, "bh") == pytest.approx(stats.false_discovery_control(p, method="bh"))
    assert adjust(p, "none") == p
    with pytest.raises(ValueError, match="holm, bh, none"):
        adjust(p, "bonferroni")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_adjusted_p_values_are_valid_and_ordered(p: list[float]) -> None:
    holm, bh = np.array(adjust(p, "holm")), np.array(adjust(p, "bh"))
    raw = np.array(p)
    assert (holm >= raw - 1e-12).all() and (holm <= 1).all() and (bh >= raw - 1e-12).all()
    assert (holm >= bh - 1e-12).all()  # Holm is the stricter
    order = np.argsort(raw, kind="stable")
    assert (np.diff(holm[order]) >= -1e-12).all()  # a smaller raw p never gets a larger adjusted one


def test_aa_with_three_identical_arms_holm_keeps_false_positives_at_alpha() -> None:
    rng = np.random.default_rng(7)
    same = (20.0, [0.5, 0.3, 0.2])
    experiments, any_raw, any_holm = 500, 0, 0
    for _ in range(experiments):
        records = _records(rng, {"v1": same, "v2": same, "v3": same}, 60)
        section = compare_to_control(records, ["v1", "v2", "v3"], "v1", LABELS, correction="holm", seed=None)
        tests = [t for pair in section["pairs"].values() for t in pair.values()]
        assert section["family_size"] == len(tests) == 4  # 2 versions x (classes, latency)
        any_raw += any(t["p_value"] < 0.05 for t in tests)
        any_holm += any(t["significant"] for t in tests)
    raw_rate, holm_rate = any_raw / experiments, any_holm / experiments
    print(f"A/A, 3 arms, 4 tests, {experiments} experiments: any false positive unadjusted {raw_rate:.1%}, "
          f"Holm-adjusted {holm_rate:.1%}")
    slack = 2.5 * np.sqrt(0.05 * 0.95 / experiments)
    assert holm_rate <= 0.05 + slack
    assert raw_rate > holm_rate  # what the correction is for


def test_the_report_compares_every_version_with_the_control_everywhere() -> None:
    rng = np.random.default_rng(3)
    records = _records(rng, {"v1.0": (20.0, [0.5, 0.3, 0.2]), "v2.0": (20.0, [0.5, 0.3, 0.2]),
                             "v3.0": (30.0, [0.2, 0.3, 0.5])}, 400)
    report = analyse(records, control="v2.0", correction="bh")
    section = report["comparisons"]
    assert section["control"] == "v2.0" and set(section["pairs"]) == {"v1.0", "v3.0"}
    assert section["pairs"]["v3.0"]["latency"]["significant"] and section["pairs"]["v3.0"]["classes"]["significant"]
    assert not section["pairs"]["v1.0"]["latency"]["significant"]
    text = render_terminal(report)
    assert "against the control v2.0 (Benjamini-Hochberg-adjusted across 4 tests" in text
    assert "raw p" in text and "adjusted p" in text
    html = render_html(report, records.rename(columns={}))
    assert "v2.0 <small>(control)</small>" in html and "adjusted p" in html
    assert any("v3.0 against control v2.0: latency differs" in v for v in report["verdicts"])
    seq = report["sequential"]  # the always-valid tests: every version against the same control, adjusted
    assert seq["a"] == "v2.0" and set(seq["pairs"]) == {"v1.0", "v3.0"} and seq["correction"] == "bh"
    ratio = seq["pairs"]["v3.0"]["latency_mean_difference_ms"]["always_valid"]
    assert ratio["p_adjusted"] >= ratio["p_value"] and ratio["p_adjusted"] < 0.05
    assert "always-valid tests (against the control v2.0" in text
    default = analyse(records)  # no control named: the first version by name
    assert default["comparisons"]["control"] == "v1.0" and default["comparisons"]["correction"] == "holm"


def test_shadow_pairs_with_ground_truth_get_an_exact_mcnemar_test() -> None:
    from experiments.report.analyse import shadow_analysis
    from experiments.report.statistics import mcnemar_exact

    res = mcnemar_exact(np.array([True] * 10 + [False] * 2 + [True] * 5),
                        np.array([False] * 10 + [True] * 2 + [True] * 5))
    assert (res["only_primary_right"], res["only_candidate_right"]) == (10, 2)
    assert res["p_value"] == pytest.approx(stats.binomtest(2, 12, 0.5).pvalue)
    rng = np.random.default_rng(5)
    truth = rng.choice(LABELS, 400)
    primary_pred = np.where(rng.random(400) < 0.7, truth, "c")  # right about 70% (plus when the truth is c)
    shadow_pred = np.where(rng.random(400) < 0.95, truth, "c")
    base = {"role": "primary", "latency_ms": 1.0, "row_index": 0}
    primary = pd.DataFrame([{**base, "request_id": f"r{i}", "model_version": "v1", "prediction": p,
                             "true_label": t if i % 2 == 0 else None} for i, (p, t) in
                            enumerate(zip(primary_pred, truth, strict=True))])
    shadow = pd.DataFrame([{**base, "role": "shadow", "request_id": f"r{i}", "model_version": "v2", "prediction": p,
                            "true_label": None} for i, p in enumerate(shadow_pred)])
    out = shadow_analysis(primary, shadow, labels=LABELS)
    paired = out["paired_accuracy"]
    assert paired["n"] == 200 and paired["significant"] and paired["candidate_accuracy"] > paired["primary_accuracy"]
    assert any("exact McNemar" in v for v in out["verdicts"])


def test_segments_have_their_own_correction_family() -> None:
    rng = np.random.default_rng(12)
    records = _records(rng, {"v1.0": (20.0, [0.5, 0.3, 0.2]), "v2.0": (20.0, [0.5, 0.3, 0.2])}, 800)
    records["segment"] = rng.uniform(0, 10, len(records))  # an input column, e.g. petal_length
    slow = (records["model_version"] == "v2.0") & (records["segment"] > 7.5)
    records.loc[slow, "latency_ms"] *= 1.5  # v2.0 is slower only where the column is high
    report = analyse(records, segment_by="petal_length")
    seg = report["segments"]
    assert seg["by"] == "petal_length" and seg["bins"].startswith("quartiles") and len(seg["segments"]) == 4
    assert seg["family_size"] == 8  # 4 segments x (classes, latency): apart from the overall family of 2
    assert report["comparisons"]["family_size"] == 2
    top = max(seg["segments"], key=lambda s: float(s.split(",")[1].strip(" ]")))
    assert seg["segments"][top]["pairs"]["v2.0"]["latency"]["significant"]
    assert not any(r["pairs"]["v2.0"]["latency"]["significant"] for s, r in seg["segments"].items() if s != top)
    assert "segments by petal_length" in render_terminal(report)
    assert "Segments by petal_length" in render_html(report, records)
    missing = analyse(records.drop(columns=["segment"]), segment_by="nope")
    assert "no record carries a value" in missing["segments"]["error"]
