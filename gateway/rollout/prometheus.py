"""The rollout's counts summed over every replica, read from Prometheus (as Flagger reads its canary
metrics): each replica publishes its own counts on /metrics (gateway/serving/metrics.py,
``gateway_rollout_observed_*``), Prometheus scrapes them all, and one PromQL query per look sums them
by the labels the guardrails need. The result has the shape of ``observations.merge_counts``, so the
guardrails cannot tell it from the single-gateway counts.

A replica that restarts starts its counters from zero; ``sum`` then drops what it had counted, so a
restart makes the guardrails see fewer samples (slower decisions), never invented ones.
"""

from __future__ import annotations

from typing import Any

import requests

from gateway.domain.contract import ROLLOUT_OBSERVED as OBSERVED
from gateway.rollout.counts import ARM_KEYS, RolloutCounts


class PrometheusUnavailable(Exception):
    """Prometheus could not be queried: the controller waits and looks again."""


class PrometheusCounts:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = requests.Session()

    def query(self, promql: str) -> list[dict[str, Any]]:
        try:
            response = self._http.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout_s)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.url} unreachable: {type(exc).__name__}") from None
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"Prometheus refused {promql!r}: {body.get('error', body)}")
        return list(body["data"]["result"])

    def __call__(self, rollout_id: str) -> tuple[RolloutCounts, int]:
        """Every replica's counts for the rollout, added up, and how many replicas reported."""
        selector = f'{{__name__=~"{OBSERVED}_.+",rollout_id="{rollout_id}"}}'
        rows = self.query(f"sum by (__name__, variant, bin, weights, cell) ({selector})")
        replicas = self.query(f'count({OBSERVED}_shadow_pairs_total{{rollout_id="{rollout_id}"}})')
        return counts_from_series(rows), int(float(replicas[0]["value"][1])) if replicas else 0


def counts_from_series(rows: list[dict[str, Any]]) -> RolloutCounts:
    """PromQL sums (one row per metric name and label set) back into the counts."""
    counts = RolloutCounts()
    for row in rows:
        labels = row["metric"]
        name = labels.get("__name__", "").removeprefix(f"{OBSERVED}_").removesuffix("_total")
        value = round(float(row["value"][1]))
        variant = labels.get("variant")
        if name in ARM_KEYS and variant:
            arm = counts.arm(variant)
            setattr(arm, name, getattr(arm, name) + value)
        elif name == "latency" and variant and labels.get("bin") is not None:
            hist = counts.arm(variant).latency_ms
            hist[labels["bin"]] = hist.get(labels["bin"], 0) + value
        elif name == "bucket" and variant and labels.get("cell") is not None:
            cells = counts.arm(variant).buckets
            cells[labels["cell"]] = cells.get(labels["cell"], 0) + value
        elif name == "split" and variant and labels.get("weights") is not None:
            split = counts.steps.setdefault(labels["weights"], {})
            split[variant] = split.get(variant, 0) + value
        elif name == "users" and variant and labels.get("weights") is not None:
            users = counts.user_steps.setdefault(labels["weights"], {})
            users[variant] = users.get(variant, 0) + value
        elif name == "shadow_pairs":
            counts.shadow.pairs += value
        elif name == "shadow_disagree":
            counts.shadow.disagree += value
    return counts
