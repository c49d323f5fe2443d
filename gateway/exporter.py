"""Ships spooled predictions to the MLflow tracking server, in the background, exactly once.

Per-prediction mode makes one run per record with three calls: ``create_run`` (start time and all
tags), one ``log_batch`` (params and metrics), ``update_run`` (finished). Window mode makes one run
per (model_version, role, window) with summary metrics, per-record metric series and a JSON-lines
table of every record.

Exactly once: a record's lease counts attempts. A record claimed again after an attempt that did
reach MLflow (a timeout, a crash, a SIGKILL) is first looked up by its ``request_id`` and ``role``
tags (``window_id`` for windows); an existing run is finished instead of created again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.features import CLASS_NAMES, FEATURE_NAMES
from gateway.spool import PredictionSpool, SpoolRow, record_dict

log = logging.getLogger("gateway.exporter")

# The MLflow client would retry each failed POST 7 times over about 4 minutes, blocking a worker
# and possibly creating duplicate runs. This exporter has its own retry policy instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
# Without this, every set_terminated makes a fourth call (get_run) just to print two lines of URL.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

SERIES_CHUNK = 1000  # MLflow's log_batch limit is 1,000 metrics per call


@dataclass
class ExportCounters:
    exported: int = 0
    runs_created: int = 0
    failed_attempts: int = 0
    duplicates_avoided: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {k: getattr(self, k) for k in ("exported", "runs_created", "failed_attempts",
                                                  "duplicates_avoided", "last_error", "last_error_at",
                                                  "last_success_at")}


class MlflowUnavailable(Exception):
    pass


class RunWriter:
    """The MLflow calls the exporter makes, through MLflow's own client with retries off."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_name = experiment
        self._experiment_id: str | None = None
        self._lock = threading.Lock()

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            with self._lock:
                if self._experiment_id is None:
                    exp = self.client.get_experiment_by_name(self.experiment_name)
                    if exp is None:
                        from mlflow.exceptions import MlflowException

                        try:
                            self._experiment_id = self.client.create_experiment(self.experiment_name)
                        except MlflowException:  # another process created it first
                            exp = self.client.get_experiment_by_name(self.experiment_name)
                            assert exp is not None
                            self._experiment_id = exp.experiment_id
                    else:
                        self._experiment_id = exp.experiment_id
        return self._experiment_id

    def find_run(self, tags: dict[str, str]) -> str | None:
        clause = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id()], filter_string=clause, max_results=5)
        if not runs:
            return None
        # Should two exist (never by this exporter), keep the oldest one deterministically.
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))[0].info.run_id

    def create_run(self, start_time_ms: int, tags: dict[str, str], run_name: str) -> str:
        run = self.client.create_run(self.experiment_id(), start_time=start_time_ms, tags=tags, run_name=run_name)
        return str(run.info.run_id)

    def log_batch(self, run_id: str, metrics: list[Any], params: list[Any] = (),  # type: ignore[assignment]
                  tags: list[Any] = ()) -> None:  # type: ignore[assignment]
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=True)

    def finish(self, run_id: str, end_time_ms: int) -> None:
        self.client.set_terminated(run_id, status="FINISHED", end_time=end_time_ms)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)


def prediction_tags(row: SpoolRow) -> dict[str, str]:
    rec = row.record
    return {
        "prediction": rec.class_name,
        "model_version": rec.model_version,
        "request_id": rec.request_id,
        "role": rec.role,
        "routing": rec.routing,
        "config_hash": rec.config_hash,
        "weights": rec.weights,
        "granularity": "prediction",
    }


def prediction_payload(row: SpoolRow) -> tuple[list[Any], list[Any]]:
    from mlflow.entities import Metric, Param

    rec = row.record
    params = [Param(name, repr(float(value))) for name, value in zip(FEATURE_NAMES, rec.features(), strict=True)]
    metrics = [
        Metric("prediction_class", float(rec.class_index), rec.ts_ms, 0),
        Metric("inference_time_ms", float(rec.inference_time_ms), rec.ts_ms, 0),
    ]
    return params, metrics


