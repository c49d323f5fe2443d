"""A/B/n: every version against the control, on every metric, with the p-values adjusted for the
number of tests. Three versions and three metrics are six tests; at alpha 0.05 each, one of them
comes out "significant" by chance alone about a quarter of the time. Holm's step-down method (the
default) keeps the chance of any false positive in the family at alpha; Benjamini-Hochberg keeps the
expected share of false positives among the positives at alpha (more power, a weaker promise).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from experiments.report import statistics as st

CORRECTIONS = ("holm", "bh", "none")
NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no correction"}


def adjust(p_values: list[float], method: str) -> list[float]:
    """Adjusted p-values, in the input's order: compare each with alpha."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, not {method!r}")
    p = np.asarray(p_values, dtype=float)
    if method == "none" or p.size == 0:
        return p.tolist()
    if method == "bh":
        return stats.false_discovery_control(p, method="bh").tolist()  # type: ignore[no-any-return]
    order = np.argsort(p)
    m = p.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # Holm: (m - rank) * p, kept monotone
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out.tolist()  # type: ignore[no-any-return]


def _pair_tests(a: pd.DataFrame, b: pd.DataFrame, labels: list[Any] | None, seed: int) -> dict[str, dict[str, Any]]:
    """The tests of one version (b) against the control (a): raw p-values and what they measure."""
    out: dict[str, dict[str, Any]] = {}
    if labels is not None:
        table = np.array([[int((g["prediction"].astype(str) == str(lbl)).sum()) for lbl in labels] for g in (a, b)])
        chi = st.class_chi2(table)
        if chi is not None:
            out["classes"] = {"test": "chi2", "p_value": chi["p_value"], "cramers_v": chi["cramers_v"]}
        ca, cb = (g["correct"].to_numpy(dtype=float) for g in (a, b))
        ca, cb = ca[~np.isnan(ca)], cb[~np.isnan(cb)]
        if len(ca) and len(cb):
            acc = st.accuracy_difference(np.array([[ca.sum(), len(ca) - ca.sum()], [cb.sum(), len(cb) - cb.sum()]]))
            if acc is not None:
                out["accuracy"] = {"test": acc["test"], "p_value": acc["p_value"],
                                   "difference": float(cb.mean() - ca.mean()), "n": [len(ca), len(cb)]}
    else:
        mwu = st.values_mwu(a["value"].to_numpy(dtype=float), b["value"].to_numpy(dtype=float), seed=seed)
        if mwu is not None:
            out["predictions"] = {"test": "mann_whitney_u", "p_value": mwu["p_value"],
                                  "median_diff": mwu["median_diff"]}
        ea, eb = (g["abs_error"].to_numpy(dtype=float) for g in (a, b))
        ea, eb = ea[~np.isnan(ea)], eb[~np.isnan(eb)]
        if len(ea) >= 2 and len(eb) >= 2:
            res = stats.mannwhitneyu(eb, ea, alternative="two-sided")
            out["error"] = {"test": "mann_whitney_u", "p_value": float(res.pvalue),
                            "mae_diff": float(eb.mean() - ea.mean())}
    lat = st.latency_mwu(a["latency_ms"].to_numpy(), b["latency_ms"].to_numpy(), seed=seed)
    if lat is not None:
        out["latency"] = {"test": "mann_whitney_u", "p_value": lat["p_value"],
                          "median_diff_ms": lat["median_diff_ms"], "median_diff_ci": lat["median_diff_ci"]}
    return out


def _per_user(g: pd.DataFrame, labels: list[Any] | None) -> pd.DataFrame:
    """One row per user: requests, summed latency, counts per class (or summed values), labels."""
    correct = g["correct"].astype(float)
    cols = {"n": g["latency_ms"].notna().astype(float), "latency": g["latency_ms"].astype(float),
            "labelled": correct.notna().astype(float), "right": correct.fillna(0.0)}
    if labels is None:
        cols["value"] = g["value"].astype(float)
    else:
        for lbl in labels:
            cols[f"class_{lbl}"] = (g["prediction"].astype(str) == str(lbl)).astype(float)
    return pd.DataFrame(cols).groupby(g["user"].to_numpy()).sum()


