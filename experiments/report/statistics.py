"""The comparison's statistics, on plain arrays. Every test is scipy's; nothing here is hand-rolled
beyond arranging the inputs and phrasing the verdicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

ALPHA = 0.05
SRM_ALPHA = 0.001  # sample-ratio mismatch is flagged only when very unlikely, as A/B platforms do


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [round(self.low, 6), round(self.high, 6)]


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_quantile_ci(values: np.ndarray, q: float, *, n_resamples: int = 1000, seed: int | None = 0,
                          max_points: int = 20_000) -> Interval | None:
    """95% percentile-bootstrap CI of the q-quantile. Large samples are thinned at random first:
    the interval of 20,000 points is already far narrower than any difference worth reporting."""
    values = np.asarray(values, dtype=float)
    if len(values) < 10:
        return None
    rng = _rng(seed)
    if len(values) > max_points:
        values = rng.choice(values, size=max_points, replace=False)
    res = stats.bootstrap((values,), lambda x, axis: np.quantile(x, q, axis=axis), n_resamples=n_resamples,
                          confidence_level=0.95, method="percentile", random_state=rng, vectorized=True,
                          batch=max(1, 2_000_000 // len(values)))
    return Interval(float(res.confidence_interval.low), float(res.confidence_interval.high))


def latency_summary(values: np.ndarray, seed: int | None = 0) -> dict[str, Any]:
    values = np.asarray(values, dtype=float)
    out: dict[str, Any] = {
        "mean": float(values.mean()),
        "p50": float(np.quantile(values, 0.5)),
        "p95": float(np.quantile(values, 0.95)),
        "p99": float(np.quantile(values, 0.99)),
    }
    ci50, ci95 = bootstrap_quantile_ci(values, 0.5, seed=seed), bootstrap_quantile_ci(values, 0.95, seed=seed)
    out["p50_ci"] = ci50.as_list() if ci50 else None
    out["p95_ci"] = ci95.as_list() if ci95 else None
    return out


def class_chi2(table: np.ndarray) -> dict[str, Any] | None:
    """Chi-square test of independence, versions (rows) x classes (columns), with Cramér's V."""
    table = np.asarray(table, dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    table = table[table.sum(axis=1) > 0]
    if table.shape[0] < 2:
        return None
    if table.shape[1] < 2:  # every version predicted the same single class: no difference to test
        return {"chi2": 0.0, "dof": 0, "p_value": 1.0, "cramers_v": 0.0, "significant": False}
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    v = float(stats.contingency.association(table.astype(int), method="cramer"))
    return {"chi2": float(chi2), "dof": int(dof), "p_value": float(p), "cramers_v": v, "significant": bool(p < ALPHA)}


def values_mwu(a: np.ndarray, b: np.ndarray, *, seed: int | None = 0) -> dict[str, Any] | None:
    """Mann-Whitney U of a regressor's predicted values, b against a, with the median difference."""
    res = latency_mwu(a, b, seed=seed)
    if res is None:
        return None
    res["median_diff"] = res.pop("median_diff_ms")
    res["prob_b_greater"] = res.pop("prob_b_slower")
    return res


def latency_mwu(a: np.ndarray, b: np.ndarray, *, seed: int | None = 0, n_resamples: int = 1000,
                max_points: int = 20_000) -> dict[str, Any] | None:
    """Mann-Whitney U (two-sided) of b against a, with median(b) - median(a) and its bootstrap CI."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    res = stats.mannwhitneyu(b, a, alternative="two-sided")
    diff = float(np.median(b) - np.median(a))
    ci = None
    if len(a) >= 10 and len(b) >= 10:
        rng = _rng(seed)
        sa = rng.choice(a, size=max_points, replace=False) if len(a) > max_points else a
        sb = rng.choice(b, size=max_points, replace=False) if len(b) > max_points else b
        boot = stats.bootstrap((sa, sb), lambda x, y, axis: np.median(y, axis=axis) - np.median(x, axis=axis),
                               n_resamples=n_resamples, method="percentile", random_state=rng, vectorized=True,
                               batch=max(1, 2_000_000 // (len(sa) + len(sb))))
        ci = Interval(float(boot.confidence_interval.low), float(boot.confidence_interval.high))
    # Common-language effect size: P(latency_b > latency_a).
    effect = float(res.statistic) / (len(a) * len(b))
    return {"u": float(res.statistic), "p_value": float(res.pvalue), "median_diff_ms": diff,
            "median_diff_ci": ci.as_list() if ci else None, "prob_b_slower": effect,
            "significant": bool(res.pvalue < ALPHA), "n_a": len(a), "n_b": len(b)}


def quantiles_counts(values: np.ndarray, counts: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """The q-quantiles of a sample given as distinct values and their counts, interpolated as
    ``np.quantile``'s default (linear) does on the expanded sample."""
    order = np.argsort(values)
    v, c = np.asarray(values, dtype=float)[order], np.asarray(counts, dtype=float)[order]
    cum = np.cumsum(c)
    out = []
    for q in qs:
        h = (cum[-1] - 1) * q
        lo, hi = int(np.floor(h)), int(np.ceil(h))
        v_lo, v_hi = v[np.searchsorted(cum, lo + 1)], v[np.searchsorted(cum, hi + 1)]
        out.append(float(v_lo + (h - lo) * (v_hi - v_lo)))
    return out


def mwu_counts(values_a: np.ndarray, counts_a: np.ndarray, values_b: np.ndarray,
               counts_b: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U of b against a, two-sided, from each sample's distinct values and their counts
    (an engine's GROUP BY): (U of b, p-value). The normal approximation with the tie correction and
    the continuity correction, as ``scipy.stats.mannwhitneyu(..., method="asymptotic")`` computes it
    on the expanded samples; memory grows with the distinct values, not the rows."""
    va, ca = np.asarray(values_a, dtype=float), np.asarray(counts_a, dtype=float)
    vb, cb = np.asarray(values_b, dtype=float), np.asarray(counts_b, dtype=float)
    values, where = np.unique(np.concatenate([va, vb]), return_inverse=True)
    in_a = np.bincount(where[:len(va)], weights=ca, minlength=len(values))
    in_b = np.bincount(where[len(va):], weights=cb, minlength=len(values))
    ties = in_a + in_b
    n_a, n_b = in_a.sum(), in_b.sum()
    n = n_a + n_b
    below = np.cumsum(ties) - ties  # rows with a smaller value
    midrank = below + (ties + 1) / 2
    u_b = float((in_b * midrank).sum() - n_b * (n_b + 1) / 2)
    mu = n_a * n_b / 2
    tie_term = float((ties ** 3 - ties).sum())
    sigma = np.sqrt(n_a * n_b / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0:
        return u_b, 1.0
    u = max(u_b, n_a * n_b - u_b)
    z = (u - mu - 0.5) / sigma
    return u_b, float(min(1.0, 2 * stats.norm.sf(z)))


def cluster_ratio_delta(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray
                        ) -> dict[str, Any] | None:
    """``cluster_ratio_difference`` in closed form: the delta method's variance of each arm's ratio
    of per-unit sums, for many units (the bootstrap's index matrix grows with units x resamples)."""
    parts = []
    for num, den in ((num_a, den_a), (num_b, den_b)):
        x, y = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
        if len(x) < 2 or y.sum() <= 0:
            return None
        ratio = x.sum() / y.sum()
        mean_y = y.mean()
        variance = float(np.var(x - ratio * y, ddof=1) / (len(x) * mean_y ** 2))
        parts.append((float(ratio), variance, len(x)))
    (ra, var_a, ua), (rb, var_b, ub) = parts
    diff, se = rb - ra, float(np.sqrt(var_a + var_b))
    p = float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    z = stats.norm.ppf(1 - ALPHA / 2)
    return {"test": "delta_method", "a": ra, "b": rb, "difference": diff, "ci": [diff - z * se, diff + z * se],
            "p_value": p, "units": [ua, ub], "significant": bool(p < ALPHA)}


def srm(observed: dict[str, int], weights: dict[str, float]) -> dict[str, Any] | None:
    """Sample-ratio mismatch: chi-square goodness of fit of the observed split to the configured one."""
    names = [n for n, w in weights.items() if w > 0]
    total = sum(observed.get(n, 0) for n in names)
    if len(names) < 2 or total == 0:
        return None
    wsum = sum(weights[n] for n in names)
    expected = np.array([weights[n] / wsum * total for n in names])
    obs = np.array([observed.get(n, 0) for n in names], dtype=float)
    chi2, p = stats.chisquare(obs, expected)
    return {"chi2": float(chi2), "p_value": float(p), "observed": {n: int(o) for n, o in zip(names, obs, strict=True)},
            "expected": {n: round(float(e), 1) for n, e in zip(names, expected, strict=True)},
            "weights": {n: weights[n] / wsum for n in names}, "mismatch": bool(p < SRM_ALPHA)}


def agreement(primary: np.ndarray, candidate: np.ndarray) -> dict[str, Any] | None:
    primary, candidate = np.asarray(primary), np.asarray(candidate)
    n = len(primary)
    if n == 0:
        return None
    k = int((primary == candidate).sum())
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"n": n, "agree": k, "rate": k / n, "ci": [float(ci.low), float(ci.high)]}


def accuracy(correct: np.ndarray) -> dict[str, Any] | None:
    """Share of labelled predictions that were right, with a Wilson 95% interval."""
    correct = np.asarray(correct, dtype=float)
    correct = correct[~np.isnan(correct)]
    if len(correct) == 0:
        return None
    return accuracy_counts(int(correct.sum()), len(correct))


def accuracy_counts(correct: int, n: int) -> dict[str, Any] | None:
    """``accuracy`` from its two counts (what an engine's aggregate gives)."""
    if n == 0:
        return None
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"n": n, "correct": correct, "rate": correct / n, "ci": [float(ci.low), float(ci.high)]}


def accuracy_difference(table: np.ndarray) -> dict[str, Any] | None:
    """Versions (rows) x (correct, wrong): Fisher's exact test for two versions, chi-square beyond."""
    table = np.asarray(table, dtype=int)
    table = table[table.sum(axis=1) > 0]
    if table.shape[0] < 2:
        return None
    if table.shape[0] == 2:
        res = stats.fisher_exact(table)
        return {"test": "fisher_exact", "p_value": float(res.pvalue), "significant": bool(res.pvalue < ALPHA)}
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    return {"test": "chi2", "chi2": float(chi2), "dof": int(dof), "p_value": float(p), "significant": bool(p < ALPHA)}


def cluster_ratio_difference(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray, *,
                             seed: int | None = 0, n_resamples: int = 2000) -> dict[str, Any] | None:
    """b's ratio metric (sum num / sum den) minus a's, with units (users) as clusters: the users are
    resampled, not their requests, so a heavy user counts as one observation of the arm, not as many
    independent ones. Percentile 95% CI; two-sided p-value from the bootstrap distribution (at least
    1 / (n_resamples + 1)). The delta method answers the same question in closed form, but with few
    users and heavy-tailed request counts it was anti-conservative here (docs/report.md)."""
    na, da, nb, db = (np.asarray(x, dtype=float) for x in (num_a, den_a, num_b, den_b))
    if len(na) < 2 or len(nb) < 2 or da.sum() <= 0 or db.sum() <= 0:
        return None
    rng = _rng(seed)
    diff = float(nb.sum() / db.sum() - na.sum() / da.sum())
    ia = rng.integers(0, len(na), (n_resamples, len(na)))
    ib = rng.integers(0, len(nb), (n_resamples, len(nb)))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = nb[ib].sum(axis=1) / db[ib].sum(axis=1) - na[ia].sum(axis=1) / da[ia].sum(axis=1)
    boot = boot[np.isfinite(boot)]
    low, high = (float(x) for x in np.quantile(boot, [ALPHA / 2, 1 - ALPHA / 2]))
    tail = min(float((boot <= 0).mean()), float((boot >= 0).mean()))
    p = min(1.0, max(2 * tail, 1 / (n_resamples + 1)))
    return {"test": "cluster_bootstrap", "a": float(na.sum() / da.sum()), "b": float(nb.sum() / db.sum()),
            "difference": diff, "ci": [low, high], "p_value": p, "units": [len(na), len(nb)],
            "significant": bool(p < ALPHA)}


def mcnemar_exact(primary_right: np.ndarray, candidate_right: np.ndarray) -> dict[str, Any] | None:
    """Paired accuracy on the same rows: the exact McNemar test, a two-sided binomial test of the
    discordant pairs (right only by the primary against right only by the candidate)."""
    p, c = np.asarray(primary_right, dtype=bool), np.asarray(candidate_right, dtype=bool)
    if len(p) == 0:
        return None
    only_p, only_c = int((p & ~c).sum()), int((~p & c).sum())
    pvalue = float(stats.binomtest(only_c, only_p + only_c, 0.5).pvalue) if only_p + only_c else 1.0
    return {"test": "mcnemar_exact", "n": len(p), "primary_accuracy": float(p.mean()),
            "candidate_accuracy": float(c.mean()), "only_primary_right": only_p, "only_candidate_right": only_c,
            "p_value": pvalue, "significant": bool(pvalue < ALPHA)}


def paired_latency(primary: np.ndarray, candidate: np.ndarray, *, seed: int | None = 0) -> dict[str, Any] | None:
    """Candidate minus primary on the same requests: median difference, bootstrap CI, Wilcoxon test."""
    primary, candidate = np.asarray(primary, dtype=float), np.asarray(candidate, dtype=float)
    if len(primary) < 10:
        return None
    d = candidate - primary
    rng = _rng(seed)
    sample = rng.choice(d, size=20_000, replace=False) if len(d) > 20_000 else d
    boot = stats.bootstrap((sample,), lambda x, axis: np.median(x, axis=axis), n_resamples=1000,
                           method="percentile", random_state=rng, vectorized=True)
    w = stats.wilcoxon(d) if np.any(d != 0) else None
    return {"n": len(d), "median_diff_ms": float(np.median(d)),
            "median_diff_ci": [float(boot.confidence_interval.low), float(boot.confidence_interval.high)],
            "p_value": float(w.pvalue) if w is not None else 1.0}


def value_summary(values: np.ndarray) -> dict[str, Any]:
    """A regressor's predictions: mean, spread and quantiles."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"n": 0, "mean": None, "std": None, "p05": None, "p50": None, "p95": None}
    return {"n": len(values), "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
            else 0.0, "p05": float(np.quantile(values, 0.05)), "p50": float(np.quantile(values, 0.5)),
            "p95": float(np.quantile(values, 0.95))}


def error_summary(abs_errors: np.ndarray) -> dict[str, Any] | None:
    """Mean absolute error from ground-truth feedback, with a bootstrap-free t interval."""
    errors = np.asarray(abs_errors, dtype=float)
    errors = errors[~np.isnan(errors)]
    if len(errors) == 0:
        return None
    mae = float(errors.mean())
    ci = None
    if len(errors) >= 2 and errors.std(ddof=1) > 0:
        low, high = stats.t.interval(0.95, len(errors) - 1, loc=mae, scale=stats.sem(errors))
        ci = [float(low), float(high)]
    return {"n": len(errors), "mae": mae, "ci": ci}


def distribution_ks(a: np.ndarray, b: np.ndarray) -> dict[str, Any] | None:
    """Two-sample Kolmogorov-Smirnov: do two versions' predicted values come from one distribution?"""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    res = stats.ks_2samp(a, b)
    return {"statistic": float(res.statistic), "p_value": float(res.pvalue), "significant": bool(res.pvalue < ALPHA),
            "n_a": len(a), "n_b": len(b)}


def paired_values(primary: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """A regressor's shadow: how far the candidate's values are from the primary's on the same rows."""
    primary, candidate = np.asarray(primary, dtype=float), np.asarray(candidate, dtype=float)
    d = candidate - primary
    out: dict[str, Any] = {"n": len(d), "mean_abs_diff": float(np.abs(d).mean()), "mean_diff": float(d.mean()),
                           "pearson_r": None, "spearman_rho": None, "p_value": None}
    if len(d) >= 3 and primary.std() > 0 and candidate.std() > 0:
        out["pearson_r"] = float(stats.pearsonr(primary, candidate).statistic)
        out["spearman_rho"] = float(stats.spearmanr(primary, candidate).statistic)
    if len(d) >= 10 and np.any(d != 0):
        out["p_value"] = float(stats.wilcoxon(d).pvalue)
    return out


def value_verdict(a_name: str, b_name: str, mwu: dict[str, Any] | None, ks: dict[str, Any] | None) -> str:
    if mwu is None or ks is None:
        return f"predictions: too few to compare {b_name} with {a_name}"
    diff = mwu["median_diff"]
    if mwu["significant"] or ks["significant"]:
        return (f"predicted values differ between {b_name} and {a_name}: median {diff:+.4g} "
                f"(Mann-Whitney {fmt_p(mwu['p_value'])}; Kolmogorov-Smirnov D = {ks['statistic']:.3f}, "
                f"{fmt_p(ks['p_value'])})")
    return (f"predicted values: no detectable difference between {b_name} and {a_name} "
            f"(Mann-Whitney {fmt_p(mwu['p_value'])}, Kolmogorov-Smirnov {fmt_p(ks['p_value'])})")


def fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def latency_verdict(a_name: str, b_name: str, mwu: dict[str, Any] | None, resolution_ms: float = 1.0) -> str:
    if mwu is None:
        return f"latency: too few predictions to compare {b_name} with {a_name}"
    diff, ci = mwu["median_diff_ms"], mwu["median_diff_ci"]
    ci_text = f" (95% CI {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else ""
    n = mwu["n_a"] + mwu["n_b"]
    if mwu["significant"]:
        word = "slower" if diff > 0 or (diff == 0 and mwu["prob_b_slower"] > 0.5) else "faster"
        return f"{b_name} is {word} than {a_name}: {diff:+.3f} ms median{ci_text}, {fmt_p(mwu['p_value'])}"
    if ci and (ci[1] - ci[0]) / 2 > resolution_ms:
        return (f"latency: no detectable difference between {b_name} and {a_name} (n = {n}, "
                f"too few for ±{resolution_ms:g} ms){ci_text}")
    return (f"latency: no detectable difference between {b_name} and {a_name} (n = {n}){ci_text}, "
            f"{fmt_p(mwu['p_value'])}")


def class_verdict(chi: dict[str, Any] | None, names: list[str]) -> str:
    if chi is None:
        return "classes: only one version, nothing to compare"
    if chi["significant"]:
        strength = "weak" if chi["cramers_v"] < 0.1 else "moderate" if chi["cramers_v"] < 0.3 else "strong"
        return (f"class distribution differs between {' and '.join(names)}: chi2 = {chi['chi2']:.1f}, "
                f"{fmt_p(chi['p_value'])}, Cramér's V = {chi['cramers_v']:.3f} ({strength})")
    return (f"class distribution: no detectable difference ({fmt_p(chi['p_value'])}, "
            f"Cramér's V = {chi['cramers_v']:.3f})")


def srm_verdict(result: dict[str, Any] | None, label: str = "") -> str:
    if result is None:
        return f"sample ratio{label}: not applicable (no weighted traffic across two or more versions)"
    obs = ", ".join(f"{k} {v}" for k, v in result["observed"].items())
    exp = ", ".join(f"{k} {v:.0f}" for k, v in result["expected"].items())
    if result["mismatch"]:
        return (f"SAMPLE RATIO MISMATCH{label}: observed {obs}, expected {exp} ({fmt_p(result['p_value'])}); "
                "the split is not what was configured, so the other results are suspect")
    return f"sample ratio{label}: as configured (observed {obs}; expected {exp}; {fmt_p(result['p_value'])})"


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Interval):
        return asdict(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj
