"""The rollout's counts through Prometheus: each replica's /metrics (RolloutCountsCollector), summed by
the labels the controller's PromQL keeps, read back (counts_from_series), equal the replicas' counts
added up directly (RolloutCounts.merged) - the same numbers the single-gateway controller would see."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.rollout.counts import BUCKETS, RolloutCounts, bucket_cell
from gateway.rollout.prometheus import PrometheusCounts, PrometheusUnavailable, counts_from_series
from gateway.serving.metrics import OBSERVED, RolloutCountsCollector

n = st.integers(0, 10_000)
arm = st.fixed_dictionaries({"requests": n, "errors": n, "labelled": n, "correct": n,
                             "latency_ms": st.dictionaries(st.integers(0, 900).map(str), st.integers(1, 500),
                                                           max_size=6),
                             "buckets": st.dictionaries(
                                 st.builds(bucket_cell, st.integers(0, BUCKETS - 1),
                                           st.sampled_from(["requests", "errors", "labelled", "correct", "t3"])),
                                 st.integers(1, 500), max_size=8)})
split = st.dictionaries(st.sampled_from(["v1.0", "v2.0"]), n, min_size=1, max_size=2)
counts = st.fixed_dictionaries({
    "arms": st.dictionaries(st.sampled_from(["v1.0", "v2.0"]), arm, max_size=2),
    "steps": st.dictionaries(st.sampled_from(["v1.0=0.9,v2.0=0.1", "v1.0=0.5,v2.0=0.5"]), split, max_size=2),
    "user_steps": st.dictionaries(st.sampled_from(["v1.0=0.9,v2.0=0.1"]), split, max_size=1),
    "shadow": st.fixed_dictionaries({"pairs": n, "disagree": n})})


def scrape(replica: dict[str, Any], instance: str) -> list[tuple[str, dict[str, str], float]]:
    registry = CollectorRegistry()
    registry.register(RolloutCountsCollector(lambda: ("r1", RolloutCounts.from_dict(replica))))
    text = generate_latest(registry).decode()
    return [(s.name, {**s.labels, "instance": instance}, s.value)
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")]


def promql_sum(samples: list[tuple[str, dict[str, str], float]]) -> list[dict[str, Any]]:
    """What `sum by (__name__, variant, bin, weights, cell) (...)` returns, in the HTTP API's shape."""
    keep = ("variant", "bin", "weights", "cell")
    totals: dict[tuple[Any, ...], float] = defaultdict(float)
    for name, labels, value in samples:
        assert name.startswith(OBSERVED) and labels["rollout_id"] == "r1"
        totals[(name, *((k, labels[k]) for k in keep if k in labels))] += value
    return [{"metric": {"__name__": key[0], **dict(key[1:])}, "value": [0, str(v)]} for key, v in totals.items()]


@given(st.lists(counts, min_size=1, max_size=4))
def test_counts_summed_by_prometheus_equal_the_replicas_counts_added(replicas: list[dict[str, Any]]) -> None:
    samples = [s for i, r in enumerate(replicas) for s in scrape(r, f"replica-{i}")]
    assert counts_from_series(promql_sum(samples)) == RolloutCounts.merged(RolloutCounts.from_dict(r) for r in replicas)


def test_an_unreachable_prometheus_is_reported_not_guessed() -> None:
    from stack.processes import free_port

    source = PrometheusCounts(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        source("r1")


def test_the_standalone_controller_refuses_a_local_state(tmp_path: Any) -> None:
    import subprocess
    import sys

    config = tmp_path / "gateway.toml"
    config.write_text('[state]\nbackend = "local"\n')
    done = subprocess.run([sys.executable, "-m", "gateway.rollout", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "state.backend is 'local'" in done.stderr and done.stderr[-1] == "\n" and done.stderr.count("\n") == 1
