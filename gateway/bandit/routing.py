"""The bandit's bucket ranges in the routing config: made when bandit mode starts, moved minimally
when the weights change (by the reweigher, the admin API or a reload), dropped in any other mode."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.bandit import allocation
from gateway.bandit.allocation import Segment

if TYPE_CHECKING:
    from gateway.routing.spec import RoutingConfig, VariantSpec


def bandit_allocation(mode: str, old: RoutingConfig, variants: Sequence[VariantSpec],
                      given: tuple[Segment, ...] | None = None) -> tuple[Segment, ...] | None:
    """The ranges for a routing config of this ``mode`` and ``variants`` (their weights), made from the
    ``old`` config's ranges: ``given`` as they are (the reweigher computed them), else the weights
    rebalanced over the old ranges (or cut in order, when there were none)."""
    if mode != "bandit":
        return None
    if given is not None:
        return given
    counts = allocation.quantise({v.name: v.weight for v in variants})
    if old.allocation and {a for a, _, _ in old.allocation} <= {v.name for v in variants}:
        return allocation.rebalance(old.allocation, counts)
    return allocation.initial(counts)