def _clustered_tests(a: pd.DataFrame, b: pd.DataFrame, labels: list[Any] | None,
                     seed: int) -> dict[str, dict[str, Any]]:
    """The same questions with the user as the unit: ratio metrics by a cluster bootstrap."""
    ua, ub = _per_user(a, labels), _per_user(b, labels)
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, num: str, den: str) -> None:
        res = st.cluster_ratio_difference(ua[num], ua[den], ub[num], ub[den], seed=seed)
        if res is not None:
            out[name] = {k: v for k, v in res.items() if k != "significant"}

    add("latency", "latency", "n")
    if labels is None:
        add("predictions", "value", "n")
    else:
        for lbl in labels:
            add(f"class_{lbl}", f"class_{lbl}", "n")
    la, lb = ua[ua["labelled"] > 0], ub[ub["labelled"] > 0]
    if len(la) >= 2 and len(lb) >= 2:
        res = st.cluster_ratio_difference(la["right"], la["labelled"], lb["right"], lb["labelled"], seed=seed)
        if res is not None:
            out["accuracy"] = {k: v for k, v in res.items() if k != "significant"}
    return out


def compare_to_control(primary: pd.DataFrame, names: list[str], control: str, labels: list[Any] | None, *,
                       correction: str = "holm", alpha: float = st.ALPHA, seed: int = 0,
                       unit: str = "request") -> dict[str, Any]:
    """Every other version against ``control``; one correction family over all versions x metrics.
    ``unit`` "user": only requests with a sticky user, each user one observation (a cluster bootstrap)."""
    if control not in names:
        raise ValueError(f"control {control!r} answered no traffic here; versions: {', '.join(names)}")
    if unit == "user":
        primary = primary[primary["user"].notna()]
    base = primary[primary["model_version"] == control]
    pairs = {v: (_clustered_tests(base, primary[primary["model_version"] == v], labels, seed) if unit == "user" else
                 _pair_tests(base, primary[primary["model_version"] == v], labels, seed))
             for v in names if v != control}
    return control_family(pairs, control, correction, alpha, unit)


def control_family(pairs: dict[str, dict[str, dict[str, Any]]], control: str, correction: str,
                   alpha: float = st.ALPHA, unit: str = "request") -> dict[str, Any]:
    """Each version's tests against the control (raw p-values), adjusted as one family, with verdicts."""
    family = [(v, metric) for v, tests in pairs.items() for metric in tests]
    adjusted = adjust([pairs[v][m]["p_value"] for v, m in family], correction)
    verdicts = []
    for (v, metric), p_adj in zip(family, adjusted, strict=True):
        test = pairs[v][metric]
        test["p_adjusted"] = p_adj
        test["significant"] = bool(p_adj < alpha)
        word = "differs" if test["significant"] else "shows no detectable difference"
        verdicts.append(f"{v} against control {control}: {metric} {word} ({test['test']}, raw "
                        f"{st.fmt_p(test['p_value'])}, {NAMES[correction]}-adjusted p={p_adj:.3g} over "
                        f"{len(family)} tests)")
    return {"control": control, "correction": correction, "correction_name": NAMES[correction], "alpha": alpha,
            "family_size": len(family), "versions": [control, *pairs], "pairs": pairs, "verdicts": verdicts,
            "unit": unit}


SEGMENT_BINS = 4  # a numeric column is cut into quartiles


def segments_of(values: pd.Series) -> tuple[pd.Series, str]:
    """Segment labels for a column's values: quartile bins when numeric, else the values themselves."""
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and numeric.nunique() > SEGMENT_BINS:
        bins = pd.qcut(numeric, SEGMENT_BINS, duplicates="drop")
        return bins.astype(str), f"quartiles of the numeric column ({bins.cat.categories.size} bins)"
    return values.astype(str), "the column's values"


