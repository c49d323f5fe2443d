"""What a routing store keeps and offers: the stored routing, and the interface both stores (the local
state file and MLflow's registry) implement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.routing.spec import RoutingConfig


@dataclass(frozen=True, slots=True)
class StoredRouting:
    version: int
    config: RoutingConfig
    source: str
    changed_at: float  # Unix time
    file_hash: str  # config_hash of the config file's routing last applied


# Given what is stored (None: nothing yet), the new (config, source, file_hash), or None for no change.
Update = Callable[[StoredRouting | None], tuple[RoutingConfig, str, str] | None]


class RoutingStore(Protocol):
    """Where the routing is shared: this file (one machine), or MLflow (replicas; state/mlflow_routing.py)."""

    poll_interval_s: float

    @property
    def location(self) -> str: ...
    def poll(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def version(self) -> int: ...
    def load(self) -> StoredRouting | None: ...
    def update(self, update: Update) -> StoredRouting | None: ...
    def offline_start(self) -> StoredRouting | None:
        """The routing to start from when the store cannot be reached at start-up (None: the file's)."""
        ...
