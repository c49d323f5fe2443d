"""Prometheus metrics for operations: per-variant traffic, latency, classes, shadow agreement, and
the prediction log's state. Names follow Prometheus conventions (base units, ``_total`` counters)."""

from __future__ import annotations

import os
from collections import Counter as Counter_
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from gateway.domain.contract import ROLLOUT_OBSERVED as OBSERVED
from gateway.domain.records import PredictionRecord, Role, predictions_of
from gateway.rollout.counts import RolloutCounts
from gateway.variants.output import ModelKind

# Predict latency is sub-millisecond to a few ms: buckets from 50 us to 100 ms.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class GatewayMetrics:
    """Owns one registry per app, so several apps in one process (tests) never collide."""

    def __init__(self, state: Callable[[], dict[str, Any]], variants: Callable[[], Iterable[dict[str, Any]]],
                 rollout: Callable[[], dict[str, Any] | None] | None = None,
                 shared_state: Callable[[], dict[str, Any]] | None = None,
                 rollout_counts: Callable[[], tuple[str, RolloutCounts] | None] | None = None,
                 bandit: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests", "Prediction requests by variant, role, routing reason and HTTP status.",
            ["variant", "role", "reason", "status"], registry=self.registry)
        self.latency = Histogram(
            "gateway_predict_latency_seconds", "The model's own predict time.", ["variant", "role"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.classes = Counter(
            "gateway_predictions", "Predictions by variant, role and predicted class.",
            ["variant", "role", "prediction"], registry=self.registry)
        self.shadow = Counter(
            "gateway_shadow_comparisons", "Shadow scorings by candidate and whether it agreed with the primary.",
            ["candidate", "agree"], registry=self.registry)
        self._state = _StateCollector(state, variants)
        self.registry.register(self._state)
        self._scrape_time: list[Collector] = [self._state]
        if rollout is not None:
            self._scrape_time.append(RolloutCollector(rollout))
        if shared_state is not None:
            self._scrape_time.append(SharedStateCollector(shared_state))
        if rollout_counts is not None:
            self._scrape_time.append(RolloutCountsCollector(rollout_counts))
        if bandit is not None:
            self._scrape_time.append(BanditCollector(bandit))
        for collector in self._scrape_time[1:]:
            self.registry.register(collector)

    def on_records(self, records: Sequence[PredictionRecord], primaries: Sequence[object] | None = None) -> None:
        """One request's rows (a shadow's with the primary's answers). The latency is the model call's,
        observed once per request; classes are counted for classifiers only (a regressor's values would
        make one series per value)."""
        first = records[0]
        version, role = first.model_version, first.role
        self.latency.labels(version, role).observe(first.inference_time_ms / 1000.0)
        if first.kind != ModelKind.CLASSIFIER:
            if role == "shadow":
                self.requests.labels(version, "shadow", first.routing, "200").inc()
            return
        predictions = predictions_of(records)
        for label, n in Counter_(predictions).items():  # one model's labels are of one type
            self.classes.labels(version, role, str(label)).inc(n)
        if role == "shadow":
            self.requests.labels(version, "shadow", first.routing, "200").inc()
            if primaries is not None:
                agree = sum(p == mine for p, mine in zip(primaries, predictions, strict=True))
                if agree:
                    self.shadow.labels(version, "true").inc(agree)
                if len(records) - agree:
                    self.shadow.labels(version, "false").inc(len(records) - agree)

    def on_response(self, variant: str | None, reason: str | None, status: int) -> None:
        self.requests.labels(variant or "none", Role.PRIMARY, reason or "none", str(status)).inc()

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several workers: the counters live in files shared by all of them; add them up.
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            for collector in self._scrape_time:
                registry.register(collector)
            return generate_latest(registry)
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Read at scrape time: spool backlog and lag, export totals, and one info series per variant."""

    def __init__(self, state: Callable[[], dict[str, Any]], variants: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._state = state
        self._variants = variants

    def collect(self) -> Iterable[Any]:
        stats = self._state()
        spool = stats.get("spool") or {}
        exporter = stats.get("exporter") or {}
        yield GaugeMetricFamily("gateway_spool_backlog", "Predictions in the spool not yet in MLflow.",
                                value=float(spool.get("backlog", 0) or 0))
        yield GaugeMetricFamily("gateway_export_lag_seconds", "Age of the oldest prediction not yet in MLflow.",
                                value=float(spool.get("export_lag_seconds", 0) or 0))
        yield CounterMetricFamily("gateway_exported", "Prediction records exported to MLflow (all exporters).",
                                  value=float(spool.get("total_exported", 0) or 0))
        yield CounterMetricFamily("gateway_export_failed", "Failed export attempts (all exporters, kept in the "
                                  "spool across exporter restarts).",
                                  value=float(spool.get("total_failed_attempts", 0) or 0))
        yield GaugeMetricFamily("gateway_export_workers", "Live export worker threads.",
                                value=float(exporter.get("workers", 0) or 0))
        yield GaugeMetricFamily("gateway_export_stalled", "1 when predictions wait with no export progress while "
                                "MLflow answers its health check: alert on it.",
                                value=1.0 if exporter.get("stalled") else 0.0)
        yield GaugeMetricFamily("gateway_export_falling_behind", "1 when predictions have come in faster than they "
                                "reach MLflow for 3 minutes (the backlog grows): see the gateway's log.",
                                value=1.0 if exporter.get("falling_behind") else 0.0)
        yield GaugeMetricFamily("gateway_export_last_success_timestamp_seconds",
                                "When the exporter last reached MLflow successfully (Unix time).",
                                value=float(exporter.get("last_success_at") or 0))
        yield CounterMetricFamily("gateway_export_duplicates_avoided",
                                  "Runs found already in MLflow after an uncertain attempt.",
                                  value=float(spool.get("total_duplicates_avoided", 0) or 0))
        queued = GaugeMetricFamily("gateway_queue_rows", "Rows waiting for each variant's model.", labels=["variant"])
        saturated = GaugeMetricFamily("gateway_queue_saturated", "1 while a variant's queue is at [batching] "
                                      "max_queue_rows (requests refused with 503).", labels=["variant"])
        for name, b in (stats.get("batching") or {}).items():
            queued.add_metric([name], float(b.get("queued_rows", 0)))
            saturated.add_metric([name], 1.0 if b.get("saturated") else 0.0)
        yield queued
        yield saturated
        info = InfoMetricFamily("gateway_variant", "Each variant's model URI and registry version.",
                                labels=["variant"])
        for v in self._variants():
            info.add_metric([v["name"]], {"model_uri": str(v.get("model_uri")),
                                          "registry_version": str(v.get("registry_version") or ""),
                                          "weight": f"{v.get('weight', 0):g}"})
        yield info


class RolloutCollector(Collector):
    """The rollout, read from the shared state at scrape time (so every worker answers the same)."""

    def __init__(self, rollout: Callable[[], dict[str, Any] | None]) -> None:
        self._rollout = rollout

    def collect(self) -> Iterable[Any]:
        r = self._rollout()
        if r is None:
            return
        ids = [r["rollout_id"], r["candidate"], r["control"]]
        labels = ["rollout_id", "candidate", "control"]
        state = GaugeMetricFamily("gateway_rollout_state", "1 for the rollout's current state.",
                                  labels=[*labels, "state"])
        for name in ("running", "paused", "promoted", "rolled_back", "aborted"):
            state.add_metric([*ids, name], 1.0 if r["state"] == name else 0.0)
        yield state
        step = GaugeMetricFamily("gateway_rollout_step", "The rollout's step (1-based).", labels=labels)
        step.add_metric(ids, float(r["step"]))
        yield step
        weight = GaugeMetricFamily("gateway_rollout_candidate_weight", "The candidate's weight in force.",
                                   labels=labels)
        weight.add_metric(ids, float(r["candidate_weight"]))
        yield weight
        decisions = CounterMetricFamily("gateway_rollout_decisions", "The rollout's decisions by kind.",
                                        labels=[*labels, "decision"])
        for kind, n in Counter_(h["decision"] for h in r["history"]).items():
            decisions.add_metric([*ids, kind], float(n))
        yield decisions
        p = GaugeMetricFamily("gateway_rollout_guardrail_p_value", "Each guardrail's always-valid p-value.",
                              labels=[*labels, "guardrail"])
        est = GaugeMetricFamily("gateway_rollout_guardrail_estimate", "Each guardrail's estimate (a difference, or "
                                "a ratio for latency_p95).", labels=[*labels, "guardrail"])
        breached = GaugeMetricFamily("gateway_rollout_guardrail_breached", "1 when the guardrail is breached.",
                                     labels=[*labels, "guardrail"])
        for name, g in (r.get("guardrails") or {}).items():
            if not g.get("enabled"):
                continue
            p.add_metric([*ids, name], float(g["p_value"]))
            if g.get("estimate") is not None:
                est.add_metric([*ids, name], float(g["estimate"]))
            breached.add_metric([*ids, name], 1.0 if g.get("breached") else 0.0)
        yield p
        yield est
        yield breached


class SharedStateCollector(Collector):
    """Whether this replica could read the shared routing state, and which version it serves."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterable[Any]:
        s = self._status()
        if s.get("backend") is None:
            return
        labels = ["backend"]
        reachable = GaugeMetricFamily("gateway_shared_state_reachable", "1 when the last read of the shared "
                                      "routing state succeeded; 0: this replica keeps the state it last read.",
                                      labels=labels)
        reachable.add_metric([s["backend"]], 1.0 if s.get("reachable") else 0.0)
        yield reachable
        age = s.get("last_read_age_seconds")
        if age is not None:
            g = GaugeMetricFamily("gateway_shared_state_read_age_seconds", "Seconds since the shared routing "
                                  "state was last read successfully.", labels=labels)
            g.add_metric([s["backend"]], float(age))
            yield g
        version = GaugeMetricFamily("gateway_routing_state_version", "The shared routing state's version this "
                                    "replica serves.", labels=labels)
        version.add_metric([s["backend"]], float(s.get("version") or 0))
        yield version
        refused = GaugeMetricFamily("gateway_shared_state_not_installed", "1 when a newer shared routing names "
                                    "variants this replica does not serve (it keeps its routing).", labels=labels)
        refused.add_metric([s["backend"]], 1.0 if s.get("not_installed") else 0.0)
        yield refused


# The rollout's live counts, per replica: python -m gateway.rollout sums them over replicas with PromQL.


class RolloutCountsCollector(Collector):
    """The counts a rollout's guardrails read (gateway/rollout/observations.py), as counters."""

    def __init__(self, counts: Callable[[], tuple[str, RolloutCounts] | None]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Any]:
        current = self._counts()
        if current is None:
            return
        rollout_id, counts = current
        per_arm = {key: CounterMetricFamily(f"{OBSERVED}_{key}", f"Rollout arm {key}, randomised requests only.",
                                            labels=["rollout_id", "variant"])
                   for key in ("requests", "errors", "labelled", "correct")}
        latency = CounterMetricFamily(f"{OBSERVED}_latency", "Rollout arm request times in 2%-wide log bins "
                                      "(see gateway.stats.sequential.histogram_bin).",
                                      labels=["rollout_id", "variant", "bin"])
        buckets = CounterMetricFamily(f"{OBSERVED}_bucket", "Rollout arm counts per randomisation-unit bucket "
                                      "(cell = bucket/count; see gateway.rollout.counts.BUCKETS).",
                                      labels=["rollout_id", "variant", "cell"])
        for variant, arm in counts.arms.items():
            for key, family in per_arm.items():
                family.add_metric([rollout_id, variant], float(getattr(arm, key)))
            for b, n in arm.latency_ms.items():
                latency.add_metric([rollout_id, variant, str(b)], float(n))
            for cell, n in arm.buckets.items():
                buckets.add_metric([rollout_id, variant, cell], float(n))
        yield from per_arm.values()
        yield latency
        yield buckets
        split = CounterMetricFamily(f"{OBSERVED}_split", "Rollout requests by the weights they were routed under.",
                                    labels=["rollout_id", "weights", "variant"])
        for weights, by_variant in counts.steps.items():
            for variant, n in by_variant.items():
                split.add_metric([rollout_id, weights, variant], float(n))
        yield split
        users = CounterMetricFamily(f"{OBSERVED}_users", "Rollout sticky users at their first request, by the "
                                    "weights they were routed under.", labels=["rollout_id", "weights", "variant"])
        for weights, by_variant in counts.user_steps.items():
            for variant, n in by_variant.items():
                users.add_metric([rollout_id, weights, variant], float(n))
        yield users
        for key in ("pairs", "disagree"):
            family = CounterMetricFamily(f"{OBSERVED}_shadow_{key}", f"Shadow-scored rows ({key}) of the control's "
                                         "requests by the candidate.", labels=["rollout_id"])
            family.add_metric([rollout_id], float(getattr(counts.shadow, key)))
            yield family


class BanditCollector(Collector):
    """Bandit mode: each arm's weight in force, posterior mean and labels counted (GET /bandit's figures)."""

    def __init__(self, describe: Callable[[], dict[str, Any]]) -> None:
        self._describe = describe

    def collect(self) -> Iterable[Any]:
        arms = self._describe()["arms"]
        weight = GaugeMetricFamily("gateway_bandit_weight", "Each variant's bandit weight in force.",
                                   labels=["variant"])
        mean = GaugeMetricFamily("gateway_bandit_posterior_mean", "Each variant's posterior mean reward.",
                                 labels=["variant"])
        labelled = GaugeMetricFamily("gateway_bandit_labelled", "Rewards counted per variant.", labels=["variant"])
        for name, arm in arms.items():
            weight.add_metric([name], float(arm["weight"]))
            if arm.get("posterior_mean") is not None:
                mean.add_metric([name], float(arm["posterior_mean"]))
            labelled.add_metric([name], float(arm["labelled"]))
        yield from (weight, mean, labelled)
