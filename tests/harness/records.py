"""Prediction records for the spool and exporter tests."""

from __future__ import annotations

from gateway.domain.records import PredictionRecord
from stack.iris import FEATURES


def rec(i: int, role: str = "primary", version: str = "v1.0", ts: int | None = None, row: int = 0,
        **fields: object) -> PredictionRecord:
    base: dict[str, object] = dict(
        request_id=f"r{i}", role=role, model_version=version, features=dict(FEATURES), prediction="Setosa",
        class_index=0, inference_time_ms=0.5, ts_ms=ts if ts is not None else 1_700_000_000_000 + i,
        routing="weighted", config_hash="abc", row_index=row)
    return PredictionRecord(**{**base, **fields})  # type: ignore[arg-type]
