"""The report's recommendation per candidate: decided on the quality metric with the adjusted
p-value, latency named as the price, no verdict without ground truth, the split checked first."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from experiments.report.analyse import analyse
from experiments.report.html import render_html
from experiments.report.recommend import P95_MIN_SAMPLES, Decision
from experiments.report.text import render_terminal

LABELS = ["a", "b", "c"]


def _records(rng: np.random.Generator, arms: dict[str, tuple[float, float | None]], n: int) -> pd.DataFrame:
    """n answered rows per version: latency lognormal around its median; with an accuracy, each row
    labelled correct with that probability."""
    rows = []
    for v, (median_ms, accuracy) in arms.items():
        correct = rng.random(n) < accuracy if accuracy is not None else [np.nan] * n
        for i, (ms, label, ok) in enumerate(zip(rng.lognormal(np.log(median_ms), 0.2, n), rng.choice(LABELS, n),
                                                correct, strict=True)):
            rows.append({"request_id": f"{v}-{i}", "role": "primary", "model_version": v, "prediction": label,
                         "latency_ms": ms, "routing": "weighted", "weights": "", "config_hash": "h", "ts_ms": i,
                         "row_index": 0, "correct": float(ok)})
    return pd.DataFrame(rows)


def _candidates(records: pd.DataFrame) -> dict[str, dict]:  # type: ignore[type-arg]
    report = analyse(records, control="v1.0")
    return report["recommendation"]["candidates"]  # type: ignore[no-any-return]


def test_a_more_accurate_candidate_within_the_tolerance_is_promoted_with_its_price_named() -> None:
    rng = np.random.default_rng(1)
    out = _candidates(_records(rng, {"v1.0": (1.0, 0.80), "v2.0": (1.25, 0.92), "v3.0": (1.0, 0.80)}, 600))
    v2, v3 = out["v2.0"], out["v3.0"]
    assert v2["decision"] == Decision.PROMOTE and v2["slowdown"] is None
    assert v2["line"].startswith("v2.0: promote: more accurate, +") and "ms slower at p50" in v2["line"]
    assert v3["decision"] == Decision.NO_DIFFERENCE and "accuracy: no detectable difference" in v3["line"]


def test_speed_weighs_in_a_slower_equal_one_is_not_promoted_a_better_one_is_a_trade_off() -> None:
    """The breast-cancer case of issue 34: equal accuracy, p95 many times the control's, said "no
    difference found". Now the first words say it."""
    rng = np.random.default_rng(6)
    records = _records(rng, {"v1.0": (1.0, 0.90), "v2.0": (25.0, 0.90), "v3.0": (3.0, 0.99),
                             "v4.0": (25.0, None)}, 600)
    report = analyse(records, control="v1.0")
    out = report["recommendation"]["candidates"]
    assert out["v2.0"]["decision"] == Decision.SLOWER and out["v2.0"]["slowdown"] > 20
    assert out["v2.0"]["line"].startswith("v2.0: do not promote: slower: ") and "x slower at p95" in out["v2.0"]["line"]
    trade = out["v3.0"]
    assert trade["decision"] == Decision.TRADE_OFF
    assert re.match(r"v3\.0: trade-off: \+\d+\.\d points, 3\.\dx slower at p95: weigh them; more accurate",
                    trade["line"]), trade["line"]
    # accuracy unknown for v4.0 (no labels for it): too slow is enough to say no
    assert out["v4.0"]["decision"] == Decision.SLOWER
    mixed = records
    # A looser tolerance turns the trade-off into a promotion, the price still named.
    looser = analyse(mixed, control="v1.0", max_slowdown=4.0)["recommendation"]
    assert looser["candidates"]["v3.0"]["decision"] == Decision.PROMOTE and looser["max_slowdown"] == 4.0
    assert "clearly slower past 4x the control's p95" in render_terminal(analyse(mixed, control="v1.0",
                                                                                  max_slowdown=4.0))


def test_a_less_accurate_candidate_keeps_the_control() -> None:
    rng = np.random.default_rng(2)
    out = _candidates(_records(rng, {"v1.0": (1.0, 0.9), "v2.0": (1.0, 0.7)}, 500))
    assert out["v2.0"]["decision"] == Decision.KEEP_CONTROL and "less accurate, -" in out["v2.0"]["line"]


def test_without_feedback_there_is_no_verdict_on_quality_and_few_samples_say_so() -> None:
    rng = np.random.default_rng(3)
    out = _candidates(_records(rng, {"v1.0": (1.0, None), "v2.0": (1.0, None)}, P95_MIN_SAMPLES // 2))
    line = out["v2.0"]["line"]
    assert out["v2.0"]["decision"] == Decision.NO_GROUND_TRUTH
    assert "accuracy unknown" in line and "--feedback" in line and "not enough samples for p95" in line


def test_a_sample_ratio_mismatch_comes_first() -> None:
    rng = np.random.default_rng(4)
    records = pd.concat([_records(rng, {"v1.0": (1.0, 0.8)}, 900), _records(rng, {"v2.0": (1.0, 0.95)}, 300)])
    records["weights"] = "v1.0=0.5,v2.0=0.5"
    out = _candidates(records)
    assert out["v2.0"]["decision"] == Decision.CHECK_SPLIT and "sample ratio mismatch" in out["v2.0"]["evidence"][0]


def test_the_recommendation_ends_the_terminal_report_and_is_in_the_html() -> None:
    rng = np.random.default_rng(5)
    records = _records(rng, {"v1.0": (1.0, 0.80), "v2.0": (1.0, 0.92)}, 400)
    report = analyse(records, control="v1.0")
    text = render_terminal(report)
    assert text.splitlines()[-1].startswith("  v2.0: promote: more accurate")
    assert "accuracy" in text.splitlines()[2] + text.splitlines()[3]  # the versions table's accuracy column
    page = render_html(report, records)
    assert "<h2>Recommendation</h2>" in page and "<b>v2.0: promote</b>: more accurate, +" in page
    assert "<h2>Always-valid tests</h2>" in page and "from feedback" in page  # the accuracy column
    assert page.count("data:image/png;base64,") >= 3  # latency, classes, accuracy
    assert "filters: none (every prediction run)" in page
    # the tests table names what each figure counts: the accuracy test its accuracies and labels
    row = re.search(r"<tr><th>Accuracy from feedback</th>.*?</tr>", page)
    assert row and "accuracy: v1.0 0." in row.group(0) and "labelled: v1.0 400, v2.0 400" in row.group(0)


def test_latencies_far_apart_are_drawn_on_a_log_axis() -> None:
    from experiments.report.charts import log_latency_axis

    rng = np.random.default_rng(7)
    assert log_latency_axis(_records(rng, {"v1.0": (1.0, None), "v2.0": (40.0, None)}, 50))
    assert not log_latency_axis(_records(rng, {"v1.0": (1.0, None), "v2.0": (2.0, None)}, 50))
