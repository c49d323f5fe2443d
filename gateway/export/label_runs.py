"""Ground-truth labels (``POST /feedback``) to MLflow, as a step of its own in either granularity.

Per-prediction mode joins each label to its prediction's run: metric ``correct`` (1/0, classifiers)
or ``abs_error`` and ``true_value`` (regressors), and tag ``true_label``. A label whose prediction is
not in MLflow yet waits for it; re-logging is idempotent. Window mode has no run per prediction, so
labels go into runs of their own (``granularity = feedback-window``) with a ``feedback.jsonl``
table, or with ``[table] enabled`` rows in the feedback inference table that the run names, which
the report joins to the records by request id and row.

A label for a prediction another replica answered (``LabelRow.remote``) is judged here, in per-prediction
mode, from that run's ``prediction`` tag; in window mode the report and the rollout controller judge it
when they join. One whose prediction never reaches MLflow is given up after ``REMOTE_JOIN_WAIT_S``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from gateway.delta.spec import FEEDBACK
from gateway.domain import contract
from gateway.domain.label_rule import absolute_error, is_correct
from gateway.domain.records import Role
from gateway.export.strategies import ExportCounters
from gateway.mlflow.runs import RunWriter
from gateway.spool.label_table import LabelRow
from gateway.spool.store import PredictionSpool

if TYPE_CHECKING:
    from gateway.export.inference_table import WindowTable


class LabelStep(Protocol):
    def run(self, draining: bool) -> int:
        """Export what is due; return how many labels went. Raise on an MLflow failure."""


def label_payload(label: LabelRow) -> tuple[list[Any], list[Any]]:
    from gateway.mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = []
    if label.correct is not None:
        metrics.append(Metric(contract.METRIC_CORRECT, 1.0 if label.correct else 0.0, now, 0))
    if label.abs_error is not None:
        metrics.append(Metric(contract.METRIC_ABS_ERROR, float(label.abs_error), now, 0))
        metrics.append(Metric(contract.METRIC_TRUE_VALUE, float(label.true_label), now, 0))
    if label.reward is not None:
        metrics.append(Metric(contract.METRIC_REWARD, float(label.reward), now, 0))
    tags = [RunTag(contract.TAG_TRUE_LABEL, str(label.true_label))]
    if label.trust is not None:
        tags.append(RunTag(contract.TAG_LABEL_TRUST, label.trust))
    return metrics, tags


log = logging.getLogger("gateway.exporter")

REMOTE_JOIN_WAIT_S = 3600.0  # a remote label waits this long for its prediction's run, then is given up


def judged(label: LabelRow, run_tags: dict[str, str]) -> LabelRow:
    """A remote label with ``correct`` (classifier) or ``abs_error`` (regressor) from its run's tags."""
    prediction = run_tags.get(contract.TAG_PREDICTION)
    if prediction is None:
        return label
    if run_tags.get(contract.TAG_MODEL_KIND) == "regressor":
        try:
            return replace(label, abs_error=absolute_error(prediction, label.true_label))
        except ValueError:
            return label
    return replace(label, correct=is_correct(prediction, label.true_label))


class LabelsOnPredictionRuns:
    def __init__(self, spool: PredictionSpool, writer: RunWriter, counters: ExportCounters, limit: int = 16,
                 lease_seconds: float = 60.0) -> None:
        self.spool, self.writer, self.counters = spool, writer, counters
        self.limit, self.lease_seconds = limit, lease_seconds

    def run(self, draining: bool) -> int:
        _, labels = self.spool.labels.claim(self.limit, self.lease_seconds)
        joined = 0
        for i, label in enumerate(labels):
            try:
                run_id = label.prediction_run_id
                if run_id is None:
                    if self.spool.find(label.request_id, Role.PRIMARY, label.row_index) is not None:
                        self.spool.labels.finish([label.id], None)  # its prediction is not exported yet
                        continue
                    # Pruned from the spool after export: find its run by tag.
                    run_id = self.writer.find_run({contract.TAG_REQUEST_ID: label.request_id,
                                                   contract.TAG_ROLE: Role.PRIMARY,
                                                   contract.TAG_ROW_INDEX: str(label.row_index)})
                    if run_id is None:
                        given_up = label.remote and time.time() - label.ts_ms / 1000 > REMOTE_JOIN_WAIT_S
                        self.spool.labels.finish([label.id], "" if given_up else None)
                        if given_up:
                            self.spool.bump_counter("labels_unjoined")
                            log.warning("label for %s row %d given up: its prediction is not in MLflow after %.0f s",
                                        label.request_id, label.row_index, REMOTE_JOIN_WAIT_S)
                        continue
                if label.remote:
                    label = judged(label, self.writer.run_tags(run_id))
                metrics, tags = label_payload(label)
                self.writer.log_batch(run_id, metrics, tags=tags)
                self.spool.labels.finish([label.id], run_id)
                joined += 1
            except Exception:
                self.spool.labels.finish([lb.id for lb in labels[i:]], None)
                raise
        self.counters.add(labels_exported=joined)
        return joined


