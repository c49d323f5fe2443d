"""Simulations that check the always-valid tests: false positives under continuous peeking (A/A), and
the samples each guardrail needs to catch a real degradation (power).

``python -m experiments.bench.sequential_sim`` prints both tables; the tests assert the same numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np
from scipy import stats

from gateway.stats.sequential import (
    ALPHA,
    N_STAR,
    proportion_difference,
    quantile_ranks,
    srm_p_value,
)


@dataclass(frozen=True)
class FalsePositiveRates:
    experiments: int
    looks: int
    sequential: float  # share of A/A experiments the sequential test ever called significant
    fixed_horizon: float  # the same for a fixed-horizon test applied at every look


def _looks(max_n: int, every: int) -> np.ndarray:
    return np.arange(every, max_n + 1, every)


def aa_proportions(experiments: int = 500, max_n: int = 5000, every: int = 100, p: float = 0.9,
                   alpha: float = ALPHA, seed: int = 1) -> FalsePositiveRates:
    """Two arms with the same rate p; looked at every ``every`` samples per arm up to ``max_n``.
    Fixed-horizon: Pearson's chi-square of the 2x2 table (no continuity correction) at every look."""
    rng = np.random.default_rng(seed)
    looks = _looks(max_n, every)
    k_a = np.cumsum(rng.random((experiments, max_n)) < p, axis=1)[:, looks - 1]
    k_b = np.cumsum(rng.random((experiments, max_n)) < p, axis=1)[:, looks - 1]
    seq = proportion_difference(k_a, looks, k_b, looks, alpha=alpha)
    chi2 = pearson_chi2_2x2(k_a, looks, k_b, looks)
    fixed_p = stats.chi2.sf(chi2, 1)
    return FalsePositiveRates(experiments, len(looks), float((seq.p_value <= alpha).any(axis=1).mean()),
                              float((fixed_p <= alpha).any(axis=1).mean()))


