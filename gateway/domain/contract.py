"""The MLflow contract: every experiment, tag, param and metric name the gateway writes and the
report reads. The exporter and the report (``experiments/report/``) both import these names from here.

Per-prediction runs keep the seed's schema exactly: params are the model's input columns, metrics
``prediction_class`` and ``inference_time_ms``, tags ``prediction`` and ``model_version``.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

# Experiments: the served one is [mlflow] experiment; the routing changes and the report's summary
# runs go to [mlflow] routing_changes_experiment and comparison_experiment (gateway/config/settings.py).
# A routing change queued by a release before those settings existed names no experiment: it lands here.
LEGACY_ROUTING_CHANGES_EXPERIMENT = "iris-ab-routing-changes"

# The Prometheus families each replica exports for a running rollout (gateway/serving/metrics.py) and
# the standalone controller sums across replicas (gateway/rollout/prometheus.py): this prefix + _<key>.
ROLLOUT_OBSERVED = "gateway_rollout_observed"

# Model metadata (MLmodel ``metadata``) the gateway reads besides ``class_names``: the true label of
# each row of the logged input example (models/train.py writes it; experiments.traffic --feedback sends it)
EXAMPLE_LABELS = "input_example_labels"

# Tags of a prediction run
TAG_PREDICTION = "prediction"
TAG_MODEL_VERSION = "model_version"
TAG_REQUEST_ID = "request_id"
TAG_ROW_INDEX = "row_index"
TAG_ROLE = "role"
TAG_ROUTING = "routing"
TAG_CONFIG_HASH = "config_hash"
TAG_WEIGHTS = "weights"
TAG_WEIGHTS_VERSION = "weights_version"  # the routing version whose weights routed the request
TAG_GRANULARITY = "granularity"
TAG_MODEL_KIND = "model_kind"
TAG_TRUE_LABEL = "true_label"
TAG_LABEL_TRUST = "label_trust"  # who vouched for the label: "token" (a label pipeline) or "receipt" (its client)
TAG_USER = "user"  # the sticky user key's pseudonym, when the request had a key
TAG_HEADER_PREFIX = "header."  # + a [routing] log_headers name: that request header's value
TAG_WINDOW_ID = "window_id"
TAG_MODEL_URI = "model_uri"  # the variant's models:/ URI as configured
TAG_MODEL = "model"  # what it resolved to: registry name/version and run ("IrisClassifier/2 run 3f2a...")
TAG_FEEDBACK_BATCH = "feedback_batch_id"

GRANULARITY_PREDICTION = "prediction"
GRANULARITY_WINDOW = "window"
GRANULARITY_FEEDBACK = "feedback-window"

# Metrics of a prediction run
METRIC_PREDICTION_CLASS = "prediction_class"  # classifiers
METRIC_PREDICTION_VALUE = "prediction_value"  # regressors
METRIC_INFERENCE_TIME = "inference_time_ms"  # the model call's time (a batched call's, for all its rows)
METRIC_BATCH_ROWS = "batch_rows"  # rows in that model call
METRIC_ASSIGNMENT_PROBABILITY = "assignment_probability"  # the chosen variant's weight when it was drawn
METRIC_REQUEST_TIME = "request_time_ms"  # the request in the gateway: queueing, validation and the call
METRIC_CORRECT = "correct"  # feedback: 1 or 0 (classifiers)
METRIC_ABS_ERROR = "abs_error"  # feedback: |true - predicted| (regressors)
METRIC_REWARD = "reward"  # feedback: the numeric reward sent with the label (a bandit's reward = "feedback")
METRIC_TRUE_VALUE = "true_value"

# Artifacts of window runs. The record table is Parquet; runs exported before it was are JSON lines.
# Tag TAG_RECORDS_ARTIFACT names the one a run has (absent: the JSON-lines one).
RECORDS_ARTIFACT = "predictions.parquet"
RECORDS_ARTIFACT_JSONL = "predictions.jsonl"
TAG_RECORDS_ARTIFACT = "records_artifact"
# A window run whose rows are in an inference table ([table] enabled) has no artifact but this tag: the
# table's URI; its rows are those whose window_id is the run's window_id tag (gateway/delta/).
TAG_RECORDS_TABLE = "records_table"
# In a window's Parquet table, one column per input is named this prefix and the input's name; tables
# of windows whose rows differ in their inputs (and those exported before) have one JSON text column
# "features" instead.
RECORDS_FEATURE_PREFIX = "features."
FEEDBACK_ARTIFACT = "feedback.jsonl"

def is_http_uri(uri: str) -> bool:
    """A tracking server spoken to over HTTP(S), not a local store (``sqlite:///``, a path)."""
    return urlparse(uri).scheme in ("http", "https")


def utc_iso(seconds: float) -> str:
    """A Unix time as the ISO 8601 UTC text used in window tags and the API, e.g. 2026-11-27T12:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


MAX_KEY_LENGTH = 250  # MLflow's limit on param and metric keys
_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def param_name(column: str) -> str:
    """The MLflow param key for an input column: the column's own name whenever MLflow accepts it.

    MLflow keys may hold letters, digits, ``_ - . : /`` and spaces, must not read as another path
    (no ``//``, ``..`` parts, leading ``..``, leading or trailing ``/``) and are at most 250 characters. Anything else
    becomes ``_``; docs/prediction-log.md lists the rule.
    """
    key = _KEY_CHARS.sub("_", column)
    key = re.sub(r"/{2,}", "/", key).strip("/")
    parts = ["_" if p in (".", "..") else p for p in key.split("/")]
    key = "/".join(parts)[:MAX_KEY_LENGTH] or "_"
    if key.startswith(".."):  # MLflow refuses any key that starts like a parent path ("..0")
        key = "_" + key.lstrip(".")
    return key if posixpath.normpath(key) == key else key.replace("/", "_")


def param_names(columns: Iterable[str]) -> dict[str, str]:
    """Column -> param key for every column, distinct even where two columns clean up the same."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for column in columns:
        key = param_name(column)
        n = 2
        while key in taken:
            suffix = f"_{n}"
            key = param_name(column)[: MAX_KEY_LENGTH - len(suffix)] + suffix
            n += 1
        taken.add(key)
        out[column] = key
    return out


def param_value(value: Any) -> str:
    """A feature value as the seed logged it: repr of a float ("5.1"), else its text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return str(value)[:6000]
