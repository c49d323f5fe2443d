"""Always-valid statistics: tests and intervals that may be looked at after every observation.

A fixed-horizon test (chi-square, t, Mann-Whitney) promises its error rate for one look at a sample
size chosen in advance. Looked at again and again while traffic flows, it is "significant" far more
often than alpha with no difference at all. The tests here keep their promise under continuous
monitoring: with probability at least 1 - alpha, the interval covers the truth at every sample size at
once, and the always-valid p-value (the running minimum of the per-look values) is below alpha at
some look with probability at most alpha when the null holds.

Methods, with their sources:

- Differences of means and of proportions (error rate, accuracy from feedback, disagreement, latency
  means, a regressor's output): the mixture sequential probability ratio test with a normal mixture,
  as in Johari, Koomen, Pekelis and Walsh, "Always Valid Inference: Continuous Monitoring of A/B
  Tests", Operations Research 70(3), 2022; written as the asymptotic confidence sequence of
  Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic
  confidence sequences", Annals of Statistics 2024, which is the form GrowthBook documents for its
  sequential testing (tuning: the mixture is set so the interval is tightest near ``n_star`` samples).
- A quantile (p95 latency): the confidence sequence for quantiles of Howard and Ramdas, "Sequential
  estimation of quantiles with applications to A/B-testing and best-arm identification", Bernoulli
  28(3), 2022: the count of observations below the true quantile is a Bernoulli random walk, bounded
  uniformly in time by a normal-mixture boundary (Howard, Ramdas, McAuliffe and Sekhon,
  "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics 49(2),
  2021) with the Bernoulli's optimal sub-Gaussian variance (Kearns and Saul, 1998).
- Sample-ratio mismatch: the Dirichlet-multinomial Bayes factor of Lindon and Malek, "Anytime-Valid
  Inference For Multinomial Count Data", NeurIPS 2022.

Every function takes NumPy arrays as well as scalars, so that one call evaluates many looks or many
simulated experiments at once. ``scipy.special.gammaln`` does the SRM's arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln

ALPHA = 0.05
N_STAR = 5000  # the mixture's tuning: the sample size at which the interval is tightest
SRM_CONCENTRATION = 100.0  # the Dirichlet prior's total weight, centred on the configured split


@dataclass(frozen=True)
class SequentialEstimate:
    """An estimate with its always-valid interval (level 1 - alpha) and this look's p-value against
    the null value. Fields are floats, or arrays of the inputs' shape."""

    estimate: Any
    low: Any
    high: Any
    p_value: Any
    null: float

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        def r(x: Any) -> float | None:
            x = float(x)
            return round(x, digits) if math.isfinite(x) else None

        return {"estimate": r(self.estimate), "interval": [r(self.low), r(self.high)],
                "p_value": r(self.p_value), "null": self.null}


def mixture_rho2(alpha: float = ALPHA, n_star: float = N_STAR) -> float:
    """The normal mixture's precision per unit variance that makes the interval tightest near n_star
    (Waudby-Smith et al. 2024; GrowthBook's choice)."""
    a = -2.0 * math.log(alpha)
    return (a + math.log(a + 1.0)) / n_star


def _half_width(unit_var: Any, n: Any, alpha: float, rho2: float) -> Any:
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        nr = n * rho2
        half = np.sqrt(unit_var * 2.0 * (nr + 1.0) / (n * nr) * np.log(np.sqrt(nr + 1.0) / alpha))
    return np.where(n > 0, half, np.inf)


def _p_value(z2: Any, n: Any, rho2: float) -> Any:
    """1 / (the mixture likelihood ratio) at one look, capped at 1."""
    nr = np.asarray(n, dtype=float) * rho2
    with np.errstate(over="ignore", invalid="ignore"):
        log_lr = 0.5 * z2 * nr / (1.0 + nr) - 0.5 * np.log1p(nr)
    return np.minimum(1.0, np.exp(-np.nan_to_num(log_lr, nan=0.0)))


def mean_difference(mean_a: Any, var_a: Any, n_a: Any, mean_b: Any, var_b: Any, n_b: Any, *, null: float = 0.0,
                    alpha: float = ALPHA, n_star: float = N_STAR) -> SequentialEstimate:
    """mean_b - mean_a (b is the candidate) from each arm's mean, variance and count."""
    n_a, n_b = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    n = n_a + n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        se2 = np.asarray(var_a) / n_a + np.asarray(var_b) / n_b
        unit_var = se2 * n  # the estimate's variance, per observation
    return _estimate(np.asarray(mean_b) - np.asarray(mean_a), se2, unit_var, n, null, alpha, n_star)


