"""The report's always-valid column: each between-version test again, as a sequential test, beside
the fixed-horizon one.

A fixed-horizon p-value is right only if this report is the one look at the data planned in advance.
Anyone who has looked before (or will look again as traffic flows) should read the always-valid one:
it is the running minimum over ``LOOKS`` looks along the records' time order, and it keeps its error
rate however often the report is run (see experiments/sequential.py for the methods and sources).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from experiments.report.comparisons import adjust
from gateway.stats import sequential as sq

LOOKS = 50
METHOD = ("mSPRT with a normal mixture (Johari et al. 2022) as an asymptotic confidence sequence "
          "(Waudby-Smith et al. 2024); p95 by the quantile confidence sequence of Howard and Ramdas "
          "(2022); sample ratio by the Dirichlet-multinomial test of Lindon and Malek (2022)")


def _look_points(n: int) -> np.ndarray:
    return np.unique(np.linspace(1, n, min(n, LOOKS)).astype(int)) if n else np.array([], int)


def _path_min(p_values: Any) -> float:
    p = np.atleast_1d(np.asarray(p_values, dtype=float))
    p = p[np.isfinite(p)]
    return float(p.min()) if p.size else 1.0


def _two_arms(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Both arms' records in time order, column ``_arm`` 0 for a and 1 for b."""
    return pd.concat([a.assign(_arm=0), b.assign(_arm=1)]).sort_values("ts_ms", kind="stable")


def proportion_test(a: pd.Series, b: pd.Series, ts_a: pd.Series, ts_b: pd.Series) -> dict[str, Any] | None:
    """b's rate minus a's for 0/1 outcomes (NaN: unknown), looked at along time."""
    fa = pd.DataFrame({"x": a.to_numpy(dtype=float), "ts_ms": ts_a.to_numpy()}).dropna()
    fb = pd.DataFrame({"x": b.to_numpy(dtype=float), "ts_ms": ts_b.to_numpy()}).dropna()
    if len(fa) < 2 or len(fb) < 2:
        return None
    both = _two_arms(fa, fb)
    looks = _look_points(len(both))
    x, arm = both["x"].to_numpy(), both["_arm"].to_numpy()
    k_a, k_b = np.cumsum(x * (arm == 0))[looks - 1], np.cumsum(x * (arm == 1))[looks - 1]
    n_a, n_b = np.cumsum(arm == 0)[looks - 1], np.cumsum(arm == 1)[looks - 1]
    path = sq.proportion_difference(k_a, n_a, k_b, n_b)
    final = sq.proportion_difference(k_a[-1], n_a[-1], k_b[-1], n_b[-1])
    return {**final.as_dict(), "p_value": _path_min(path.p_value), "n_a": int(n_a[-1]), "n_b": int(n_b[-1])}


def _along_time(a: pd.DataFrame, b: pd.DataFrame, column: str, min_n: int,
                look: Callable[[np.ndarray, np.ndarray], sq.SequentialEstimate]) -> tuple[float, sq.SequentialEstimate]:
    """The always-valid p-value of ``look`` over the looks along time (each arm with at least
    ``min_n`` values), and its result on everything."""
    both = _two_arms(a, b)
    values, arm = both[column].to_numpy(float), both["_arm"].to_numpy()
    p_path = []
    for n in _look_points(len(both)):
        xa, xb = values[:n][arm[:n] == 0], values[:n][arm[:n] == 1]
        if len(xa) >= min_n and len(xb) >= min_n:
            p_path.append(look(xa, xb).p_value)
    return _path_min(p_path), look(a[column].to_numpy(float), b[column].to_numpy(float))


def _mean_difference(xa: np.ndarray, xb: np.ndarray) -> sq.SequentialEstimate:
    return sq.mean_difference(xa.mean(), xa.var(ddof=1), len(xa), xb.mean(), xb.var(ddof=1), len(xb))


