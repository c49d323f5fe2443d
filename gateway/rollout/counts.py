"""A rollout's live counts: per arm, per step's weights, and of shadow pairs. Plain sums and
histograms, so that counts add up: each worker (or replica) keeps its own, and ``merged`` gives the
whole traffic's. ``to_dict``/``from_dict`` are their form in the shared state file."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ARM_KEYS = ("requests", "errors", "labelled", "correct")

# The unit of analysis without remembering every unit: each randomisation unit (the sticky user, else
# the request) falls in one of BUCKETS groups by a hash of its own, unrelated to the routing hash. A
# bucket is a union of independent units, so its sums are independent draws, and they add across
# workers and replicas, since every process puts a unit in the same bucket. The guardrails take the
# spread of the bucket sums as the variance (the random-groups method), which is the clustered one.
BUCKETS = 32
COARSE_BINS = 20  # a request-time bucket cell is 20 histogram bins wide (x1.49): enough for a design effect


@functools.lru_cache(maxsize=1 << 16)  # a user's requests ask again and again
def unit_bucket(unit: str) -> int:
    """The bucket of a randomisation unit (a user pseudonym or a request id)."""
    digest = hashlib.blake2b(unit.encode("utf-8", "surrogatepass"), digest_size=8, person=b"gw-bucket").digest()
    return int.from_bytes(digest, "big") % BUCKETS


def bucket_cell(bucket: int, name: str) -> str:
    """The key of one bucket's count: ``name`` is an ARM_KEYS entry or ``t<coarse request-time bin>``."""
    return f"{bucket}/{name}"


def _add_into(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


@dataclass
class ArmCounts:
    """One variant's randomised traffic: answers, model failures, labels (right ones), and request
    times as a histogram (bin of ``gateway.stats.sequential.histogram_bin`` -> count)."""

    requests: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    latency_ms: dict[str, int] = field(default_factory=dict)
    # the same counts per unit bucket (``bucket_cell`` -> count): the unit-level variance
    buckets: dict[str, int] = field(default_factory=dict)

    def add(self, other: ArmCounts) -> None:
        for key in ARM_KEYS:
            setattr(self, key, getattr(self, key) + getattr(other, key))
        _add_into(self.latency_ms, other.latency_ms)
        _add_into(self.buckets, other.buckets)

    def count(self, key: str, unit: str, n: int = 1) -> None:
        """Add ``n`` to ``key`` (an ARM_KEYS entry), overall and in the unit's bucket."""
        setattr(self, key, getattr(self, key) + n)
        cell = bucket_cell(unit_bucket(unit), key)
        self.buckets[cell] = self.buckets.get(cell, 0) + n

    def count_time(self, fine_bin: int, unit: str) -> None:
        b = str(fine_bin)
        self.latency_ms[b] = self.latency_ms.get(b, 0) + 1
        cell = bucket_cell(unit_bucket(unit), f"t{fine_bin // COARSE_BINS}")
        self.buckets[cell] = self.buckets.get(cell, 0) + 1

    def per_bucket(self, name: str) -> list[int]:
        """``name``'s count in each bucket, in bucket order."""
        return [self.buckets.get(bucket_cell(b, name), 0) for b in range(BUCKETS)]

    def times_per_bucket(self, from_fine_bin: int) -> tuple[list[int], list[int]]:
        """(request times at or above ``from_fine_bin``'s coarse bin, all request times) per bucket."""
        edge = from_fine_bin // COARSE_BINS
        above, every = [0] * BUCKETS, [0] * BUCKETS
        for cell, n in self.buckets.items():
            bucket, name = cell.split("/", 1)
            if name.startswith("t"):
                every[int(bucket)] += n
                if int(name[1:]) >= edge:
                    above[int(bucket)] += n
        return above, every

    def take_labels(self, other: ArmCounts) -> None:
        """``other``'s labelled and correct counts, overall and per bucket, in place of these."""
        labels = ("/labelled", "/correct")
        self.labelled, self.correct = other.labelled, other.correct
        self.buckets = {cell: n for cell, n in self.buckets.items() if not cell.endswith(labels)}
        self.buckets.update({cell: n for cell, n in other.buckets.items() if cell.endswith(labels)})


@dataclass
class ShadowCounts:
    """Rows of the control's requests that the candidate scored in shadow, and where it answered
    otherwise."""

    pairs: int = 0
    disagree: int = 0


@dataclass
class RolloutCounts:
    arms: dict[str, ArmCounts] = field(default_factory=dict)
    steps: dict[str, dict[str, int]] = field(default_factory=dict)  # weights tag -> variant -> requests
    shadow: ShadowCounts = field(default_factory=ShadowCounts)
    # weights tag -> variant -> sticky users at their first request (in each worker): the unit of the
    # sample-ratio check when routing is sticky
    user_steps: dict[str, dict[str, int]] = field(default_factory=dict)

    def arm(self, variant: str) -> ArmCounts:
        """The variant's counts, created empty on first use."""
        return self.arms.setdefault(variant, ArmCounts())

    def count_split(self, weights_tag: str, variant: str) -> None:
        split = self.steps.setdefault(weights_tag, {})
        split[variant] = split.get(variant, 0) + 1

    def count_user(self, weights_tag: str, variant: str) -> None:
        split = self.user_steps.setdefault(weights_tag, {})
        split[variant] = split.get(variant, 0) + 1

    def merge(self, other: RolloutCounts) -> None:
        """Add ``other``'s counts into these."""
        for variant, arm in other.arms.items():
            self.arm(variant).add(arm)
        for tag, split in other.steps.items():
            _add_into(self.steps.setdefault(tag, {}), split)
        for tag, split in other.user_steps.items():
            _add_into(self.user_steps.setdefault(tag, {}), split)
        self.shadow.pairs += other.shadow.pairs
        self.shadow.disagree += other.shadow.disagree

    @classmethod
    def merged(cls, parts: Iterable[RolloutCounts]) -> RolloutCounts:
        """Several workers' counts added up."""
        total = cls()
        for part in parts:
            total.merge(part)
        return total

    def copy(self) -> RolloutCounts:
        return RolloutCounts.merged([self])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutCounts:
        arms = {str(v): ArmCounts(**{k: int(a.get(k, 0)) for k in ARM_KEYS},
                                  latency_ms={str(b): int(n) for b, n in a.get("latency_ms", {}).items()},
                                  buckets={str(c): int(n) for c, n in a.get("buckets", {}).items()})
                for v, a in data.get("arms", {}).items()}
        steps = {str(t): {str(v): int(n) for v, n in split.items()} for t, split in data.get("steps", {}).items()}
        shadow = data.get("shadow", {})
        users = {str(t): {str(v): int(n) for v, n in split.items()} for t, split in data.get("user_steps", {}).items()}
        return cls(arms, steps, ShadowCounts(int(shadow.get("pairs", 0)), int(shadow.get("disagree", 0))), users)
