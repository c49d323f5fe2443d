"""The always-valid column on the engine path: the same tests as experiments/report/sequential.py,
looked at along time from aggregates instead of rows.

The engine cuts the range into ``BUCKETS`` equal slices of time and returns, per slice and version,
counts, sums and sums of squares, class counts, labels, and a latency histogram (the 2%-wide bins of
gateway/stats/sequential.py). Each of the pandas path's looks (``LOOKS`` points, evenly spaced in rows)
becomes the end of the first slice by which that many rows had arrived, and the tests run on the
cumulative aggregates there. So the p-values are those of looks a slice later at most; the p95 ratio's
interval is at most one bin (2%) wider than the exact one (histogram_quantile_ratio); the means,
shares, accuracy and sample ratio are exact at each look.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.report.engine import queries as q
from experiments.report.engine.engines import Engine
from experiments.report.engine.queries import Filters, quote
from experiments.report.sequential import LOOKS, METHOD, _beside, _look_points, _path_min, with_family
from gateway.stats import sequential as sq

BUCKETS = 400
_BIN = (f"CASE WHEN inference_time_ms > {sq.BIN_BASE} THEN CAST(FLOOR(LN(inference_time_ms / {sq.BIN_BASE}) / "
        f"LN({sq.BIN_GROWTH})) AS BIGINT) ELSE 0 END")


class Slices:
    """Per (slice of time, version) aggregates of the primary rows, from the engine."""

    def __init__(self, engine: Engine, f: Filters, labels: list[str]) -> None:
        where = f.sql("p", "primary")
        bounds = engine.frame(f"SELECT MIN(ts_ms) AS lo, MAX(ts_ms) AS hi FROM predictions AS p WHERE {where}")
        lo, hi = bounds["lo"].iloc[0], bounds["hi"].iloc[0]
        self.empty = pd.isna(lo)
        if self.empty:
            return
        self.lo, self.width = int(lo), max(1, -(-(int(hi) - int(lo) + 1) // BUCKETS))
        bucket = f"CAST(FLOOR((p.ts_ms - {self.lo}) / {self.width}) AS BIGINT)"
        classes = "".join(f", SUM(CASE WHEN p.prediction = {quote(lbl)} THEN 1 ELSE 0 END) AS class_{i}"
                          for i, lbl in enumerate(labels))
        stats = engine.frame(f"""
            SELECT {bucket} AS b, p.model_version, COUNT(*) AS n, SUM(p.inference_time_ms) AS s,
                   SUM(p.inference_time_ms * p.inference_time_ms) AS ss{classes}
            FROM predictions AS p WHERE {where} GROUP BY 1, 2""")
        # the labels per slice from the judged rows (the one join, queries.judged_sql), by prediction time
        judged = engine.frame(f"SELECT {bucket} AS b, p.model_version, COUNT(*) AS labelled, SUM(p.right_) AS right_ "
                              f"FROM {q.judged_rows(f)} AS p GROUP BY 1, 2")
        self.stats = stats.merge(judged, on=["b", "model_version"], how="left").fillna({"labelled": 0, "right_": 0.0})
        self.histograms = engine.frame(f"""
            SELECT {bucket} AS b, p.model_version, {_BIN.replace('inference_time_ms', 'p.inference_time_ms')} AS bin,
                   COUNT(*) AS n
            FROM predictions AS p WHERE {where} GROUP BY 1, 2, 3""")

    def cumulative(self, version: str, columns: list[str]) -> pd.DataFrame:
        """Per slice, the version's running totals of ``columns`` (every slice, 0 where it had none)."""
        mine = self.stats[self.stats["model_version"] == version].set_index("b")[columns]
        return mine.reindex(range(BUCKETS + 1), fill_value=0).astype(float).cumsum()


def _looks(total_a: np.ndarray, total_b: np.ndarray, min_n: int) -> list[int]:
    """The slices where the pandas path's looks fall (each arm with at least ``min_n``)."""
    both = total_a + total_b
    out: list[int] = []
    for target in _look_points(int(both[-1])):
        at = int(np.searchsorted(both, target))
        if total_a[at] >= min_n and total_b[at] >= min_n and (not out or out[-1] != at):
            out.append(at)
    return out


def _mean_test(s: Slices, a: str, b: str) -> dict[str, Any] | None:
    ca, cb = s.cumulative(a, ["n", "s", "ss"]), s.cumulative(b, ["n", "s", "ss"])
    if ca["n"].iloc[-1] < 2 or cb["n"].iloc[-1] < 2:
        return None

    def estimate(i: int) -> sq.SequentialEstimate:
        parts = []
        for c in (ca, cb):
            n, total, squares = c["n"].iloc[i], c["s"].iloc[i], c["ss"].iloc[i]
            mean = total / n
            parts += [mean, max(0.0, (squares - n * mean * mean) / (n - 1)), n]
        return sq.mean_difference(*parts)

    path = [estimate(i).p_value for i in _looks(ca["n"].to_numpy(), cb["n"].to_numpy(), 2)]
    return {**estimate(-1).as_dict(), "p_value": _path_min(path), "n_a": int(ca["n"].iloc[-1]),
            "n_b": int(cb["n"].iloc[-1])}


