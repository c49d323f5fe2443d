"""The MLflow calls the exporter makes, through MLflow's own client with its retries off."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any

from gateway.mlflow.client import get_or_create_experiment, tracking_client

# The MLflow client would retry each failed POST 7 times over about 4 minutes, blocking a worker
# and possibly creating duplicate runs. The exporter has its own retry policy instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
# Without this, every set_terminated makes a fourth call (get_run) just to print two lines of URL.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

SERIES_CHUNK = 1000  # MLflow's log_batch limit is 1,000 metrics per call


class RunWriter:
    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.client = tracking_client(tracking_uri)
        self.experiment_name = experiment
        self._experiment_id: str | None = None
        self._lock = threading.Lock()

    def experiment_id(self) -> str:
        with self._lock:
            if self._experiment_id is None:
                self._experiment_id = get_or_create_experiment(self.client, self.experiment_name)
        return self._experiment_id

    def find_run(self, tags: dict[str, str]) -> str | None:
        clause = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id()], filter_string=clause, max_results=5)
        if not runs:
            return None
        # Should two exist (never by this exporter), keep the oldest one deterministically.
        return str(sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))[0].info.run_id)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def create_run(self, start_time_ms: int, tags: dict[str, str], run_name: str) -> str:
        run = self.client.create_run(self.experiment_id(), start_time=start_time_ms, tags=tags, run_name=run_name)
        return str(run.info.run_id)

    def log_batch(self, run_id: str, metrics: list[Any] | tuple[Any, ...] = (),
                  params: list[Any] | tuple[Any, ...] = (), tags: list[Any] | tuple[Any, ...] = ()) -> None:
        self.client.log_batch(run_id, metrics=list(metrics), params=list(params), tags=list(tags), synchronous=True)

    def finish(self, run_id: str, end_time_ms: int) -> None:
        self.client.set_terminated(run_id, status="FINISHED", end_time=end_time_ms)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_bytes(self, run_id: str, data: bytes, path: str) -> None:
        """An artifact named ``path`` (a file name at the run's artifact root) holding ``data``."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / path
            local.write_bytes(data)
            self.client.log_artifact(run_id, str(local))

    def log_table_input(self, run_id: str, name: str, uri: str, version: int, window_id: str,
                        model_id: str | None = None) -> None:
        """The run's rows as a dataset input: the Delta table they are in, at a version holding them,
        and the window that selects them (MLflow's run page lists it under Datasets); and the version's
        LoggedModel as the run's model input, when it has one."""
        from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

        source = json.dumps({"path": uri, "delta_table_version": version, "window_id": window_id}, sort_keys=True)
        digest = hashlib.sha256(source.encode()).hexdigest()[:8]
        dataset = Dataset(name=name, digest=digest, source_type="delta_table", source=source)
        self.client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "production")])],
                               models=[LoggedModelInput(model_id)] if model_id else None)
