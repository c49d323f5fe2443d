"""One strategy per granularity: how spooled records become MLflow runs.

``PredictionRuns``: one run per record with three calls: ``create_run`` (start time and all tags),
one ``log_batch`` (params and metrics), ``update_run`` (finished). ``WindowRuns``: one run per
(model_version, role, window) with summary metrics, per-record metric series and a JSON-lines
table of every record.

Exactly once: a record's lease counts attempts. A record claimed again after an attempt that may
have reached MLflow (a timeout, a crash, a SIGKILL) is first looked up by its tags (``request_id``,
``role``, ``row_index``; ``window_id`` for windows); an existing run is finished, not created again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.delta.spec import PREDICTIONS
from gateway.domain import contract
from gateway.domain.records import PredictionRecord
from gateway.mlflow.runs import SERIES_CHUNK, RunWriter
from gateway.spool.rows import SpoolRow, Window
from gateway.spool.store import PredictionSpool
from gateway.variants.output import ModelKind

if TYPE_CHECKING:
    from gateway.export.inference_table import WindowTable


@dataclass
class ExportCounters:
    exported: int = 0
    runs_created: int = 0
    labels_exported: int = 0
    failed_attempts: int = 0
    duplicates_avoided: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {k: getattr(self, k) for k in ("exported", "runs_created", "labels_exported", "failed_attempts",
                                                  "duplicates_avoided", "last_error", "last_error_at",
                                                  "last_success_at")}


class ExportStrategy(Protocol):
    """Claims work from the spool and turns it into runs; raises on an MLflow failure, after giving
    back whatever it did not finish."""

    workers: int
    defers_to_traffic: bool

    def claim(self, draining: bool) -> Any | None: ...

    def export(self, work: Any, interrupted: Callable[[], bool]) -> int: ...


def prediction_tags(rec: PredictionRecord) -> dict[str, str]:
    return {
        contract.TAG_PREDICTION: str(rec.prediction),
        contract.TAG_MODEL_VERSION: rec.model_version,
        contract.TAG_REQUEST_ID: rec.request_id,
        contract.TAG_ROW_INDEX: str(rec.row_index),
        contract.TAG_ROLE: rec.role,
        contract.TAG_ROUTING: rec.routing,
        contract.TAG_CONFIG_HASH: rec.config_hash,
        contract.TAG_WEIGHTS: rec.weights,
        contract.TAG_GRANULARITY: contract.GRANULARITY_PREDICTION,
        **({contract.TAG_WEIGHTS_VERSION: str(rec.weights_version)} if rec.weights_version else {}),
        contract.TAG_MODEL_KIND: rec.kind,
        **({contract.TAG_MODEL_URI: rec.model_uri, contract.TAG_MODEL: rec.model} if rec.model else {}),
        **({contract.TAG_USER: rec.user} if rec.user else {}),
        **({f"{contract.TAG_HEADER_PREFIX}{k}": str(v) for k, v in orjson.loads(rec.headers).items()}
           if rec.headers else {}),
    }


def prediction_payload(rec: PredictionRecord) -> tuple[list[Any], list[Any]]:
    """The seed's params (one per input column) and metrics of one prediction run."""
    from gateway.mlflow.entities import Metric, Param

    keys = contract.param_names(rec.features)
    params = [Param(keys[name], contract.param_value(value)) for name, value in rec.features.items()]
    metrics = [Metric(contract.METRIC_INFERENCE_TIME, float(rec.inference_time_ms), rec.ts_ms, 0),
               Metric(contract.METRIC_BATCH_ROWS, float(rec.batch_rows), rec.ts_ms, 0)]
    if rec.request_time_ms is not None:
        metrics.append(Metric(contract.METRIC_REQUEST_TIME, float(rec.request_time_ms), rec.ts_ms, 0))
    if rec.assignment_probability is not None:
        metrics.append(Metric(contract.METRIC_ASSIGNMENT_PROBABILITY, float(rec.assignment_probability), rec.ts_ms, 0))
    if rec.kind == ModelKind.REGRESSOR:
        metrics.insert(0, Metric(contract.METRIC_PREDICTION_VALUE, float(rec.prediction), rec.ts_ms, 0))  # type: ignore[arg-type]
    elif rec.class_index is not None:
        metrics.insert(0, Metric(contract.METRIC_PREDICTION_CLASS, float(rec.class_index), rec.ts_ms, 0))
    return params, metrics