def _p95_ratio(xa: np.ndarray, xb: np.ndarray) -> sq.SequentialEstimate:
    return sq.quantile_ratio(np.sort(xa), np.sort(xb))


def mean_test(a: pd.DataFrame, b: pd.DataFrame, column: str) -> dict[str, Any] | None:
    """b's mean minus a's (latency or a regressor's value), looked at along time."""
    a, b = a[["ts_ms", column]].dropna(), b[["ts_ms", column]].dropna()
    if len(a) < 2 or len(b) < 2:
        return None
    p, final = _along_time(a, b, column, 2, _mean_difference)
    return {**final.as_dict(), "p_value": p, "n_a": len(a), "n_b": len(b)}


def p95_ratio_test(a: pd.DataFrame, b: pd.DataFrame, column: str = "latency_ms") -> dict[str, Any] | None:
    """p95 of b over p95 of a; the p-value asks whether b is slower (ratio above 1)."""
    a, b = a[["ts_ms", column]].dropna(), b[["ts_ms", column]].dropna()
    if len(a) < 2 or len(b) < 2:
        return None
    p, final = _along_time(a, b, column, 1, _p95_ratio)
    return {**final.as_dict(), "p_value": p, "n_a": len(a), "n_b": len(b)}


def srm_test(versions: pd.Series, ts: pd.Series, weights: dict[str, float]) -> dict[str, Any] | None:
    names = [n for n, w in weights.items() if w > 0]
    if len(names) < 2:
        return None
    order = np.argsort(ts.to_numpy(), kind="stable")
    v = versions.to_numpy()[order]
    looks = _look_points(len(v))
    counts = np.stack([np.cumsum(v == n)[looks - 1] for n in names], -1)
    p = sq.srm_p_value(counts, [weights[n] for n in names])
    return {"p_value": _path_min(p), "observed": dict(zip(names, counts[-1].tolist(), strict=True)), "n": len(v)}


def _pair_tests(report: dict[str, Any], a: pd.DataFrame, b: pd.DataFrame, fixed: dict[str, Any]) -> dict[str, Any]:
    """The always-valid tests of b against a, each beside its fixed-horizon counterpart's p-value."""
    tests: dict[str, Any] = {}
    tests["latency_p95_ratio"] = _beside(p95_ratio_test(a, b), "Mann-Whitney U (medians)", fixed.get("latency"))
    tests["latency_mean_difference_ms"] = _beside(mean_test(a, b, "latency_ms"), "Mann-Whitney U",
                                                  fixed.get("latency"))
    if report["kind"] == "regressor":
        tests["prediction_mean_difference"] = _beside(mean_test(a, b, "value"), "Mann-Whitney U",
                                                      fixed.get("predictions"))
    else:
        for label in report["labels"] or []:
            is_label_a = (a["prediction"].astype(str) == label).astype(float)
            is_label_b = (b["prediction"].astype(str) == label).astype(float)
            tests[f"class_share_difference[{label}]"] = _beside(
                proportion_test(is_label_a, is_label_b, a["ts_ms"], b["ts_ms"]), "chi-square (all classes)",
                fixed.get("classes"))
        tests["accuracy_difference"] = _beside(proportion_test(a["correct"], b["correct"], a["ts_ms"],
                                                               b["ts_ms"]), "Fisher's exact", fixed.get("accuracy"))
    return {k: v for k, v in tests.items() if v is not None}