def window_summary(rows: list[SpoolRow]) -> dict[str, float]:
    latencies = np.array([r.record.inference_time_ms for r in rows], dtype=float)
    classes = Counter(r.record.class_name for r in rows)
    out = {
        "count": float(len(rows)),
        "inference_time_ms_mean": float(latencies.mean()),
        "inference_time_ms_p50": float(np.percentile(latencies, 50)),
        "inference_time_ms_p95": float(np.percentile(latencies, 95)),
        "inference_time_ms_p99": float(np.percentile(latencies, 99)),
    }
    for name in CLASS_NAMES:
        out[f"class_count_{name}"] = float(classes.get(name, 0))
    return out


class MlflowExporter:
    """Background threads that drain a PredictionSpool into MLflow."""

    def __init__(self, spool: PredictionSpool, tracking_uri: str, experiment: str, *, granularity: str = "prediction",
                 workers: int = 8, batch_size: int = 16, window_seconds: float = 10.0,
                 window_max_records: int = 5000, lease_seconds: float = 60.0, max_backoff: float = 30.0,
                 retention_seconds: float = 24 * 3600.0, writer: RunWriter | None = None,
                 busy_rps: float = 0.0, max_deferral_seconds: float = 60.0) -> None:
        self.spool = spool
        self.granularity = granularity
        self.workers = workers if granularity == "prediction" else 1
        self.batch_size = batch_size
        self.window_seconds = window_seconds
        self.window_max_records = window_max_records
        self.lease_seconds = lease_seconds
        self.max_backoff = max_backoff
        self.retention_seconds = retention_seconds
        self.writer = writer or RunWriter(tracking_uri, experiment)
        self.busy_rps = busy_rps
        self.max_deferral_seconds = max_deferral_seconds
        self._rate_sample: tuple[float, int] | None = None
        self._busy = False
        self.counters = ExportCounters()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._backoff_until = 0.0
        self._failures_in_row = 0
        self._state_lock = threading.Lock()
        self._draining = False  # export everything now: close open windows, no deferring to traffic

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, report_every: float = 30.0) -> None:
        target = self._prediction_loop if self.granularity == "prediction" else self._window_loop
        for i in range(self.workers):
            t = threading.Thread(target=target, name=f"mlflow-export-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if report_every > 0:
            t = threading.Thread(target=self._report_loop, args=(report_every,), name="export-report", daemon=True)
            t.start()
            self._threads.append(t)

    def _report_loop(self, every: float) -> None:
        """A log line whenever something moved: backlog, lag, and the running totals."""
        last: tuple[int, int, int] | None = None
        while not self._stop.wait(every):
            s = self.spool.stats()
            c = self.counters.snapshot()
            now = (int(s["backlog"] or 0), c["exported"], c["failed_attempts"])
            if now != last and (now[0] or last is None or now[1] != last[1]):
                log.info("export: backlog %d, lag %.1fs, exported %d, failed attempts %d, duplicates avoided %d",
                         s["backlog"], s["export_lag_seconds"], c["exported"], c["failed_attempts"],
                         c["duplicates_avoided"])
            last = now

    def drain_now(self) -> None:
        """From now on, close windows early and never defer to traffic (drain and shutdown)."""
        self._draining = True

    def stop(self, grace_seconds: float) -> int:
        """Drain for up to ``grace_seconds`` while MLflow answers, then stop. Return the backlog left."""
        deadline = time.monotonic() + grace_seconds
        self.drain_now()
        while time.monotonic() < deadline and self.spool.count_open() > 0:
            if self._backoff_until > time.time() + (deadline - time.monotonic()):
                break  # MLflow is down and will not be retried within the grace time
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=self.lease_seconds)
        left = self.spool.count_open()
        if left:
            log.warning("export stopped with %d prediction record(s) left in the spool for the next start", left)
        return left

    # -- failure handling --------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        self._wake.wait(timeout=seconds)
        self._wake.clear()

    def _backing_off(self) -> float:
        return max(0.0, self._backoff_until - time.time())

    def _on_failure(self, exc: BaseException) -> None:
        with self._state_lock:
            self._failures_in_row += 1
            delay = min(self.max_backoff, 0.5 * 2 ** min(self._failures_in_row - 1, 10))
            self._backoff_until = time.time() + delay * (0.5 + random.random() / 2)
            first = self.counters.last_error is None or self._failures_in_row == 1
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        with self.counters.lock:
            self.counters.failed_attempts += 1
            self.counters.last_error = message
            self.counters.last_error_at = time.time()
        if first or self._failures_in_row % 20 == 0:
            log.warning("MLflow export failed (%d in a row, backlog %d); retrying in %.1fs: %s",
                        self._failures_in_row, self.spool.count_open(), delay, message)

    def _on_success(self) -> None:
        with self._state_lock:
            if self._failures_in_row:
                log.info("MLflow export recovered after %d failed attempt(s)", self._failures_in_row)
            self._failures_in_row = 0
            self._backoff_until = 0.0
        self.counters.last_success_at = time.time()

    # -- deferring to traffic ----------------------------------------------------------------

    def deferring(self) -> bool:
        """True while predictions arrive faster than ``busy_rps`` and none has waited longer than
        ``max_deferral_seconds``. A run costs the tracking server about 15 ms of CPU, the gateway's
        request well under 1 ms: on a shared machine, exporting during a burst would slow serving,
        while waiting costs nothing but lag (the records are already durable)."""
        if not self.busy_rps or self._stop.is_set() or self._draining:
            return False
        now = time.monotonic()
        with self._state_lock:
            if self._rate_sample is None or now - self._rate_sample[0] >= 0.5:
                high = self.spool.high_water()
                if self._rate_sample is not None:
                    rate = (high - self._rate_sample[1]) / (now - self._rate_sample[0])
                    busy = rate >= self.busy_rps
                    if busy != self._busy:
                        log.info("inbound %.0f predictions/s: export %s", rate,
                                 "deferred while busy" if busy else "resumed")
                    self._busy = busy
                self._rate_sample = (now, high)
            if not self._busy:
                return False
        oldest = self.spool.oldest_open_ts_ms()
        return oldest is not None and time.time() - oldest / 1000 < self.max_deferral_seconds

    # -- per-prediction mode -----------------------------------------------------------------

    def _prediction_loop(self) -> None:
        last_prune = time.monotonic()
        while not self._stop.is_set():
            pause = self._backing_off()
            if pause:
                self._wait(pause)
                continue
            if self.deferring():
                self._wait(0.5)
                continue
            rows = self.spool.claim(self.batch_size, self.lease_seconds)
            if not rows:
                if self.export_feedback():
                    continue
                if time.monotonic() - last_prune > 60:
                    self.spool.prune(self.retention_seconds)
                    last_prune = time.monotonic()
                self._wait(0.2)
                continue
            self.export_claimed(rows)

    def export_claimed(self, rows: list[SpoolRow]) -> int:
        """Export leased rows in order; on the first failure give the rest back. Return how many went."""
        for i, row in enumerate(rows):
            if (self._stop.is_set() and self._backing_off()) or self.deferring():
                self.spool.release([r.id for r in rows[i:]], untouched=True)
                return i
            try:
                self.export_one(row)
            except Exception as exc:
                self.spool.release([row.id], untouched=False)
                self.spool.release([r.id for r in rows[i + 1:]], untouched=True)
                self._on_failure(exc)
                return i
            self._on_success()
        return len(rows)

    def export_feedback(self, limit: int = 16) -> int:
        """Join true labels to their prediction runs: metric ``correct`` (1/0) and tag ``true_label``.
        A label whose prediction is not in MLflow yet waits for it. Re-logging is idempotent."""
        from mlflow.entities import Metric, RunTag

        joined = 0
        for fid, request_id, label, correct, run_id in self.spool.claim_feedback(limit, self.lease_seconds):
            try:
                if run_id is None:
                    if self.spool.find(request_id, "primary") is not None:
                        self.spool.finish_feedback(fid, None)  # the prediction itself is not exported yet
                        continue
                    # Pruned from the spool after export: find its run by tag.
                    run_id = self.writer.find_run({"request_id": request_id, "role": "primary"})
                    if run_id is None:
                        self.spool.finish_feedback(fid, None)
                        continue
                now = int(time.time() * 1000)
                self.writer.log_batch(run_id, [Metric("correct", 1.0 if correct else 0.0, now, 0)],
                                      tags=[RunTag("true_label", label)])
                self.spool.finish_feedback(fid, run_id)
                joined += 1
            except Exception as exc:
                self.spool.finish_feedback(fid, None)
                self._on_failure(exc)
                break
        return joined

    def export_one(self, row: SpoolRow) -> str:
        rec = row.record
        run_id = row.run_id
        if run_id is None and row.attempts > 1:
            run_id = self.writer.find_run({"request_id": rec.request_id, "role": rec.role})
            if run_id is not None:
                self.counters.add(duplicates_avoided=1)
                self.spool.bump_counter("duplicates_avoided")
        if run_id is None:
            run_id = self.writer.create_run(
                rec.ts_ms, prediction_tags(row), f"prediction_{rec.ts_ms // 1000}_{rec.model_version}_{rec.role}"
            )
            self.spool.set_run_id([row.id], run_id)
            self.counters.add(runs_created=1)
        params, metrics = prediction_payload(row)
        # Re-logging identical params and metrics (same timestamp and step) on a resumed run is harmless.
        self.writer.log_batch(run_id, metrics, params)
        self.writer.finish(run_id, rec.ts_ms + max(1, math.ceil(rec.inference_time_ms)))
        self.spool.mark_done([row.id], run_id)
        self.spool.bump_counter("exported")
        self.counters.add(exported=1)
        return run_id

    # -- window mode -------------------------------------------------------------------------

    def _window_loop(self) -> None:
        while not self._stop.is_set():
            pause = self._backing_off()
            if pause:
                self._wait(pause)
                continue
            # Drain or shutdown: close every open window now rather than wait for its end.
            now = time.time() + (self.window_seconds + 1 if self._draining else 0)
            claimed = self.spool.claim_window(self.window_seconds, self.window_max_records,
                                              lease_seconds=max(self.lease_seconds, 120.0), now=now)
            if claimed is None:
                self._wait(min(1.0, self.window_seconds / 4))
                continue
            batch_id, rows = claimed
            if not rows:
                continue
            try:
                self.export_window(batch_id, rows)
            except Exception as exc:
                self.spool.release_batch(batch_id, untouched=False)
                self._on_failure(exc)
                continue
            self._on_success()

    def export_window(self, batch_id: str, rows: list[SpoolRow]) -> str:
        from mlflow.entities import Metric, Param

        first = rows[0].record
        start_ms = min(r.record.ts_ms for r in rows)
        end_ms = max(r.record.ts_ms for r in rows)
        run_id = rows[0].run_id
        if run_id is None and max(r.attempts for r in rows) > 1:
            run_id = self.writer.find_run({"window_id": batch_id})
            if run_id is not None:
                self.counters.add(duplicates_avoided=1)
                self.spool.bump_counter("duplicates_avoided")
        if run_id is None:
            tags = {
                "granularity": "window", "window_id": batch_id, "model_version": first.model_version,
                "role": first.role, "config_hash": ",".join(sorted({r.record.config_hash for r in rows})),
                "routing": ",".join(sorted({r.record.routing for r in rows})),
                "weights": ";".join(sorted({r.record.weights for r in rows})),
                "window_start_ms": str(start_ms), "window_end_ms": str(end_ms),
                "window_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ms / 1000)),
                "window_end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end_ms / 1000)),
            }
            name = f"window_{first.model_version}_{first.role}_{start_ms // 1000}"
            run_id = self.writer.create_run(start_ms, tags, name)
            self.spool.set_run_id([r.id for r in rows], run_id)
            self.counters.add(runs_created=1)
        summary = [Metric(k, v, end_ms, 0) for k, v in window_summary(rows).items()]
        params = [Param("window_seconds", repr(self.window_seconds)),
                  Param("window_max_records", str(self.window_max_records))]
        self.writer.log_batch(run_id, summary, params)
        series: list[Any] = []
        for step, r in enumerate(rows):
            series.append(Metric("inference_time_ms", float(r.record.inference_time_ms), r.record.ts_ms, step))
            series.append(Metric("prediction_class", float(r.record.class_index), r.record.ts_ms, step))
        for i in range(0, len(series), SERIES_CHUNK):
            self.writer.log_batch(run_id, series[i:i + SERIES_CHUNK])
        table = "\n".join(json.dumps(record_dict(r.record), separators=(",", ":")) for r in rows) + "\n"
        self.writer.log_text(run_id, table, "predictions.jsonl")
        self.writer.finish(run_id, end_ms + 1)
        self.spool.mark_done([r.id for r in rows], run_id)
        self.spool.bump_counter("exported", len(rows))
        self.counters.add(exported=len(rows))
        return run_id