def _mark_found(spool: PredictionSpool, counters: ExportCounters) -> None:
    counters.add(duplicates_avoided=1)
    spool.bump_counter("duplicates_avoided")


class PredictionRuns:
    """One run per prediction record and role (the seed's schema)."""

    defers_to_traffic = True

    def __init__(self, spool: PredictionSpool, writer: RunWriter, counters: ExportCounters, *, workers: int = 8,
                 batch_size: int = 16, lease_seconds: float = 60.0) -> None:
        self.spool, self.writer, self.counters = spool, writer, counters
        self.workers, self.batch_size, self.lease_seconds = workers, batch_size, lease_seconds

    def claim(self, draining: bool) -> list[SpoolRow] | None:
        return self.spool.queue.claim(self.batch_size, self.lease_seconds) or None

    def export(self, rows: list[SpoolRow], interrupted: Callable[[], bool]) -> int:
        """Export leased rows in order; on the first failure give the rest back and raise."""
        for i, row in enumerate(rows):
            if interrupted():
                self.spool.queue.release([r.id for r in rows[i:]], untouched=True)
                return i
            try:
                self.export_one(row)
            except Exception:
                self.spool.queue.release([row.id], untouched=False)
                self.spool.queue.release([r.id for r in rows[i + 1:]], untouched=True)
                raise
        return len(rows)

    def export_one(self, row: SpoolRow) -> str:
        rec = row.record
        run_id = row.run_id
        if run_id is None and row.attempts > 1:
            run_id = self.writer.find_run({contract.TAG_REQUEST_ID: rec.request_id, contract.TAG_ROLE: rec.role,
                                           contract.TAG_ROW_INDEX: str(rec.row_index)})
            if run_id is not None:
                _mark_found(self.spool, self.counters)
        if run_id is None:
            suffix = f"_row{rec.row_index}" if rec.row_index else ""
            run_id = self.writer.create_run(rec.ts_ms, prediction_tags(rec),
                                            run_name(rec.model_version, rec.role, "prediction", rec.ts_ms, suffix))
            self.spool.queue.set_run_id([row.id], run_id)
            self.counters.add(runs_created=1)
        params, metrics = prediction_payload(rec)
        # Re-logging identical params and metrics (same timestamp and step) on a resumed run is harmless.
        self.writer.log_batch(run_id, metrics, params)
        self.writer.finish(run_id, rec.ts_ms + max(1, math.ceil(rec.inference_time_ms)))
        self.spool.queue.mark_done([row.id], run_id)
        self.spool.bump_counter("exported")
        self.counters.add(exported=1)
        return run_id


def run_name(version: str, role: str, kind: str, ts_ms: int, suffix: str = "") -> str:
    """A run's name, the version first: MLflow's runs table cuts long names, and the version is what
    tells them apart (``v2.0_primary_prediction_1764676800_row3``)."""
    return f"{version}_{role}_{kind}_{ts_ms // 1000}{suffix}"


