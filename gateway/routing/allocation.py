"""Which buckets each arm owns, and how a new set of weights moves as few of them as it can.

The sticky hash puts every user in one of ``BUCKETS`` buckets (gateway/routing/router.py). Under a
fixed split the buckets are cut in config order; a bandit moves its weights every few minutes, and
cutting again in config order would move users of an arm whose weight did not change. Here each arm
owns a set of bucket ranges: an arm that shrinks gives up buckets from the end of its ranges, and the
arms that grow take exactly those. The share of users moved is then the total variation distance
between the old and the new weights, the least any reassignment can move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

BUCKETS = 10_000

Segment = tuple[str, int, int]  # (arm, first bucket, one past the last bucket)


def quantise(weights: Mapping[str, float], floor_buckets: int = 0) -> dict[str, int]:
    """Weights as whole buckets summing to BUCKETS (largest remainder), none below ``floor_buckets``."""
    total = sum(weights.values())
    if total <= 0 or not math.isfinite(total):
        raise ValueError("weights must sum to a positive finite number")
    exact = {arm: BUCKETS * w / total for arm, w in weights.items()}
    counts = {arm: max(floor_buckets, math.floor(x)) for arm, x in exact.items()}
    left = BUCKETS - sum(counts.values())
    position = {arm: i for i, arm in enumerate(exact)}  # ties go to the arm named first
    order = sorted(exact, key=lambda arm: (-(exact[arm] - math.floor(exact[arm])), position[arm]))
    if left >= 0:
        for arm in order[:left]:
            counts[arm] += 1
    else:  # floors took more than their share: take it back from the largest arms
        for arm in sorted(counts, key=lambda a: (counts[a], a), reverse=True):
            take = min(-left, counts[arm] - floor_buckets)
            counts[arm] -= take
            left += take
            if left == 0:
                break
    return counts


def initial(counts: Mapping[str, int]) -> tuple[Segment, ...]:
    """Ranges cut in the given order, as a fixed split cuts them."""
    out, start = [], 0
    for arm, n in counts.items():
        if n > 0:
            out.append((arm, start, start + n))
            start += n
    return tuple(out)


def shares(segments: Sequence[Segment]) -> dict[str, int]:
    out: dict[str, int] = {}
    for arm, lo, hi in segments:
        out[arm] = out.get(arm, 0) + hi - lo
    return out


def rebalance(segments: Sequence[Segment], counts: Mapping[str, int]) -> tuple[Segment, ...]:
    """New ranges holding ``counts`` buckets per arm (summing to BUCKETS), moving the fewest buckets
    from the ranges in ``segments``: an arm keeps min(old, new) of its buckets."""
    if sum(counts.values()) != BUCKETS or any(n < 0 for n in counts.values()):
        raise ValueError(f"bucket counts must be non-negative and sum to {BUCKETS}")
    have = shares(segments)
    kept: list[Segment] = []
    freed: list[tuple[int, int]] = []
    budget = {arm: min(have.get(arm, 0), counts.get(arm, 0)) for arm in set(have) | set(counts)}
    for arm, lo, hi in sorted(segments, key=lambda s: s[1]):
        keep = min(budget.get(arm, 0), hi - lo)
        budget[arm] = budget.get(arm, 0) - keep
        if keep:
            kept.append((arm, lo, lo + keep))
        if lo + keep < hi:
            freed.append((lo + keep, hi))
    covered = sum(hi - lo for _, lo, hi in segments)
    if covered < BUCKETS:  # ranges that covered less than every bucket (never made here): the rest is free
        freed.extend(_gaps(segments))
    need = {arm: counts[arm] - min(have.get(arm, 0), counts[arm]) for arm in counts}
    for arm in counts:  # in the given order: deterministic
        while need[arm] > 0:
            lo, hi = freed.pop(0)
            take = min(need[arm], hi - lo)
            kept.append((arm, lo, lo + take))
            need[arm] -= take
            if lo + take < hi:
                freed.insert(0, (lo + take, hi))
    return _merged(sorted(kept, key=lambda s: s[1]))


def moved(old: Sequence[Segment], new: Sequence[Segment]) -> int:
    """Buckets whose arm differs between two allocations."""
    return sum(1 for b in range(BUCKETS) if owner(old, b) != owner(new, b))


def owner(segments: Sequence[Segment], bucket: int) -> str | None:
    for arm, lo, hi in segments:
        if lo <= bucket < hi:
            return arm
    return None


def _gaps(segments: Sequence[Segment]) -> list[tuple[int, int]]:
    out, at = [], 0
    for _, lo, hi in sorted(segments, key=lambda s: s[1]):
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
    if at < BUCKETS:
        out.append((at, BUCKETS))
    return out


def _merged(segments: list[Segment]) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for seg in segments:
        if out and out[-1][0] == seg[0] and out[-1][2] == seg[1]:
            out[-1] = (seg[0], out[-1][1], seg[2])
        else:
            out.append(seg)
    return tuple(out)
