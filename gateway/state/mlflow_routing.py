"""The routing store over the MLflow ledger (gateway/mlflow/ledger.py): the same interface as the
local state file's, for replicas on several machines. ``update`` raises StateConflict when another
replica's change landed between the read and the write."""

from __future__ import annotations

import time
from typing import Any

from gateway.mlflow.ledger import Entry, MlflowLedger
from gateway.routing.store import StoredRouting, Update
from gateway.state.documents import decode_routing, encode_routing

ROUTING, ROLLOUT = "routing", "rollout"
EVALUATION_TAG = "rollout.evaluation"


class MlflowRoutingStateStore:
    """RoutingStateStore's interface, over the ledger. ``update`` raises StateConflict when another
    replica's change landed between the read and the write."""

    def __init__(self, ledger: MlflowLedger, poll_interval_s: float = 1.0) -> None:
        self.ledger = ledger
        self.poll_interval_s = poll_interval_s

    @property
    def location(self) -> str:
        return self.ledger.location

    def poll(self) -> None:
        self.ledger.refresh()

    def status(self) -> dict[str, Any]:
        return self.ledger.status()

    def version(self) -> int:
        head = self.ledger.head(ROUTING)
        return head.version if head else 0

    def load(self) -> StoredRouting | None:
        return _routing(self.ledger.head(ROUTING))

    def offline_start(self) -> StoredRouting | None:
        """The local copy of the routing last read (``[state] start_without_mlflow = "last_read"``)."""
        return self.load() if self.ledger.load_local_copy() else None

    def update(self, update: Update) -> StoredRouting | None:
        def change(entry: Entry | None) -> tuple[dict[str, Any], str] | None:
            new = update(_routing(entry))
            if new is None:
                return None
            config, source, file_hash = new
            weights = ", ".join(f"{v.name}={v.weight:g}" for v in config.variants)
            return (encode_routing(config, source, time.time(), file_hash),
                    f"routing by {source}: mode {config.mode}, weights {weights}, config {config.config_hash}")

        return _routing(self.ledger.append(ROUTING, change))


def _routing(entry: Entry | None) -> StoredRouting | None:
    return None if entry is None else decode_routing(entry.version, entry.document)
