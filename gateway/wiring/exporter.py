"""The exporter, built: its strategy and label step for the configured granularity, its policies, and
whether it runs as threads in the gateway or as a niced child process (``[spool] exporter``)."""

from __future__ import annotations

from typing import Any

from gateway.config.settings import Settings
from gateway.export import Exporter
from gateway.export.label_runs import LabelsOnPredictionRuns, LabelWindows
from gateway.export.leading import LOCK_NAME, LeadingExporter
from gateway.export.policy import Backoff, FallingBehind, TrafficDeferral
from gateway.export.process import ProcessExporter
from gateway.export.runner import ThreadExporter
from gateway.export.strategies import ExportCounters, PredictionRuns, WindowRuns
from gateway.mlflow.client import check_tracking_server
from gateway.mlflow.runs import RunWriter
from gateway.spool.store import PredictionSpool


def build_thread_exporter(settings: Settings, spool: PredictionSpool, *, lease_seconds: float = 60.0,
                          writer: Any = None, max_backoff: float | None = None) -> ThreadExporter:
    """Threads in this process, with the strategy and label step of the configured granularity."""
    m = settings.mlflow
    writer = writer or RunWriter(m.tracking_uri, m.experiment)
    counters = ExportCounters()
    if m.granularity == "window":
        table = feedback = None
        if settings.table.enabled:
            from gateway.delta.spec import FEEDBACK
            from gateway.export.inference_table import WindowTable  # deltalake: window tables only

            table, feedback = WindowTable(spool, settings.table), WindowTable(spool, settings.table, FEEDBACK)
        strategy: Any = WindowRuns(spool, writer, counters, window_seconds=m.window_seconds,
                                   window_max_records=m.window_max_records, lease_seconds=lease_seconds,
                                   series_max_records=m.window_series_max_records, table=table)
        labels: Any = LabelWindows(spool, writer, counters, m.window_seconds, m.window_max_records, table=feedback)
    else:
        strategy = PredictionRuns(spool, writer, counters, workers=m.export_workers, lease_seconds=lease_seconds)
        labels = LabelsOnPredictionRuns(spool, writer, counters, lease_seconds=lease_seconds)
    deferral = TrafficDeferral(m.busy_rps, m.max_deferral_seconds, spool.high_water, spool.oldest_open_ts_ms)
    return ThreadExporter(spool, strategy, labels, counters, backoff=Backoff(max_backoff or m.retry_max_seconds),
                          deferral=deferral,
                          retention_seconds=settings.spool.retention_hours * 3600, lease_seconds=lease_seconds,
                          stall_seconds=max(120.0, 2 * m.max_deferral_seconds),
                          mlflow_health=lambda: check_tracking_server(m.tracking_uri),
                          falling_behind=FallingBehind(granularity=m.granularity))


def build_exporter(settings: Settings, spool: PredictionSpool) -> Exporter:
    """The exporter ``[spool] exporter`` asks for (a niced child process, or threads in the gateway),
    started only in the one process that leads the spool's export: under ``--workers N`` the other
    workers stand by, and one takes over when the leader exits."""
    def build() -> Exporter:
        if settings.spool.exporter == "process":
            return ProcessExporter(settings, nice=settings.spool.exporter_nice)
        return build_thread_exporter(settings, spool)

    return LeadingExporter(build, settings.spool.dir / LOCK_NAME)


def spool_exporter(settings: Settings, *, lease_seconds: float = 60.0) -> tuple[PredictionSpool, ThreadExporter]:
    """The spool of ``[spool] dir`` and the threads that export it, for python -m gateway.export."""
    spool = PredictionSpool(settings.spool.dir)
    return spool, build_thread_exporter(settings, spool, lease_seconds=lease_seconds)
