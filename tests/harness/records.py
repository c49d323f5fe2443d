"""Prediction records for the spool and exporter tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.domain.records import PredictionRecord
from stack.iris import FEATURES


def rec(i: int, role: str = "primary", version: str = "v1.0", ts: int | None = None, row: int = 0,
        **fields: object) -> PredictionRecord:
    base: dict[str, object] = dict(
        request_id=f"r{i}", role=role, model_version=version, features=dict(FEATURES), prediction="Setosa",
        class_index=0, inference_time_ms=0.5, ts_ms=ts if ts is not None else 1_700_000_000_000 + i,
        routing="weighted", config_hash="abc", row_index=row)
    return PredictionRecord(**{**base, **fields})  # type: ignore[arg-type]


def spool_labelled(spool: Any, n: int, label: Callable[[int], Any]) -> None:
    """Records r0..r{n-1} in ``spool``, each with a label by receipt (``label(i)``; right when i % 3)."""
    for i in range(n):
        spool.append(rec(i))
        record = spool.find(f"r{i}")
        assert record is not None
        spool.labels.append(record, label(i), bool(i % 3), None, trust="receipt", unit=f"request:r{i}")


def drain_labels(spool: Any, step: Any, fake: Any, rounds: int = 500) -> list[str]:
    """Run a label export step until the spool's labels are all exported, its MLflow failing as the
    fake says (a failed round's leases expire for the next); returns each feedback run's batch id,
    checked to be unique."""
    for _ in range(rounds):
        if spool.labels.count_open() == 0:
            break
        try:
            step.run(draining=True)
        except ConnectionError:
            spool.queue.expire_leases()
    assert spool.labels.count_open() == 0
    batches = [r["tags"]["feedback_batch_id"] for r in fake.runs.values()]
    assert len(batches) == len(set(batches))
    return batches
