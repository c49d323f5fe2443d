"""What the request pipeline hands back: a scored request (its rows, records and predictions), the
answer (``PredictionOutcome``), and the counters that /stats shows."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from gateway.domain.records import PredictionRecord
from gateway.routing.router import Decision, Router
from gateway.variants.output import Predictions


class ServiceCounters:
    """Request counters shown in /stats (served, rejected_unlogged, replayed, shadow_*, feedback)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str, by: int = 1) -> None:
        with self._lock:
            self._counts[key] += by

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True, slots=True)
class ScoredRequest:
    request_id: str
    decision: Decision
    rows: list[dict[str, Any]]
    records: list[PredictionRecord]
    predictions: Predictions
    router: Router
    params: dict[str, Any] | None = None


Committed = tuple[ScoredRequest, BaseException | None]  # a request's records written, or why not


@dataclass(frozen=True, slots=True)
class PredictionOutcome:
    request_id: str
    model_version: str
    reason: str
    predictions: Predictions
    inference_time_ms: float
    logged: bool
    replayed: bool = False
    shadow: str | None = None