def _proportion_test(s: Slices, a: str, b: str, k: str, n: str) -> dict[str, Any] | None:
    ca, cb = s.cumulative(a, [k, n]), s.cumulative(b, [k, n])
    if ca[n].iloc[-1] < 2 or cb[n].iloc[-1] < 2:
        return None
    looks = _looks(ca[n].to_numpy(), cb[n].to_numpy(), 0)
    path = sq.proportion_difference(ca[k].to_numpy()[looks], ca[n].to_numpy()[looks], cb[k].to_numpy()[looks],
                                    cb[n].to_numpy()[looks])
    final = sq.proportion_difference(ca[k].iloc[-1], ca[n].iloc[-1], cb[k].iloc[-1], cb[n].iloc[-1])
    return {**final.as_dict(), "p_value": _path_min(path.p_value), "n_a": int(ca[n].iloc[-1]),
            "n_b": int(cb[n].iloc[-1])}


def _p95_test(s: Slices, a: str, b: str) -> dict[str, Any] | None:
    h = s.histograms
    ha, hb = h[h["model_version"] == a], h[h["model_version"] == b]
    if ha["n"].sum() < 2 or hb["n"].sum() < 2:
        return None

    def upto(frame: pd.DataFrame, i: int) -> dict[int, int]:
        part = frame[frame["b"] <= i].groupby("bin")["n"].sum()
        return {int(k): int(v) for k, v in part.items()}

    ca, cb = s.cumulative(a, ["n"]), s.cumulative(b, ["n"])
    path = [sq.histogram_quantile_ratio(upto(ha, i), upto(hb, i)).p_value
            for i in _looks(ca["n"].to_numpy(), cb["n"].to_numpy(), 1)]
    final = sq.histogram_quantile_ratio(upto(ha, BUCKETS), upto(hb, BUCKETS))
    return {**final.as_dict(), "p_value": _path_min(path), "n_a": int(ha["n"].sum()), "n_b": int(hb["n"].sum())}


def _pair_tests(s: Slices, labels: list[str], a: str, b: str, fixed: dict[str, Any]) -> dict[str, Any]:
    tests: dict[str, Any] = {
        "latency_p95_ratio": _beside(_p95_test(s, a, b), "Mann-Whitney U (medians)", fixed.get("latency")),
        "latency_mean_difference_ms": _beside(_mean_test(s, a, b), "Mann-Whitney U", fixed.get("latency")),
    }
    for i, label in enumerate(labels):
        tests[f"class_share_difference[{label}]"] = _beside(_proportion_test(s, a, b, f"class_{i}", "n"),
                                                           "chi-square (all classes)", fixed.get("classes"))
    tests["accuracy_difference"] = _beside(_proportion_test(s, a, b, "right_", "labelled"), "Fisher's exact",
                                           fixed.get("accuracy"))
    return {k: v for k, v in tests.items() if v is not None}


def srm_test(engine: Engine, units_sql: str, weights: dict[str, float], fixed: dict[str, Any] | None
             ) -> dict[str, Any] | None:
    """The sample ratio along time, from the units' (requests' or users' first requests') counts per
    slice of time and version: exact at each look (a look may fall a slice later)."""
    names = [n for n, w in weights.items() if w > 0]
    if len(names) < 2:
        return None
    bounds = engine.frame(f"SELECT MIN(ts_ms) AS lo, MAX(ts_ms) AS hi FROM ({units_sql}) AS u")
    if pd.isna(bounds["lo"].iloc[0]):
        return None
    lo, hi = int(bounds["lo"].iloc[0]), int(bounds["hi"].iloc[0])
    width = max(1, -(-(hi - lo + 1) // BUCKETS))
    counts = engine.frame(f"SELECT CAST(FLOOR((ts_ms - {lo}) / {width}) AS BIGINT) AS b, model_version, "
                          f"COUNT(*) AS n FROM ({units_sql}) AS u GROUP BY 1, 2")
    table = (counts.pivot_table(index="b", columns="model_version", values="n", aggfunc="sum", fill_value=0)
             .reindex(index=range(BUCKETS + 1), columns=names, fill_value=0).cumsum().to_numpy(dtype=float))
    total = table.sum(axis=1)
    looks = sorted({int(np.searchsorted(total, t)) for t in _look_points(int(total[-1]))})
    p = sq.srm_p_value(table[looks], [weights[n] for n in names])
    seq = {"p_value": _path_min(p), "observed": dict(zip(names, table[-1].astype(int).tolist(), strict=True)),
           "n": int(total[-1])}
    return _beside(seq, "chi-square goodness of fit", fixed)


def sequential_section(report: dict[str, Any], slices: Slices, names: list[str],
                       srm: dict[str, Any] | None) -> dict[str, Any]:
    """``report["sequential"]`` in the pandas path's form (experiments/report/sequential.py)."""
    tests: dict[str, Any] = {}
    out: dict[str, Any] = {"method": METHOD, "alpha": sq.ALPHA, "n_star": sq.N_STAR, "looks": LOOKS, "tests": tests,
                           "looked_at": f"the ends of {BUCKETS} equal slices of time (engine path)"}
    comparisons = report.get("comparisons") or {}
    control = comparisons.get("control") or (names[0] if names else None)
    others = [v for v in names if v != control]
    if control is not None and others and not slices.empty:
        pairs = {v: _pair_tests(slices, report["labels"] or [], control, v,
                                (comparisons.get("pairs") or {}).get(v, {})) for v in others}
        with_family(out, pairs, control, comparisons.get("correction", "holm"))
    if srm is not None:
        tests["sample_ratio"] = srm
    return out