def proportion_difference(k_a: Any, n_a: Any, k_b: Any, n_b: Any, *, null: float = 0.0, alpha: float = ALPHA,
                          n_star: float = N_STAR) -> SequentialEstimate:
    """p_b - p_a for counts k of n. Variances use (k + 1) / (n + 2), so that an arm with no events
    yet does not claim zero uncertainty."""
    k_a, n_a, k_b, n_b = (np.asarray(x, dtype=float) for x in (k_a, n_a, k_b, n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_a, p_b = k_a / n_a, k_b / n_b
    res = mean_difference(p_a, _bernoulli_var(k_a, n_a), n_a, p_b, _bernoulli_var(k_b, n_b), n_b, null=null,
                          alpha=alpha, n_star=n_star)
    return _clipped(res, -1.0, 1.0)


def bucket_ratio_var(k: Any, n: Any) -> float:
    """The variance of sum(k) / sum(n) from per-bucket sums (k_g, n_g) of independent groups of units:
    the delta method with the bucket as the cluster, G / (G - 1) * sum((k_g - p n_g)^2) / N^2 over the
    G buckets that have any. NaN with fewer than two."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    used = n > 0
    g, total = int(used.sum()), float(n.sum())
    if g < 2 or total <= 0:
        return math.nan
    p = float(k.sum()) / total
    return g / (g - 1) * float(np.sum((k[used] - p * n[used]) ** 2)) / total ** 2


def clustered_proportion_difference(k_a: int, n_a: int, k_b: int, n_b: int, buckets_a: tuple[Any, Any],
                                    buckets_b: tuple[Any, Any], *, null: float = 0.0, alpha: float = ALPHA,
                                    n_star: float = N_STAR) -> SequentialEstimate:
    """proportion_difference with each arm's variance taken from its bucket sums (``(k per bucket, n per
    bucket)``) where that is the larger: when several rows share a randomisation unit (a sticky user's
    requests, a request's rows), they are not independent draws, and the binomial variance is too small."""
    if min(n_a, n_b) <= 0:
        return proportion_difference(k_a, n_a, k_b, n_b, null=null, alpha=alpha, n_star=n_star)
    # per observation, as mean_difference takes them: the larger of binomial and clustered
    var_a = max(float(_bernoulli_var(k_a, n_a)), n_a * float(np.nan_to_num(bucket_ratio_var(*buckets_a))))
    var_b = max(float(_bernoulli_var(k_b, n_b)), n_b * float(np.nan_to_num(bucket_ratio_var(*buckets_b))))
    res = mean_difference(k_a / n_a, var_a, n_a, k_b / n_b, var_b, n_b, null=null, alpha=alpha, n_star=n_star)
    return _clipped(res, -1.0, 1.0)


def design_effect(k: Any, n: Any) -> float:
    """How much the variance of a share sum(k) / sum(n) exceeds the binomial one, from bucket sums; at
    least 1 (never claims more information than independent draws would give)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    total = float(n.sum())
    p = float(k.sum()) / total if total > 0 else math.nan
    binomial = p * (1.0 - p) / total if total > 0 else math.nan
    clustered = bucket_ratio_var(k, n)
    if not (binomial > 0 and math.isfinite(clustered)):
        return 1.0
    return max(1.0, clustered / binomial)


def _clipped(res: SequentialEstimate, low: float, high: float) -> SequentialEstimate:
    """A proportion's interval never leaves the proportion's range."""
    return SequentialEstimate(res.estimate, _scalar(np.clip(res.low, low, high)), _scalar(np.clip(res.high, low, high)),
                              res.p_value, res.null)


def proportion(k: Any, n: Any, *, null: float, alpha: float = ALPHA, n_star: float = N_STAR) -> SequentialEstimate:
    """One proportion k / n against a fixed value (for example the shadow disagreement rate)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        unit_var = _bernoulli_var(k, n)
        se2 = unit_var / n
    return _clipped(_estimate(p, se2, unit_var, n, null, alpha, n_star), 0.0, 1.0)


def _bernoulli_var(k: Any, n: Any) -> Any:
    smoothed = (k + 1.0) / (n + 2.0)
    return smoothed * (1.0 - smoothed)


def _estimate(est: Any, se2: Any, unit_var: Any, n: Any, null: float, alpha: float,
              n_star: float) -> SequentialEstimate:
    rho2 = mixture_rho2(alpha, n_star)
    half = _half_width(unit_var, n, alpha, rho2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z2 = np.where(se2 > 0, (est - null) ** 2 / se2, 0.0)
    z2 = np.nan_to_num(z2, nan=0.0, posinf=0.0)
    p = np.where(np.asarray(n) > 0, _p_value(z2, n, rho2), 1.0)
    return SequentialEstimate(_scalar(est), _scalar(est - half), _scalar(est + half), _scalar(p), null)


def _scalar(x: Any) -> Any:
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


# -- quantiles (p95 latency) ---------------------------------------------------------------------


def bernoulli_subgaussian_var(q: float) -> float:
    """The smallest sub-Gaussian variance proxy of a centred Bernoulli(q) (Kearns and Saul, 1998)."""
    if abs(q - 0.5) < 1e-12:
        return 0.25
    return (1.0 - 2.0 * q) / (2.0 * math.log((1.0 - q) / q))


def quantile_boundary(n: Any, q: float, alpha: float, n_star: float = N_STAR) -> Any:
    """u_n: with probability >= 1 - alpha, |#{x_i <= true q-quantile} - q n| < u_n for every n."""
    v = bernoulli_subgaussian_var(q) * np.asarray(n, dtype=float)
    a = -2.0 * math.log(alpha)
    rho = bernoulli_subgaussian_var(q) * n_star / (a + math.log(a + 1.0))
    return np.sqrt((v + rho) * np.log((v + rho) / (rho * alpha * alpha)))


def quantile_ranks(n: int, q: float, alpha: float = ALPHA, n_star: float = N_STAR,
                   design_effect: float = 1.0) -> tuple[int, int]:
    """The 1-based ranks of the order statistics that bound the q-quantile after n observations: the
    interval is [x_(low), x_(high)], open-ended where a rank falls outside 1..n. With a design effect d
    (clustered observations), n counts as n / d independent ones, and the boundary is scaled back."""
    d = max(1.0, float(design_effect))
    u = d * float(quantile_boundary(n / d, q, alpha, n_star))
    return math.floor(q * n - u) + 1, math.ceil(q * n + u)


def quantile_ratio(sorted_a: np.ndarray, sorted_b: np.ndarray, *, q: float = 0.95, null: float = 1.0,
                   alpha: float = ALPHA, n_star: float = N_STAR) -> SequentialEstimate:
    """quantile(b) / quantile(a) for positive values (latencies), with an always-valid interval from
    the two arms' intervals at alpha / 2 each. The p-value is the smallest alpha at which the interval
    lies wholly above ``null`` (a one-sided question: is b slower than ``null`` times a?)."""
    if len(sorted_a) == 0 or len(sorted_b) == 0:
        return SequentialEstimate(math.nan, -math.inf, math.inf, 1.0, null)
    est = float(np.quantile(sorted_b, q) / np.quantile(sorted_a, q))

    def order(values: np.ndarray) -> OrderStatistic:
        return lambda rank, _upper: float(values[rank - 1])

    return _ratio(order(sorted_a), len(sorted_a), order(sorted_b), len(sorted_b), est, q, null, alpha, n_star)


# An order statistic by 1-based rank; ``upper`` asks for an upper bound of it (a histogram gives the
# edges of the bin it falls in), else a lower bound.
OrderStatistic = Callable[[int, bool], float]

# Log-spaced histogram bins for positive values such as latencies: each bin is 2% wide, from 1 us.
BIN_BASE = 0.001
BIN_GROWTH = 1.02


def histogram_bin(value: float) -> int:
    """The bin of a positive value (milliseconds for latencies)."""
    if not value > BIN_BASE:
        return 0
    return int(math.log(value / BIN_BASE) / math.log(BIN_GROWTH))


def _bin_edges(index: int) -> tuple[float, float]:
    return BIN_BASE * BIN_GROWTH ** index, BIN_BASE * BIN_GROWTH ** (index + 1)


def histogram_quantile_ratio(counts_a: dict[int, int], counts_b: dict[int, int], *, q: float = 0.95,
                             null: float = 1.0, alpha: float = ALPHA, n_star: float = N_STAR,
                             design_effects: tuple[float, float] = (1.0, 1.0)) -> SequentialEstimate:
    """quantile_ratio from two histograms (bin -> count, see histogram_bin). A bound uses the far edge
    of the bin its order statistic falls in, so the interval is at most one bin (2%) wider than the
    exact one; the estimate uses bin middles. Histograms add across processes, samples need not."""
    def cumulative(counts: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        bins = np.array(sorted(k for k, v in counts.items() if v > 0), dtype=int)
        return bins, np.cumsum([counts[b] for b in bins])

    bins_a, cum_a = cumulative(counts_a)
    bins_b, cum_b = cumulative(counts_b)
    if len(bins_a) == 0 or len(bins_b) == 0:
        return SequentialEstimate(math.nan, -math.inf, math.inf, 1.0, null)

    def order(bins: np.ndarray, cum: np.ndarray) -> OrderStatistic:
        def stat(rank: int, upper: bool) -> float:
            low, high = _bin_edges(int(bins[np.searchsorted(cum, rank)]))
            return high if upper else low
        return stat

    def middle(bins: np.ndarray, cum: np.ndarray) -> float:
        low, high = _bin_edges(int(bins[np.searchsorted(cum, max(1, math.ceil(q * cum[-1])))]))
        return math.sqrt(low * high)

    est = middle(bins_b, cum_b) / middle(bins_a, cum_a)
    return _ratio(order(bins_a, cum_a), int(cum_a[-1]), order(bins_b, cum_b), int(cum_b[-1]), est, q, null, alpha,
                  n_star, design_effects)


def _ratio(stat_a: OrderStatistic, n_a: int, stat_b: OrderStatistic, n_b: int, est: float, q: float, null: float,
           alpha: float, n_star: float, design_effects: tuple[float, float] = (1.0, 1.0)) -> SequentialEstimate:
    def bounds(level: float) -> tuple[float, float]:
        a_low_rank, a_high_rank = quantile_ranks(n_a, q, level / 2, n_star, design_effects[0])
        b_low_rank, b_high_rank = quantile_ranks(n_b, q, level / 2, n_star, design_effects[1])
        a_low = stat_a(a_low_rank, False) if a_low_rank >= 1 else 0.0
        a_high = stat_a(a_high_rank, True) if a_high_rank <= n_a else math.inf
        b_low = stat_b(b_low_rank, False) if b_low_rank >= 1 else 0.0
        b_high = stat_b(b_high_rank, True) if b_high_rank <= n_b else math.inf
        low = b_low / a_high if math.isfinite(a_high) and a_high > 0 else 0.0
        high = b_high / a_low if a_low > 0 else math.inf
        return low, high

    low, high = bounds(alpha)
    # The interval narrows as the level grows; bisect (on a log scale) for where it leaves null behind.
    lo_level, hi_level = 1e-12, 1.0
    if bounds(hi_level)[0] <= null:
        p = 1.0
    elif bounds(lo_level)[0] > null:
        p = lo_level
    else:
        for _ in range(40):
            mid = math.sqrt(lo_level * hi_level)
            if bounds(mid)[0] > null:
                hi_level = mid
            else:
                lo_level = mid
        p = hi_level
    return SequentialEstimate(est, low, high, p, null)


# -- sample-ratio mismatch -----------------------------------------------------------------------


def srm_p_value(counts: Any, weights: Any, concentration: float = SRM_CONCENTRATION) -> Any:
    """This look's p-value (1 / Bayes factor, capped at 1) that the counts were drawn with the
    configured weights, against a Dirichlet-multinomial alternative centred on them (Lindon and Malek
    2022). ``counts`` has the arms in its last axis."""
    x = np.asarray(counts, dtype=float)
    theta = np.asarray(weights, dtype=float)
    theta = theta / theta.sum()
    prior = concentration * theta
    n = x.sum(axis=-1)
    log_bf = (gammaln(prior.sum()) - gammaln(prior.sum() + n) + (gammaln(prior + x) - gammaln(prior)).sum(axis=-1)
              - (x * np.log(theta)).sum(axis=-1))
    return _scalar(np.minimum(1.0, np.exp(-log_bf)))
