"""The always-valid tests keep their error rate under continuous peeking (where a fixed-horizon test
does not), catch real degradations, and agree with scipy where they restate one of its tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from experiments.bench import sequential_sim as sim
from gateway.stats.sequential import (
    ALPHA,
    mean_difference,
    proportion,
    proportion_difference,
    quantile_ranks,
    quantile_ratio,
    srm_p_value,
)


@pytest.mark.parametrize(("name", "run"), [("error rate / accuracy", sim.aa_proportions),
                                           ("p95 latency ratio", sim.aa_latency_p95),
                                           ("sample ratio", sim.aa_srm)])
def test_aa_with_a_look_every_100_samples_stays_within_alpha(name: str, run: object) -> None:
    rates = run()  # type: ignore[operator]
    print(f"\nA/A {name}: {rates.experiments} experiments x {rates.looks} looks: sequential "
          f"{rates.sequential:.1%}, fixed-horizon {rates.fixed_horizon:.1%} (alpha {ALPHA:.0%})")
    assert rates.experiments == 500 and rates.looks == 50
    assert rates.sequential <= ALPHA + 0.01
    assert rates.fixed_horizon > 3 * ALPHA  # the problem the sequential test solves


def test_a_five_point_accuracy_drop_is_detected() -> None:
    power = sim.power_accuracy_drop()
    print(f"\naccuracy 95% -> 90%: detected in {power.detected:.0%}, median {power.median_samples:,.0f} "
          "labelled samples per arm")
    assert power.detected >= 0.95 and power.median_samples is not None and power.median_samples < 5000


def test_a_candidate_30_percent_slower_at_p95_is_detected() -> None:
    power = sim.power_latency()
    print(f"\n30% slower at p95: detected in {power.detected:.0%}, median {power.median_samples:,.0f} "
          "requests per arm")
    assert power.detected >= 0.95 and power.median_samples is not None and power.median_samples < 10_000


def test_the_vectorised_fixed_horizon_tests_are_scipys() -> None:
    rng = np.random.default_rng(0)
    k_a, k_b, n = np.array([40, 7]), np.array([55, 9]), np.array([100, 20])
    ours = sim.pearson_chi2_2x2(k_a, n, k_b, n)
    for i in range(2):
        table = [[k_a[i], n[i] - k_a[i]], [k_b[i], n[i] - k_b[i]]]
        assert ours[i] == pytest.approx(stats.chi2_contingency(table, correction=False)[0])
    a, b = rng.lognormal(size=(2, 300)), rng.lognormal(size=(2, 300))
    expected = stats.mannwhitneyu(a, b, axis=1, method="asymptotic", use_continuity=False).pvalue
    assert sim.mann_whitney_p(a, b) == pytest.approx(expected)


counts = st.integers(0, 5000)


@given(k_a=counts, extra_a=counts, k_b=counts, extra_b=counts)
def test_interval_and_p_value_agree(k_a: int, extra_a: int, k_b: int, extra_b: int) -> None:
    """The p-value is at most alpha exactly when the null value lies outside the interval."""
    n_a, n_b = k_a + extra_a, k_b + extra_b
    res = proportion_difference(k_a, n_a, k_b, n_b)
    if n_a == 0 or n_b == 0:
        assert res.p_value == 1.0 or math.isnan(res.estimate)
        return
    assert res.low <= res.estimate <= res.high
    outside = res.low > 0 or res.high < 0
    if abs(res.low) > 1e-9 and abs(res.high) > 1e-9:  # not on the boundary itself
        assert (res.p_value <= ALPHA) == outside


def test_the_interval_narrows_and_covers_the_truth() -> None:
    rng = np.random.default_rng(7)
    widths = []
    for n in (100, 1000, 10_000):
        x = rng.normal(1.0, 2.0, n)
        y = rng.normal(1.5, 2.0, n)
        res = mean_difference(x.mean(), x.var(ddof=1), n, y.mean(), y.var(ddof=1), n)
        assert res.low <= 0.5 <= res.high
        widths.append(res.high - res.low)
    assert widths[0] > widths[1] > widths[2]
    one = proportion(300, 1000, null=0.1)
    assert one.p_value < 0.001 and one.low > 0.1
    # n* trades early width for late width: tuned for small samples, 30 of 100 is already clear.
    assert proportion(30, 100, null=0.1).p_value > ALPHA
    assert proportion(30, 100, null=0.1, n_star=200).p_value < ALPHA


def test_the_quantile_ranks_cover_the_p95_and_open_when_too_few() -> None:
    rng = np.random.default_rng(3)
    values = np.sort(rng.exponential(1.0, 5000))
    low_rank, high_rank = quantile_ranks(len(values), 0.95)
    assert values[low_rank - 1] < -math.log(0.05) < values[high_rank - 1]  # the true p95 is inside
    assert quantile_ranks(20, 0.95)[1] > 20  # too few: the upper end is still open
    slower = quantile_ratio(values, np.sort(rng.exponential(2.0, 5000)))
    assert slower.low > 1.0 and slower.p_value < ALPHA and 1.7 < slower.estimate < 2.3
    same = quantile_ratio(values, np.sort(rng.exponential(1.0, 5000)))
    assert same.low < 1.0 < same.high and same.p_value > ALPHA


def test_srm_flags_a_broken_split_and_not_a_fair_one() -> None:
    assert srm_p_value([5000, 5000], [0.5, 0.5]) == 1.0
    assert srm_p_value([5300, 4700], [0.5, 0.5]) < 0.001
    batch = srm_p_value(np.array([[5000, 5000], [5300, 4700]]), [1, 1])
    assert batch.shape == (2,) and batch[1] < 0.001



def test_the_histogram_ratio_matches_the_exact_one_within_a_bin() -> None:
    from gateway.stats.sequential import histogram_bin, histogram_quantile_ratio

    rng = np.random.default_rng(11)
    a, b = rng.lognormal(0.0, 0.5, 4000), rng.lognormal(np.log(1.3), 0.5, 4000)

    def hist(values: np.ndarray) -> dict[int, int]:
        out: dict[int, int] = {}
        for v in values:
            out[histogram_bin(float(v))] = out.get(histogram_bin(float(v)), 0) + 1
        return out

    exact = quantile_ratio(np.sort(a), np.sort(b))
    binned = histogram_quantile_ratio(hist(a), hist(b))
    assert binned.estimate == pytest.approx(exact.estimate, rel=0.03)
    assert binned.low <= exact.low and binned.high >= exact.high  # never narrower
    assert binned.low == pytest.approx(exact.low, rel=0.05) and binned.high == pytest.approx(exact.high, rel=0.05)
    assert binned.p_value >= exact.p_value


def test_the_bucket_variance_is_the_delta_method_with_the_bucket_as_the_cluster() -> None:
    from gateway.stats.sequential import bucket_ratio_var

    k, n = np.array([3.0, 1.0, 8.0, 0.0]), np.array([4.0, 5.0, 10.0, 0.0])  # an empty bucket is no cluster
    p = k.sum() / n.sum()
    by_hand = 3 / 2 * (((3 - 4 * p) ** 2 + (1 - 5 * p) ** 2 + (8 - 10 * p) ** 2) / n.sum() ** 2)
    assert bucket_ratio_var(k, n) == pytest.approx(by_hand)
    assert math.isnan(bucket_ratio_var([1.0, 0.0], [2.0, 0.0]))  # one cluster says nothing about spread


def test_independent_rows_have_a_design_effect_near_one_and_whole_clusters_a_large_one() -> None:
    from gateway.stats.sequential import design_effect

    rng = np.random.default_rng(3)
    buckets = 32
    independent, clustered = [], []
    for _ in range(500):
        rows = rng.random(4000) < 0.3  # independent draws spread over the buckets at random
        where = rng.integers(0, buckets, rows.size)
        independent.append(design_effect(np.bincount(where, rows, buckets), np.bincount(where, None, buckets)))
        # 40 users of 100 rows each, every row of a user alike: worth 40 draws, not 4,000
        user_value = rng.random(40) < 0.3
        user_bucket = rng.integers(0, buckets, 40)
        clustered.append(design_effect(np.bincount(user_bucket, user_value * 100.0, buckets),
                                       np.bincount(user_bucket, np.full(40, 100.0), buckets)))
    # A spread over 32 buckets is a noisy variance (31 degrees of freedom): near 1, at times more.
    assert np.median(independent) < 1.1 and np.quantile(independent, 0.99) < 2.0
    assert np.median(clustered) > 30.0
    assert design_effect([0, 0], [0, 0]) == 1.0
