"""What decides who answers: the variants' specs, the shadow pair, and the routing in force
(``RoutingConfig``) with the cross-field rules that start-up and every live change share. The
``[[variants]]`` and ``[shadow]`` sections of the settings are these classes."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.domain.validation import Section
from gateway.routing.allocation import initial, quantise
from gateway.variants.spec import VariantSpec


class RoutingMode(StrEnum):
    """How requests are routed: by fixed weights, all to the primary with a shadow candidate, or by
    weights a bandit moves."""

    WEIGHTED = "weighted"
    SHADOW = "shadow"
    BANDIT = "bandit"

class ShadowSection(Section):
    primary: str = "v1.0"
    candidate: str = "v2.0"
    sample_rate: float = Field(1.0, ge=0, le=1)


class RoutingConfig(BaseModel):
    """The part of the settings that decides who answers; it can change while serving."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: RoutingMode
    variants: tuple[VariantSpec, ...]
    shadow: ShadowSection
    salt: str
    # Weighted mode only: requests answered by shadow.primary are also scored by shadow.candidate at
    # shadow.sample_rate (a rollout's disagreement guardrail turns it on).
    mirror: bool = False
    # Bandit mode: the bucket ranges each variant owns (gateway/routing/allocation.py), which the
    # variants' weights follow; a reweighting moves as few sticky users as it can.
    allocation: tuple[tuple[str, int, int], ...] | None = None

    @property
    def config_hash(self) -> str:
        """A short stable digest, tagged on every run so periods with different weights differ."""
        data = self.model_dump(mode="json")
        for key in ("mirror", "allocation"):
            if not data[key]:
                del data[key]  # configs without it keep the hash they had before the field existed
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def validate_routing(
    mode: str, variants: list[VariantSpec] | tuple[VariantSpec, ...], shadow: ShadowSection, mirror: bool = False
) -> None:
    """Cross-field rules shared by start-up config and any later routing change."""
    names = [v.name for v in variants]
    if not names:
        raise ValueError("variants: at least one variant is required")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"variants: duplicate variant name(s) {duplicates}")
    total = sum(v.weight for v in variants)
    if not math.isfinite(total):
        raise ValueError("variants.weight: weights must sum to a finite number (scale them down)")
    if mode in ("weighted", "bandit") and total <= 0:
        raise ValueError("variants.weight: weights must sum to more than 0")
    if mode == RoutingMode.SHADOW or mirror:
        for key in ("primary", "candidate"):
            if getattr(shadow, key) not in names:
                raise ValueError(
                    f"shadow.{key}: unknown variant {getattr(shadow, key)!r}; configured: {names}"
                )
        if shadow.primary == shadow.candidate:
            raise ValueError("shadow.candidate: must differ from shadow.primary")


def starting_config(mode: Any, variants: Sequence[VariantSpec], shadow: ShadowSection, salt: str) -> RoutingConfig:
    """The routing a start-up begins from: the file's weights, or in bandit mode its burn-in (equal
    weights, whatever the file says, over bucket ranges cut in order)."""
    if mode == RoutingMode.BANDIT:
        equal = tuple(v.model_copy(update={"weight": 1.0}) for v in variants)
        return RoutingConfig(mode=RoutingMode.BANDIT, variants=equal, shadow=shadow, salt=salt,
                             allocation=initial(quantise({v.name: 1.0 for v in equal})))
    return RoutingConfig(mode=mode, variants=tuple(variants), shadow=shadow, salt=salt)
