"""Accuracy for the replicas' rollout controller, from the ground truth in MLflow.

With replicas behind a load balancer a label may reach any replica (gateway/serving/feedback.py), so no
replica's own counts know every arm's accuracy; MLflow does, once the exporters have shipped the
labels. Per-prediction mode: the labelled prediction runs (metric ``correct``). Window mode: the
window runs' record tables joined to the feedback-window runs' label tables, read once per run (runs
are not changed after export) and judged at the join (gateway/mlflow/readback.py, ``join_labels``).
Only primary predictions made since the rollout started, routed at random (weighted or sticky),
count, as for the replicas' own counts, and each unit (the sticky user, else the request) gives each
version one label, its earliest prediction's, as a single gateway counts them (gateway/spool/label_table.py):
one client's thousand-row request weighs as one unit. Read at most every ``refresh_s``; when MLflow
cannot be read the last result stands.
"""

from __future__ import annotations

import logging
import time

import pandas as pd

from gateway.domain import contract
from gateway.domain.messages import first_line
from gateway.domain.records import RANDOMISED, Role, randomisation_unit
from gateway.rollout.counts import ArmCounts, RolloutCounts

log = logging.getLogger("gateway.rollout")



class MlflowAccuracy:
    def __init__(self, tracking_uri: str, experiment: str, refresh_s: float = 10.0,
                 window_s: float = 10.0) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.refresh_s = refresh_s
        # A window run starts at its first record and spans at most window_s: the runs holding records
        # made since the rollout started begin at most this long before it.
        self.window_margin_ms = int((window_s + 5.0) * 1000)
        self._since_ms: int | None = None
        self._read_at = 0.0
        self._result: dict[str, ArmCounts] | None = None
        self._seen: set[str] = set()
        self._records: list[pd.DataFrame] = []
        self._labels: list[pd.DataFrame] = []
        self.last_error: str | None = None

    def __call__(self, since_ms: int) -> dict[str, ArmCounts] | None:
        """{variant: its labelled and correct counts (overall and per unit bucket)} since ``since_ms``, or
        None before the first successful read."""
        if since_ms != self._since_ms:  # another rollout: start over
            self._since_ms, self._result, self._read_at = since_ms, None, 0.0
            self._seen, self._records, self._labels = set(), [], []
        if time.monotonic() - self._read_at < self.refresh_s:
            return self._result
        self._read_at = time.monotonic()
        try:
            self._result = self._read(since_ms)
            self.last_error = None
        except Exception as exc:
            problem = first_line(exc, 300)
            if problem != self.last_error:
                log.warning("accuracy not read from MLflow (%s); the last reading stands", problem)
            self.last_error = problem
        return self._result

    def _read(self, since_ms: int) -> dict[str, ArmCounts]:
        from gateway.mlflow.readback import experiment_ids, join_labels, search_all, window_labels, window_records

        ids = experiment_ids(self.tracking_uri, self.experiment)
        if not ids:
            return {}
        totals: dict[str, ArmCounts] = {}
        counted: set[tuple[str, str]] = set()  # (version, unit): its one label is in

        labelled = search_all(ids, f"tags.{contract.TAG_GRANULARITY} = '{contract.GRANULARITY_PREDICTION}' and "
                                   f"metrics.{contract.METRIC_CORRECT} >= 0 "
                                   f"and tags.{contract.TAG_ROLE} = '{Role.PRIMARY}' "
                                   f"and attributes.start_time >= {since_ms}")
        if not labelled.empty:
            request = labelled.get(f"tags.{contract.TAG_REQUEST_ID}", pd.Series(None, index=labelled.index))
            count_labels(labelled.assign(request=request.fillna(labelled["run_id"])), totals, counted,
                         variant=f"tags.{contract.TAG_MODEL_VERSION}", routing=f"tags.{contract.TAG_ROUTING}",
                         correct=f"metrics.{contract.METRIC_CORRECT}", user=f"tags.{contract.TAG_USER}",
                         request="request",
                         time="start_time")

        windows = search_all(ids, f"tags.{contract.TAG_GRANULARITY} = '{contract.GRANULARITY_WINDOW}' and "
                                  f"attributes.start_time >= {since_ms - self.window_margin_ms}")
        feedback = search_all(ids, f"tags.{contract.TAG_GRANULARITY} = '{contract.GRANULARITY_FEEDBACK}' and "
                                   f"attributes.start_time >= {since_ms}")
        new_windows = _unseen(windows, self._seen)
        new_feedback = _unseen(feedback, self._seen)
        if not new_windows.empty:
            records = window_records(new_windows, self.tracking_uri)
            self._records.append(records[(records["role"] == Role.PRIMARY) & (records["ts_ms"] >= since_ms)])
        if not new_feedback.empty:
            self._labels.append(window_labels(new_feedback, self.tracking_uri))
        self._seen.update(new_windows.get("run_id", []), new_feedback.get("run_id", []))
        if self._records and self._labels:
            joined = join_labels(pd.concat(self._records, ignore_index=True),
                                 pd.concat(self._labels, ignore_index=True))
            count_labels(joined, totals, counted, variant="model_version", routing="routing", correct="correct",
                         user="user", request="request_id", time="ts_ms")
        return totals


def count_labels(frame: pd.DataFrame, totals: dict[str, ArmCounts], counted: set[tuple[str, str]], *, variant: str,
                 routing: str, correct: str, user: str, request: str, time: str) -> None:
    """Add ``frame``'s judged labels of randomised predictions to ``totals``: each unit's first one per
    version (by ``time``), those in ``counted`` already skipped (and the new ones added to it)."""
    frame = frame[frame[routing].isin(RANDOMISED) & frame[correct].notna()]
    frame = frame.sort_values(time, kind="stable") if time in frame.columns else frame
    users = frame[user] if user in frame.columns else pd.Series(None, index=frame.index)
    for version, how, who, request_id, right in zip(frame[variant], frame[routing], users, frame[request],
                                                    frame[correct], strict=True):
        unit = randomisation_unit(str(how), who if isinstance(who, str) else None, str(request_id))
        if (str(version), unit) in counted:
            continue
        counted.add((str(version), unit))
        arm = totals.setdefault(str(version), ArmCounts())
        arm.count("labelled", unit)
        arm.count("correct", unit, int(float(right)))


def _unseen(runs: pd.DataFrame, seen: set[str]) -> pd.DataFrame:
    if runs.empty:
        return runs
    done = runs[runs["status"] == "FINISHED"] if "status" in runs.columns else runs
    return done[~done["run_id"].isin(seen)]


def apply_accuracy(counts: RolloutCounts, accuracy: dict[str, ArmCounts], variants: tuple[str, ...]) -> None:
    """Replace the arms' labelled/correct (the replicas' own /feedback counts) with MLflow's."""
    for variant in variants:
        counts.arm(variant).take_labels(accuracy.get(variant, ArmCounts()))
