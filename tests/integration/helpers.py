from __future__ import annotations

import time
from typing import Any

import httpx

from experiments.local_stack import GatewayProcess

FEATURES = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def wait_drained(gw: GatewayProcess, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = httpx.get(gw.url + "/stats", timeout=10).json()
        if stats["spool"]["backlog"] == 0:
            return stats
        time.sleep(0.3)
    raise TimeoutError(f"spool not drained after {timeout}s: {stats}")


def runs_by_request(tracking_uri: str, experiment: str = "iris-flower-prediction") -> dict[tuple[str, str], list[Any]]:
    """Every prediction run in the experiment, keyed by (request_id, role), read page by page."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out: dict[tuple[str, str], list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string="tags.granularity = 'prediction'",
                                  max_results=1000, page_token=token)
        for run in page:
            key = (run.data.tags["request_id"], run.data.tags["role"])
            out.setdefault(key, []).append(run)
        token = page.token
        if not token:
            return out
