"""Who answers a request: forced by header, sticky by user key, weighted at random, or shadowed.

Pure logic, no web framework. Sticky bucketing follows GrowthBook's FNV-1a 32-bit "v2" hash so
that a user keeps their version across restarts and replicas, and a weight change moves only the
users whose bucket now falls in another variant's range.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate

from gateway.domain.errors import UnknownVariant
from gateway.routing import allocation
from gateway.routing.spec import RoutingConfig, RoutingMode

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
BUCKETS = allocation.BUCKETS


class RoutingReason(StrEnum):
    WEIGHTED = "weighted"
    STICKY = "sticky"
    FORCED = "forced"
    SHADOW = "shadow"


def fnv1a32(text: str) -> int:
    """FNV-1a (32 bits) over the text's UTF-16 code units, as GrowthBook's SDKs hash (the JS SDK's
    ``charCodeAt`` loop): a non-ASCII user key lands in the bucket the SDKs give it. For ASCII the
    code units are the bytes."""
    units = text.encode("ascii") if text.isascii() else \
        memoryview(text.encode("utf-16-le", "surrogatepass")).cast("H")
    h = _FNV_OFFSET
    for unit in units:
        h ^= unit
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def bucket_index(salt: str, key: str) -> int:
    """The user's bucket, 0 to BUCKETS - 1, which depends only on (salt, key): GrowthBook hash version 2."""
    return fnv1a32(str(fnv1a32(salt + key))) % BUCKETS


def bucket(salt: str, key: str) -> float:
    """The user's bucket as a number in [0, 1)."""
    return bucket_index(salt, key) / BUCKETS


def parse_weights_tag(text: str) -> dict[str, float]:
    """``Router.weights_tag`` ("v1.0=0.7,v2.0=0.3") back as {variant: weight}; {} if it is not one."""
    out = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.rpartition("=")
        try:
            out[name] = float(value)
        except ValueError:
            return {}
    return out


@dataclass(frozen=True, slots=True)
class Decision:
    variant: str
    reason: RoutingReason
    shadow: str | None = None  # the candidate to score after the response, if any


class Router:
    """Chooses a variant for each request under one immutable RoutingConfig."""

    def __init__(self, config: RoutingConfig, rng: random.Random | None = None, version: int = 0) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self.names = [v.name for v in config.variants]
        self.version = version  # the routing's version (RoutingTable's origin): logged as weights_version
        total = sum(v.weight for v in config.variants)
        self._segments = config.allocation or ()
        if self._segments:  # bandit mode: the bucket ranges are the weights
            owned = allocation.shares(self._segments)
            weights = [owned.get(n, 0) / allocation.BUCKETS for n in self.names]
        elif total <= 0:
            # Only reachable in shadow mode, where weights are unused; keep sticky/weighted defined.
            weights = [1.0 / len(self.names)] * len(self.names)
        else:
            weights = [v.weight / total for v in config.variants]
        self.weights = dict(zip(self.names, weights, strict=True))
        # Cumulative right edges in config order, over the variants that can be chosen at all.
        self._chosen = [n for n in self.names if self.weights[n] > 0]
        self._edges = list(accumulate(self.weights[n] for n in self._chosen))
        self._edges[-1] = 1.0  # guard against float shortfall such as 0.9999999999
        self._starts = [lo for _, lo, _ in self._segments]
        self.weights_tag = ",".join(f"{n}={w:.6g}" for n, w in self.weights.items())
        self.config_hash = config.config_hash  # computed once per routing config, not per request

    def _pick(self, n: float) -> str:
        if self._segments:
            return self._owner(min(int(n * BUCKETS), BUCKETS - 1))
        return self._chosen[min(bisect.bisect_right(self._edges, n), len(self._chosen) - 1)]

    def assignment_probability(self, variant: str, reason: str) -> float:
        """The probability with which this request went to ``variant``: its weight when drawn at random
        (weighted, or sticky: a user's bucket is a uniform draw over users), 1 when forced or shadowed."""
        return self.weights[variant] if reason in (RoutingReason.WEIGHTED, RoutingReason.STICKY) else 1.0

    def _owner(self, b: int) -> str:
        return self._segments[max(bisect.bisect_right(self._starts, b) - 1, 0)][0]

    def sticky_variant(self, key: str) -> str:
        if self._segments:
            return self._owner(bucket_index(self.config.salt, key))
        return self._pick(bucket(self.config.salt, key))

    def decide(self, forced: str | None = None, user_key: str | None = None) -> Decision:
        if forced is not None:
            forced = forced.strip()
            if forced not in self.weights:
                raise UnknownVariant(forced, self.names)
            return Decision(forced, RoutingReason.FORCED)
        if self.config.mode == RoutingMode.SHADOW:
            shadow = self.config.shadow
            sampled = shadow.sample_rate >= 1.0 or self._rng.random() < shadow.sample_rate
            return Decision(shadow.primary, RoutingReason.SHADOW, shadow.candidate if sampled else None)
        if user_key:
            return self._mirrored(Decision(self.sticky_variant(user_key), RoutingReason.STICKY))
        return self._mirrored(Decision(self._pick(self._rng.random()), RoutingReason.WEIGHTED))

    def _mirrored(self, decision: Decision) -> Decision:
        """With ``mirror``, the primary's answers are also scored by the candidate after the response."""
        shadow = self.config.shadow
        if not self.config.mirror or decision.variant != shadow.primary:
            return decision
        if shadow.sample_rate >= 1.0 or self._rng.random() < shadow.sample_rate:
            return Decision(decision.variant, decision.reason, shadow.candidate)
        return decision