class LabelWindows:
    def __init__(self, spool: PredictionSpool, writer: RunWriter, counters: ExportCounters,
                 window_seconds: float = 10.0, max_labels: int = 5000, lease_seconds: float = 120.0,
                 table: WindowTable | None = None) -> None:
        """``table``: the labels go to the feedback inference table, and the run names it as a dataset
        input, instead of carrying them as a JSON-lines artifact."""
        self.spool, self.writer, self.counters, self.table = spool, writer, counters, table
        self.window_seconds, self.max_labels, self.lease_seconds = window_seconds, max_labels, lease_seconds

    def _claim(self, draining: bool) -> tuple[str, list[LabelRow]]:
        pending = self.table.pending() if self.table is not None else None
        if pending is not None:  # numbered for the table and not appended yet: it goes before any other
            batch_id, labels = self.spool.labels.claim(self.max_labels, self.lease_seconds, batch=pending)
            if not labels and not self.spool.labels.holds_open(pending):
                self.spool.commits.drop(pending)
            return batch_id, labels
        oldest = self.spool.labels.oldest_open_ts_ms()
        if oldest is None or (not draining and time.time() - oldest / 1000 < self.window_seconds
                              and self.spool.labels.count_open() < self.max_labels):
            return "", []
        return self.spool.labels.claim(self.max_labels, self.lease_seconds)

    def run(self, draining: bool) -> int:
        batch_id, labels = self._claim(draining)
        if not labels:
            return 0
        first, last = min(lb.ts_ms for lb in labels), max(lb.ts_ms for lb in labels)
        try:
            run_id = self.writer.find_run({contract.TAG_FEEDBACK_BATCH: batch_id}) if max(
                lb.attempts for lb in labels) > 1 else None
            if run_id is None:
                tags = {contract.TAG_GRANULARITY: contract.GRANULARITY_FEEDBACK, contract.TAG_FEEDBACK_BATCH: batch_id,
                        **({contract.TAG_RECORDS_TABLE: self.table.uri} if self.table is not None else {})}
                run_id = self.writer.create_run(first, tags, f"feedback_{first // 1000}")
            from gateway.mlflow.entities import Metric

            known = [lb.correct for lb in labels if lb.correct is not None]
            metrics = [Metric("labelled", float(len(labels)), last, 0)]
            if known:
                metrics.append(Metric(contract.METRIC_CORRECT, float(sum(known)), last, 0))
            self.writer.log_batch(run_id, metrics)
            if self.table is None:
                table = "\n".join(json.dumps({"request_id": lb.request_id, "row_index": lb.row_index,
                                              "model_version": lb.model_version, "true_label": lb.true_label,
                                              "correct": lb.correct, "abs_error": lb.abs_error, "ts_ms": lb.ts_ms,
                                              "reward": lb.reward, "trust": lb.trust},
                                             separators=(",", ":")) for lb in labels) + "\n"
                self.writer.log_text(run_id, table, contract.FEEDBACK_ARTIFACT)
            else:
                from gateway.export.inference_table import labels_table

                version = self.table.append(batch_id, labels_table(labels))
                self.writer.log_table_input(run_id, FEEDBACK, self.table.uri, version, batch_id)
            self.writer.finish(run_id, last + 1)
        except Exception:
            self.spool.labels.release(batch_id)
            raise
        self.spool.labels.finish([lb.id for lb in labels], run_id)
        self.counters.add(labels_exported=len(labels))
        return len(labels)
