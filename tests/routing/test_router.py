from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from growthbook.core import gbhash
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.errors import UnknownVariant
from gateway.routing.router import Router, RoutingReason, bucket, fnv1a32
from tests.harness.strategies import routing_config, salts, user_keys, weight_lists


def test_fnv1a32_reference_values() -> None:
    # Published FNV-1a 32-bit test vectors.
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


def test_bucket_values_are_pinned() -> None:
    # Users must keep their version across releases: these buckets may never change.
    got = [bucket("iris-ab", k) for k in ("user-1", "user-2", "alice", "")]
    assert got == [0.4106, 0.8387, 0.4343, 0.2193]
    assert bucket("other-salt", "user-1") != bucket("iris-ab", "user-1")


@settings(deadline=None)  # a pure function: a slow example on a busy CI machine is no failure
@given(salt=salts, key=st.text(max_size=40) | st.text(st.characters(min_codepoint=0x80), max_size=12))
def test_buckets_are_growthbooks_own_for_any_key(salt: str, key: str) -> None:
    """GrowthBook's SDK (hash version 2) gives every key, non-ASCII ones included, the same bucket."""
    assert bucket(salt, key) == gbhash(salt, key, 2)


def test_non_ascii_keys_hash_their_utf16_code_units() -> None:
    for key in ("zoë", "użytkownik-7", "用户", "😀-emoji", "a\u0301"):
        assert bucket("iris-ab", key) == gbhash("iris-ab", key, 2), key
    assert fnv1a32("é") != _utf8_fnv("é")  # the bytes would give another bucket


def _utf8_fnv(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


@given(weights=weight_lists(), salt=salts, key=user_keys)
def test_same_key_same_variant(weights: list[float], salt: str, key: str) -> None:
    router = Router(routing_config(weights, salt))
    first = router.decide(user_key=key)
    assert first.reason is RoutingReason.STICKY
    # A second router built from the same config (a restart, a replica) agrees.
    assert Router(routing_config(weights, salt)).decide(user_key=key).variant == first.variant


@given(weights=weight_lists(), seed=st.integers(0, 2**32), keys=st.lists(user_keys, max_size=30))
def test_only_configured_and_never_zero_weight(weights: list[float], seed: int, keys: list[str]) -> None:
    config = routing_config(weights)
    router = Router(config, rng=random.Random(seed))
    allowed = {v.name for v in config.variants if v.weight > 0}
    for _ in range(50):
        assert router.decide().variant in allowed
    for key in keys:
        assert router.decide(user_key=key).variant in allowed


def _within_binomial(count: int, n: int, p: float, z: float = 4.5) -> bool:
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1


@settings(max_examples=25, deadline=None)
@given(weights=weight_lists(max_size=4), salt=salts)
def test_sticky_shares_match_weights_over_20000_keys(weights: list[float], salt: str) -> None:
    router = Router(routing_config(weights, salt))
    n = 20_000
    counts = Counter(router.sticky_variant(f"user-{i}") for i in range(n))
    for name, p in router.weights.items():
        assert _within_binomial(counts.get(name, 0), n, p), (name, counts, router.weights)


@settings(max_examples=25, deadline=None)
@given(weights=weight_lists(max_size=4), seed=st.integers(0, 2**32))
def test_weighted_shares_match_weights(weights: list[float], seed: int) -> None:
    router = Router(routing_config(weights), rng=random.Random(seed))
    n = 20_000
    counts = Counter(router.decide().variant for _ in range(n))
    for name, p in router.weights.items():
        assert _within_binomial(counts.get(name, 0), n, p), (name, counts)


@settings(max_examples=30, deadline=None)
@given(old=weight_lists(min_size=2, max_size=2), new=weight_lists(min_size=2, max_size=2), salt=salts)
def test_weight_change_moves_only_the_minimal_share(old: list[float], new: list[float], salt: str) -> None:
    before, after = Router(routing_config(old, salt)), Router(routing_config(new, salt))
    n = 20_000
    keys = [f"k{i}" for i in range(n)]
    moved = sum(before.sticky_variant(k) != after.sticky_variant(k) for k in keys)
    # With contiguous ranges in config order the least that must move is |Δ share of the first|.
    minimal = abs(before.weights["v0.0"] - after.weights["v0.0"])
    assert _within_binomial(moved, n, minimal), (moved / n, minimal)


def test_seventy_thirty_to_sixty_forty_moves_ten_percent() -> None:
    before, after = Router(routing_config([0.7, 0.3])), Router(routing_config([0.6, 0.4]))
    keys = [f"user-{i}" for i in range(20_000)]
    moves = [(before.sticky_variant(k), after.sticky_variant(k)) for k in keys
             if before.sticky_variant(k) != after.sticky_variant(k)]
    assert all(m == ("v0.0", "v1.0") for m in moves)  # only from the shrinking variant
    assert 0.09 < len(moves) / len(keys) < 0.11


def test_forced_header_wins_and_unknown_lists_valid() -> None:
    router = Router(routing_config([1.0, 0.0]))
    assert router.decide(forced="v1.0", user_key="u").variant == "v1.0"
    assert router.decide(forced="v1.0").reason is RoutingReason.FORCED
    with pytest.raises(UnknownVariant) as err:
        router.decide(forced="v9")
    assert "v0.0, v1.0" in str(err.value)


def test_shadow_mode_primary_answers_and_candidate_is_sampled() -> None:
    config = routing_config([0.5, 0.5], mode="shadow")
    router = Router(config, rng=random.Random(1))
    decision = router.decide(user_key="someone")
    assert decision.variant == "v0.0" and decision.shadow == "v1.0" and decision.reason is RoutingReason.SHADOW
    half = Router(config.model_copy(update={"shadow": config.shadow.model_copy(update={"sample_rate": 0.25})}),
                  rng=random.Random(2))
    sampled = sum(half.decide().shadow is not None for _ in range(20_000))
    assert _within_binomial(sampled, 20_000, 0.25)
