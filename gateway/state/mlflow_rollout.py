"""The rollout's record in the shared state's ledger (gateway/mlflow/ledger.py): each command or
decision a version of kind ``rollout``, the last evaluation a registered-model tag."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from typing import Any

from gateway.domain.errors import StateUnavailable
from gateway.mlflow.ledger import Entry, MlflowLedger
from gateway.rollout.counts import RolloutCounts
from gateway.rollout.record import Change, RolloutRecord
from gateway.state.documents import decode_rollout, encode_rollout
from gateway.state.mlflow_routing import EVALUATION_TAG, ROLLOUT


class MlflowRolloutStore:
    """RolloutStore's interface, over the ledger: each command or decision is a version; the last
    evaluation (written at every look by the one controller) is a registered-model tag. Counts are
    not stored here: each replica publishes its own on /metrics and the controller sums them from
    Prometheus.

    The evaluation is read by a background thread every ``evaluation_max_age_s`` (started by the
    first ``load``), never by the caller: /metrics scrapes and GET /rollout answer from memory
    however slow MLflow is."""

    def __init__(self, ledger: MlflowLedger, evaluation_max_age_s: float = 1.0) -> None:
        self.ledger = ledger
        self.evaluation_max_age_s = evaluation_max_age_s
        self._evaluation: tuple[float, dict[str, Any]] = (0.0, {})
        self._refresher: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _evaluation_now(self) -> dict[str, Any]:
        if self._refresher is None:
            with self._start_lock:
                if self._refresher is None:
                    self._refresher = threading.Thread(target=self._refresh, name="rollout-evaluation",
                                                       daemon=True)
                    self._refresher.start()
        return self._evaluation[1]

    def _refresh(self) -> None:
        while True:
            self.refresh_evaluation()
            time.sleep(self.evaluation_max_age_s)

    def refresh_evaluation(self) -> None:
        """Read the last evaluation from MLflow (kept as it was when MLflow does not answer)."""
        try:
            raw = self.ledger.model_tag(EVALUATION_TAG)
            self._evaluation = (time.monotonic(), json.loads(raw) if raw else {})
        except (StateUnavailable, ValueError):
            pass  # the last one read

    def load(self) -> RolloutRecord | None:
        evaluation = self._evaluation_now()
        record = _rollout(self.ledger.head(ROLLOUT))
        if record is None:
            return None
        return replace(record, evaluation=evaluation) if evaluation.get("rollout_id") == record.rollout_id \
            else record

    def update(self, change: Change) -> RolloutRecord | None:
        written: list[RolloutRecord] = []

        def apply(entry: Entry | None) -> tuple[dict[str, Any], str] | None:
            current = _rollout(entry)
            if current is not None:
                current = replace(current, evaluation=self._evaluation[1]
                                  if self._evaluation[1].get("rollout_id") == current.rollout_id else {})
            new = change(current)
            if new is None:
                return None
            written.append(new)
            if current is not None and replace(new, evaluation={}, updated_at=0) == replace(
                    current, evaluation={}, updated_at=0):
                return None  # only the evaluation changed: a tag, not a version
            document = encode_rollout(new, with_evaluation=False)
            last = new.history[-1] if new.history else {}
            return document, (f"rollout {new.rollout_id}: {last.get('decision', 'change')} by {last.get('by', '?')}, "
                              f"state {new.state}, step {new.step + 1}, candidate {new.spec.candidate} at "
                              f"{new.weight:.0%}")

        entry = self.ledger.append(ROLLOUT, apply)
        if not written:
            return self.load()
        new = written[0]
        if new.evaluation:
            evaluation = {**new.evaluation, "rollout_id": new.rollout_id}
            self.ledger.set_model_tag(EVALUATION_TAG, json.dumps(evaluation, separators=(",", ":")))
            self._evaluation = (time.monotonic(), evaluation)
        return replace(_rollout(entry) or new, evaluation=new.evaluation)

    def put_counts(self, rollout_id: str, worker: str, counts: RolloutCounts) -> None:
        """Nothing to store: a replica's counts are on its /metrics."""

    def counts(self, rollout_id: str) -> tuple[RolloutCounts, int]:
        raise NotImplementedError("with the shared state in MLflow the rollout's counts come from Prometheus "
                                  "(python -m gateway.rollout)")


def _rollout(entry: Entry | None) -> RolloutRecord | None:
    return None if entry is None else replace(decode_rollout(entry.document), evaluation={})
