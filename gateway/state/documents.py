"""The shared state's two documents, as JSON-ready dicts: the routing in force and the rollout. One
codec each, used by both stores (the local state file and the ledger in MLflow's registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.rollout.record import RolloutRecord
from gateway.rollout.spec import RolloutSpec, RolloutState
from gateway.routing.spec import RoutingConfig
from gateway.routing.store import StoredRouting


def encode_routing(config: RoutingConfig, source: str, changed_at: float, file_hash: str) -> dict[str, Any]:
    return {"config": config.model_dump(mode="json"), "source": source, "changed_at": changed_at,
            "file_hash": file_hash}


def decode_routing(version: int, document: Mapping[str, Any]) -> StoredRouting:
    return StoredRouting(int(version), RoutingConfig.model_validate(document["config"]), str(document["source"]),
                         float(document["changed_at"]), str(document["file_hash"]))


def encode_rollout(record: RolloutRecord, with_evaluation: bool = True) -> dict[str, Any]:
    """The rollout; without its evaluation when that is kept elsewhere (the ledger's model tag)."""
    return {"rollout_id": record.rollout_id, "spec": record.spec.model_dump(mode="json"), "state": str(record.state),
            "step": record.step, "started_at": record.started_at, "updated_at": record.updated_at,
            "history": record.history, "evaluation": record.evaluation if with_evaluation else {}}


def decode_rollout(document: Mapping[str, Any]) -> RolloutRecord:
    return RolloutRecord(str(document["rollout_id"]), RolloutSpec.model_validate(document["spec"]),
                         RolloutState(document["state"]), int(document["step"]), float(document["started_at"]),
                         float(document["updated_at"]), list(document["history"]),
                         dict(document.get("evaluation") or {}))
