from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing import allocation
from gateway.routing.allocation import BUCKETS
from tests.harness.strategies import bucket_counts

ARMS = ["a", "b", "c", "d"]


def test_quantise_sums_to_every_bucket_and_keeps_the_floor() -> None:
    counts = allocation.quantise({"a": 0.999, "b": 0.0005, "c": 0.0005}, floor_buckets=100)
    assert sum(counts.values()) == BUCKETS
    assert min(counts.values()) == 100
    assert counts["a"] == BUCKETS - 200


def test_an_arm_whose_weight_stays_keeps_every_one_of_its_users() -> None:
    old = allocation.initial({"a": 3000, "b": 4000, "c": 3000})
    new = allocation.rebalance(old, {"a": 1000, "b": 4000, "c": 5000})
    assert all(allocation.owner(new, b) == "b" for b in range(3000, 7000))  # b's own range is untouched
    assert allocation.moved(old, new) == 2000
    # Cutting again in order (a fixed split's way) would have moved b's users too.
    assert allocation.moved(old, allocation.initial({"a": 1000, "b": 4000, "c": 5000})) == 4000


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_reweighting_moves_exactly_the_total_variation_distance(data: st.DataObject) -> None:
    """Sticky users move only as far as a reweighting forces them: the share of buckets that change arm
    is the total variation distance between the old and the new weights, over several reweightings."""
    segments = allocation.initial(data.draw(bucket_counts(ARMS)))
    for _ in range(data.draw(st.integers(1, 4))):
        counts = data.draw(bucket_counts(ARMS))
        new = allocation.rebalance(segments, counts)
        assert allocation.shares(new) == {a: n for a, n in counts.items() if n}
        old_shares = allocation.shares(segments)
        forced = sum(max(0, old_shares.get(a, 0) - counts[a]) for a in ARMS)
        assert allocation.moved(segments, new) == forced
        assert sum(hi - lo for _, lo, hi in new) == BUCKETS and all(lo < hi for _, lo, hi in new)
        segments = new


def test_bad_counts_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="sum to"):
        allocation.rebalance(allocation.initial({"a": BUCKETS}), {"a": 10})