def pearson_chi2_2x2(k_a: np.ndarray, n_a: np.ndarray, k_b: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """Pearson's chi-square statistic of [[k_a, n_a - k_a], [k_b, n_b - k_b]], for many tables at once
    (the same number scipy.stats.chi2_contingency(correction=False) gives for one)."""
    table = np.stack([np.stack([k_a, n_a - k_a], -1), np.stack([k_b, n_b - k_b], -1)], -2).astype(float)
    expected = table.sum(-1, keepdims=True) * table.sum(-2, keepdims=True) / table.sum((-1, -2), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (table - expected) ** 2 / expected, 0.0)
    return terms.sum((-1, -2))  # type: ignore[no-any-return]


def aa_latency_p95(experiments: int = 500, max_n: int = 5000, every: int = 100, alpha: float = ALPHA,
                   seed: int = 2) -> FalsePositiveRates:
    """Two arms with the same lognormal latency; the p95-ratio test (null: ratio 1) at every look.
    Fixed-horizon: Mann-Whitney U at every look (the report's latency test)."""
    rng = np.random.default_rng(seed)
    looks = _looks(max_n, every)
    a = rng.lognormal(0.0, 0.5, (experiments, max_n))
    b = rng.lognormal(0.0, 0.5, (experiments, max_n))
    seq_hit = np.zeros(experiments, bool)
    fixed_hit = np.zeros(experiments, bool)
    for n in looks:
        fixed_hit |= mann_whitney_p(a[:, :n], b[:, :n]) <= alpha
        seq_hit |= p95_ratio_low(a[:, :n], b[:, :n], alpha) > 1.0
    return FalsePositiveRates(experiments, len(looks), float(seq_hit.mean()), float(fixed_hit.mean()))


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sided Mann-Whitney U p-values (normal approximation, no continuity correction) for many
    pairs of equal-size samples of continuous values at once (rows). For tie-free data this is
    scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=False), computed from one sort."""
    n = a.shape[-1]
    ranks = np.argsort(np.argsort(np.concatenate([a, b], axis=-1), axis=-1), axis=-1) + 1.0
    u = ranks[..., n:].sum(axis=-1) - n * (n + 1) / 2.0
    z = (u - n * n / 2.0) / math.sqrt(n * n * (2 * n + 1) / 12.0)
    return 2.0 * stats.norm.sf(np.abs(z))  # type: ignore[no-any-return]


def p95_ratio_low(a: np.ndarray, b: np.ndarray, alpha: float, q: float = 0.95) -> np.ndarray:
    """The lower end of quantile_ratio's interval for many experiments at once (rows; same n): the
    same ranks serve every row, so one partial sort per arm does."""
    n = a.shape[-1]
    k_low, k_high = quantile_ranks(n, q, alpha / 2)
    if k_low < 1 or k_high > n:
        return np.zeros(a.shape[:-1])
    a_high = np.partition(a, k_high - 1, axis=-1)[..., k_high - 1]
    b_low = np.partition(b, k_low - 1, axis=-1)[..., k_low - 1]
    return b_low / a_high  # type: ignore[no-any-return]


def aa_srm(experiments: int = 500, max_n: int = 5000, every: int = 100, weights: tuple[float, ...] = (0.75, 0.25),
           alpha: float = ALPHA, seed: int = 3) -> FalsePositiveRates:
    """Traffic split exactly as configured; the sequential SRM test and the chi-square goodness of fit
    at every look (``max_n`` requests in all)."""
    rng = np.random.default_rng(seed)
    looks = _looks(max_n, every)
    arms = rng.choice(len(weights), size=(experiments, max_n), p=np.asarray(weights) / sum(weights))
    counts = np.stack([np.cumsum(arms == j, axis=1)[:, looks - 1] for j in range(len(weights))], -1)
    seq = srm_p_value(counts, weights)
    expected = looks[:, None] * (np.asarray(weights) / sum(weights))
    fixed = stats.chisquare(counts, expected, axis=-1).pvalue
    return FalsePositiveRates(experiments, len(looks), float((seq <= alpha).any(axis=1).mean()),
                              float((fixed <= alpha).any(axis=1).mean()))


@dataclass(frozen=True)
class Power:
    experiments: int
    detected: float  # share of experiments that detected the degradation by max_n
    median_samples: float | None  # per arm, among those that did


def power_accuracy_drop(experiments: int = 200, max_n: int = 20_000, every: int = 50, control: float = 0.95,
                        drop: float = 0.05, alpha: float = ALPHA, seed: int = 4) -> Power:
    """The candidate is ``drop`` less accurate; detected when the interval of (candidate - control)
    lies wholly below 0 (the accuracy guardrail with threshold 0)."""
    rng = np.random.default_rng(seed)
    looks = _looks(max_n, every)
    k_a = np.cumsum(rng.random((experiments, max_n)) < control, axis=1)[:, looks - 1]
    k_b = np.cumsum(rng.random((experiments, max_n)) < control - drop, axis=1)[:, looks - 1]
    seq = proportion_difference(k_a, looks, k_b, looks, alpha=alpha)
    return _first_detection(seq.high < 0, looks)


def power_latency(experiments: int = 200, max_n: int = 20_000, every: int = 100, slower: float = 1.3,
                  alpha: float = ALPHA, seed: int = 5) -> Power:
    """The candidate is ``slower`` times slower (every quantile, so p95 too); detected when the p95
    ratio's interval lies wholly above 1."""
    rng = np.random.default_rng(seed)
    looks = _looks(max_n, every)
    a = rng.lognormal(0.0, 0.5, (experiments, max_n))
    b = rng.lognormal(math.log(slower), 0.5, (experiments, max_n))
    hits = np.stack([p95_ratio_low(a[:, :n], b[:, :n], alpha) > 1.0 for n in looks], axis=1)
    return _first_detection(np.maximum.accumulate(hits, axis=1), looks)


def _first_detection(hit: np.ndarray, looks: np.ndarray) -> Power:
    detected = hit.any(axis=1)
    first = looks[np.argmax(hit, axis=1)][detected]
    return Power(len(hit), float(detected.mean()), float(np.median(first)) if len(first) else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.sequential_sim", description=__doc__)
    parser.add_argument("--experiments", type=int, default=500)
    args = parser.parse_args(argv)
    n = args.experiments
    print(f"A/A, {n} experiments, a look every 100 samples up to 5,000, alpha = {ALPHA} (n* = {N_STAR}):")
    print(f"  {'test':<34} {'sequential':>11} {'fixed-horizon':>14}")
    for name, rates in (("error rate / accuracy (p = 0.9)", aa_proportions(n)),
                        ("p95 latency ratio", aa_latency_p95(n)),
                        ("sample ratio (75/25 split)", aa_srm(n))):
        print(f"  {name:<34} {rates.sequential:>11.1%} {rates.fixed_horizon:>14.1%}")
    print("\nPower, samples per arm to detect (median over 200 experiments):")
    for name, power in (("accuracy 5 points lower (95% -> 90%)", power_accuracy_drop()),
                        ("30% slower at p95 (lognormal)", power_latency())):
        median = f"{power.median_samples:,.0f}" if power.median_samples is not None else "never"
        print(f"  {name:<38} {median:>8} (detected in {power.detected:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