def by_segment(primary: pd.DataFrame, column: str, control: str, labels: list[Any] | None, *,
               correction: str = "holm", alpha: float = st.ALPHA, seed: int = 0, unit: str = "request",
               min_records: int = 20) -> dict[str, Any]:
    """The comparisons against the control within each segment of ``column``. All segments' tests are
    one correction family of their own, never mixed with the overall one (more segments, more tests:
    the adjustment grows with them)."""
    if "segment" not in primary or primary["segment"].isna().all():
        what = (f"header {column.removeprefix('header:')!r} (is it in the gateway's [routing] log_headers?)"
                if column.startswith("header:") else f"{column!r} (an input column of the model)")
        return {"by": column, "error": f"no record carries a value of {what}"}
    primary = primary[primary["segment"].notna()]
    labels_of_rows, how = segments_of(primary["segment"])
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for seg in sorted(labels_of_rows.unique()):
        part = primary[labels_of_rows == seg]
        names = sorted(str(v) for v in part["model_version"].unique())
        if control not in names or len(names) < 2 or len(part) < min_records:
            skipped[seg] = f"{len(part)} records, versions {', '.join(names)}: too few to compare with {control}"
            continue
        results[seg] = compare_to_control(part, names, control, labels, correction="none", alpha=alpha, seed=seed,
                                          unit=unit)
    return segment_family(column, how, control, results, skipped, correction, alpha)


def segment_family(column: str, how: str, control: str, results: dict[str, dict[str, Any]],
                   skipped: dict[str, str], correction: str, alpha: float = st.ALPHA) -> dict[str, Any]:
    """The segments' comparisons (each made with no correction) adjusted as one family of their own."""
    family = [(seg, v, m) for seg, r in results.items() for v, tests in r["pairs"].items() for m in tests]
    adjusted = adjust([results[seg]["pairs"][v][m]["p_value"] for seg, v, m in family], correction)
    verdicts = []
    for (seg, v, m), p_adj in zip(family, adjusted, strict=True):
        test = results[seg]["pairs"][v][m]
        test["p_adjusted"], test["significant"] = p_adj, bool(p_adj < alpha)
        if test["significant"]:
            verdicts.append(f"segment {column} = {seg}: {v} against control {control}: {m} differs "
                            f"({NAMES[correction]}-adjusted p={p_adj:.3g} over {len(family)} segment tests)")
    for r in results.values():
        r["verdicts"] = []
        r["correction"], r["correction_name"], r["family_size"] = correction, NAMES[correction], len(family)
    return {"by": column, "bins": how, "control": control, "correction": correction,
            "correction_name": NAMES[correction], "family_size": len(family), "segments": results,
            "skipped": skipped, "verdicts": verdicts or [f"segments by {column}: no difference against {control} "
                                                         f"in any segment after {NAMES[correction]} adjustment"]}


def render(section: dict[str, Any] | None) -> list[str]:
    """The terminal's lines for the comparisons against the control."""
    if not section or not section.get("pairs"):
        return []
    unit = "users (cluster bootstrap)" if section.get("unit") == "user" else "requests"
    lines = [f"against the control {section['control']} ({section['correction_name']}-adjusted across "
             f"{section['family_size']} tests, alpha {section['alpha']:g}; unit of analysis: {unit})",
             f"  {'version':<10} {'metric':<12} {'test':<16} {'raw p':>10} {'adjusted p':>11}  verdict"]
    for v, tests in section["pairs"].items():
        for metric, t in tests.items():
            lines.append(f"  {v:<10} {metric:<12} {t['test']:<16} {t['p_value']:>10.4g} {t['p_adjusted']:>11.4g}  "
                         + ("differs" if t["significant"] else "no detectable difference"))
    lines.append("")
    return lines


def render_segments(section: dict[str, Any] | None) -> list[str]:
    """The terminal's lines for the per-segment comparisons."""
    if not section:
        return []
    if section.get("error"):
        return [f"segments by {section['by']}: {section['error']}", ""]
    lines = [f"segments by {section['by']} ({section['bins']}; {section['correction_name']}-adjusted across "
             f"{section['family_size']} segment tests, apart from the overall ones)"]
    for seg, result in section["segments"].items():
        for v, tests in result["pairs"].items():
            for metric, t in tests.items():
                lines.append(f"  {seg[:22]:<22} {v:<10} {metric:<12} {t['p_value']:>10.4g} {t['p_adjusted']:>11.4g}  "
                             + ("differs" if t["significant"] else "no detectable difference"))
    lines += [f"  {seg}: skipped ({why})" for seg, why in section.get("skipped", {}).items()]
    lines.append("")
    return lines