def sequential_section(report: dict[str, Any], primary: pd.DataFrame, names: list[str],
                       srm_group: tuple[pd.DataFrame, dict[str, float]] | None) -> dict[str, Any]:
    """``report["sequential"]``: every version against the control (the comparisons' control, else the
    first version), each test beside its fixed-horizon counterpart; the always-valid p-values adjusted
    across versions x tests by the report's correction (an always-valid p-value stays valid under
    Holm or Benjamini-Hochberg). ``tests`` holds the first pair's, and the sample ratio over all."""
    tests: dict[str, Any] = {}
    out: dict[str, Any] = {"method": METHOD, "alpha": sq.ALPHA, "n_star": sq.N_STAR, "looks": LOOKS, "tests": tests}
    comparisons = report.get("comparisons") or {}
    control = comparisons.get("control") or (names[0] if names else None)
    others = [v for v in names if v != control]
    if control is not None and others:
        a = primary[primary["model_version"] == control]
        pairs = {v: _pair_tests(report, a, primary[primary["model_version"] == v],
                                (comparisons.get("pairs") or {}).get(v, {})) for v in others}
        with_family(out, pairs, control, comparisons.get("correction", "holm"))
    if srm_group is not None:
        group, weights = srm_group
        srm = _beside(srm_test(group["model_version"], group["ts_ms"], weights), "chi-square goodness of fit",
                      report["tests"].get("srm"))
        if srm is not None:
            tests["sample_ratio"] = srm
    return out


def with_family(out: dict[str, Any], pairs: dict[str, dict[str, Any]], control: str, correction: str) -> None:
    """The versions' always-valid tests in ``out``, their p-values adjusted as one family; ``tests``
    shows the first version's."""
    family = [(v, name) for v, t in pairs.items() for name in t]
    adjusted = adjust([pairs[v][name]["always_valid"]["p_value"] for v, name in family], correction)
    for (v, name), p_adj in zip(family, adjusted, strict=True):
        pairs[v][name]["always_valid"]["p_adjusted"] = p_adj
    first = next(iter(pairs))
    out.update(a=control, b=first, pairs=pairs, correction=correction, family_size=len(family))
    out["tests"].update(pairs[first])


def _beside(seq: dict[str, Any] | None, fixed_name: str, fixed: dict[str, Any] | None) -> dict[str, Any] | None:
    if seq is None:
        return None
    return {"always_valid": seq, "fixed_horizon": {"test": fixed_name,
                                                   "p_value": None if fixed is None else fixed.get("p_value")}}


def render(section: dict[str, Any]) -> list[str]:
    """Terminal lines: one row per version and test, fixed-horizon and always-valid side by side."""
    if not section.get("tests") and not section.get("pairs"):
        return []
    pairs = section.get("pairs") or {section.get("b", ""): section["tests"]}
    lines = [f"always-valid tests (against the control {section.get('a', '')}; alpha {section['alpha']}, the running "
             f"minimum over {section['looks']} looks"
             + (f"; adjusted: {section['correction']} across {section['family_size']} tests" if "family_size" in
                section else "") + ")",
             f"  {'version':<8} {'test':<34} {'fixed-horizon test':<26} {'p':>7} {'always-valid p':>15} "
             f"{'adjusted':>9} {'estimate':>10}  always-valid interval"]
    rows = [(v, name, t) for v, tests in pairs.items() for name, t in tests.items()]
    if "sample_ratio" in section["tests"]:
        rows.append(("all", "sample_ratio", section["tests"]["sample_ratio"]))
    for v, name, t in rows:
        seq, fixed = t["always_valid"], t["fixed_horizon"]
        fp = "-" if fixed["p_value"] is None else f"{fixed['p_value']:.4f}"
        est = seq.get("estimate")
        interval = seq.get("interval")
        iv = "-" if not interval else "[" + ", ".join("inf" if x is None else f"{x:.4g}" for x in interval) + "]"
        adj = "-" if seq.get("p_adjusted") is None else f"{seq['p_adjusted']:.4f}"
        lines.append(f"  {v[:8]:<8} {name[:34]:<34} {fixed['test'][:26]:<26} {fp:>7} {seq['p_value']:>15.4f} "
                     f"{adj:>9} {'-' if est is None else format(est, '.4g'):>10}  {iv}")
    lines.append("  (fixed-horizon: valid for one planned look only; always-valid: however often you look)")
    lines.append("")
    return lines