class WindowRuns:
    """One run per (model_version, role, window) of ``window_seconds`` or ``window_max_records``."""

    defers_to_traffic = False
    workers = 1

    def __init__(self, spool: PredictionSpool, writer: RunWriter, counters: ExportCounters, *,
                 window_seconds: float = 10.0, window_max_records: int = 200_000, lease_seconds: float = 120.0,
                 series_max_records: int = 1000, table: WindowTable | None = None) -> None:
        """``table``: the window's rows go to the inference table, and its run names them as a dataset
        input, instead of carrying them as a Parquet artifact."""
        self.spool, self.writer, self.counters, self.table = spool, writer, counters, table
        self.window_seconds, self.window_max_records = window_seconds, window_max_records
        self.series_max_records = series_max_records
        self.lease_seconds = max(lease_seconds, 120.0)

    def claim(self, draining: bool) -> tuple[str, Window] | None:
        pending = self.table.pending() if self.table is not None else None
        if pending is not None:  # numbered for the table and not appended yet: it goes before any other
            window = self.spool.queue.reclaim_window(pending, self.lease_seconds)
            if window is None and not self.spool.queue.holds_open(pending):
                self.spool.commits.drop(pending)  # nothing of it is left to append
            return (pending, window) if window is not None else None
        # Drain or shutdown: close every open window now rather than wait for its end.
        now = time.time() + (self.window_seconds + 1 if draining else 0)
        claimed = self.spool.queue.claim_window(self.window_seconds, self.window_max_records,
                                                lease_seconds=self.lease_seconds, now=now)
        return claimed if claimed and claimed[1].entries else None

    def export(self, work: tuple[str, Window], interrupted: Callable[[], bool]) -> int:
        batch_id, window = work
        try:
            self.export_window(batch_id, window)
        except Exception:
            self.spool.queue.release_batch(batch_id, untouched=False)
            raise
        return window.n_rows

    def export_window(self, batch_id: str, window: Window) -> str:
        from gateway.export.table import table_parquet, window_summary, window_table  # pyarrow: exporter only
        from gateway.mlflow.entities import Metric, Param

        entries = window.entries
        shared = [e.columns.shared for e in entries]
        first = shared[0]
        start_ms = min(s.ts_ms for s in shared)
        end_ms = max(s.ts_ms for s in shared)
        run_id = entries[0].run_id
        if run_id is None and max(e.attempts for e in entries) > 1:
            run_id = self.writer.find_run({contract.TAG_WINDOW_ID: batch_id})
            if run_id is not None:
                _mark_found(self.spool, self.counters)
        if run_id is None:
            tags = {
                contract.TAG_GRANULARITY: contract.GRANULARITY_WINDOW, contract.TAG_WINDOW_ID: batch_id,
                contract.TAG_MODEL_VERSION: first.model_version, contract.TAG_ROLE: first.role,
                contract.TAG_MODEL_KIND: first.kind,
                contract.TAG_CONFIG_HASH: ",".join(sorted({s.config_hash for s in shared})),
                contract.TAG_ROUTING: ",".join(sorted({s.routing for s in shared})),
                contract.TAG_WEIGHTS: ";".join(sorted({s.weights for s in shared})),
                **({contract.TAG_RECORDS_ARTIFACT: contract.RECORDS_ARTIFACT} if self.table is None
                   else {contract.TAG_RECORDS_TABLE: self.table.uri}),
                "window_start_ms": str(start_ms), "window_end_ms": str(end_ms),
                "window_start": contract.utc_iso(start_ms / 1000), "window_end": contract.utc_iso(end_ms / 1000),
            }
            run_id = self.writer.create_run(start_ms, tags, run_name(first.model_version, first.role, "window",
                                                                     start_ms))
            self.spool.queue.set_window_run(batch_id, run_id)
            self.counters.add(runs_created=1)
        table = window_table([e.columns for e in entries])
        n = table.num_rows
        model_id = first.model_id or None  # the version's LoggedModel: its page shows these figures
        summary = [Metric(k, v, end_ms, 0, model_id=model_id) for k, v in window_summary(table).items()]
        params = [Param("window_seconds", repr(self.window_seconds)),
                  Param("window_max_records", str(self.window_max_records))]
        self.writer.log_batch(run_id, summary, params)
        series: list[Any] = []
        if n <= self.series_max_records:
            regressor = first.kind == ModelKind.REGRESSOR
            series_columns = table.select(["ts_ms", "inference_time_ms", "prediction", "class_index"]).to_pydict()
            for step, (ts, latency, value, index) in enumerate(zip(*series_columns.values(), strict=True)):
                series.append(Metric(contract.METRIC_INFERENCE_TIME, float(latency), ts, step))
                if regressor:
                    series.append(Metric(contract.METRIC_PREDICTION_VALUE, float(value), ts, step))
                elif index is not None:
                    series.append(Metric(contract.METRIC_PREDICTION_CLASS, float(index), ts, step))
        for i in range(0, len(series), SERIES_CHUNK):
            self.writer.log_batch(run_id, series[i:i + SERIES_CHUNK])
        if self.table is None:
            self.writer.log_bytes(run_id, table_parquet(table), contract.RECORDS_ARTIFACT)
        else:
            version = self.table.append(batch_id, table)
            self.writer.log_table_input(run_id, PREDICTIONS, self.table.uri, version, batch_id, model_id)
        self.writer.finish(run_id, end_ms + 1)
        self.spool.queue.mark_window_done(batch_id, run_id)
        self.spool.bump_counter("exported", n)
        self.counters.add(exported=n)
        return run_id
