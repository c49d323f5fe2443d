"""Synthetic predictions and labels written straight into an inference table, vectorised (numpy and
pyarrow, not through the spool: the exporter is tested elsewhere), for the report's benchmark and
tests. Two versions answer sticky users (each user always one version, by the user's number), over
``days`` UTC days; ``labelled`` of the rows get a label in the feedback table. v2.0 is a little more
accurate and a little slower, so that the report has something to find.

    python -m experiments.bench.table_rows --uri DIR --rows 10000000 [--users 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.delta.spec import FEEDBACK, PREDICTIONS

CLASSES = np.array(["Setosa", "Versicolor", "Virginica"])
VERSIONS = ("v1.0", "v2.0")
WEIGHTS = "v1.0=0.5,v2.0=0.5"
CONFIG_HASH = "5e1ec7ab1e00"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Shape:
    rows: int
    users: int = 1_000_000
    labelled: float = 0.1
    days: int = 14
    start_ms: int = 1_796_083_200_000  # 2026-12-01T00:00Z
    accuracy: tuple[float, float] = (0.90, 0.91)
    latency_ms: tuple[float, float] = (2.0, 2.1)  # each version's mean model call
    shadow: bool = False  # v1.0 answers every request (weighted, no users) and v2.0 scores each in shadow
    bandit: bool = False  # weighted, no users; v2.0's weight moves each day (0.5, 0.7, 0.85, ...), logged with
    # each request's assignment probability, as a bandit's reweighing does


def _strings(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


def chunk(shape: Shape, first: int, n: int, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """Rows ``first`` .. ``first + n`` of the synthetic log: (predictions, labels)."""
    index = np.arange(first, first + n, dtype=np.int64)
    user = rng.integers(0, shape.users, n)
    arm = np.zeros(n, dtype=np.int64) if shape.shadow else (user % 2).astype(np.int64)  # sticky: one version a user
    truth = rng.integers(0, 3, n)
    ts = shape.start_ms + (index * (shape.days * DAY_MS // max(shape.rows, 1))).astype(np.int64)
    weights, propensity = np.full(n, "v1.0=1.0" if shape.shadow else WEIGHTS), np.full(n, 1.0 if shape.shadow else 0.5)
    if shape.bandit:
        p_b = np.array([0.5, 0.7, 0.85, 0.9])[np.minimum((ts - shape.start_ms) // DAY_MS, 3)]
        arm = (rng.random(n) < p_b).astype(np.int64)
        weights = np.char.add(np.char.add("v1.0=", np.round(1 - p_b, 2).astype(str)),
                              np.char.add(",v2.0=", np.round(p_b, 2).astype(str)))
        propensity = np.where(arm == 1, p_b, 1 - p_b)
    no_users = shape.shadow or shape.bandit
    petal_length = np.round(np.array([1.5, 4.3, 5.6])[truth] + rng.normal(0, 0.4, n), 1)  # an input, by class
    days = pc.strftime(pc.cast(pa.array(ts), pa.timestamp("ms", tz="UTC")), format="%Y-%m-%d")
    request_id = _strings("r", index)
    versions = pa.array(np.array(VERSIONS)[arm])

    def answers(arm: np.ndarray, role: str) -> tuple[pa.Table, np.ndarray]:
        right = rng.random(n) < np.array(shape.accuracy)[arm]
        predicted = np.where(right, truth, (truth + rng.integers(1, 3, n)) % 3)
        latency = np.round(rng.gamma(4.0, np.array(shape.latency_ms)[arm] / 4.0), 3)
        return pa.table({
            "request_id": request_id, "row_index": pa.array(np.zeros(n, dtype=np.int64)),
            "role": pa.array(np.full(n, role)), "model_version": pa.array(np.array(VERSIONS)[arm]),
            "prediction": pa.array(CLASSES[predicted]), "class_index": pa.array(predicted.astype(np.int64)),
            "inference_time_ms": pa.array(latency), "request_time_ms": pa.array(np.round(latency + 0.4, 3)),
            "batch_rows": pa.array(np.ones(n, dtype=np.int64)), "ts_ms": pa.array(ts),
            "routing": pa.array(np.full(n, "weighted" if no_users else "sticky")),
            "config_hash": pa.array(np.full(n, CONFIG_HASH)),
            "weights": pa.array(weights),
            "kind": pa.array(np.full(n, "classifier")),
            "user": pa.nulls(n, pa.string()) if no_users else _strings("u", user),
            "assignment_probability": pa.array(propensity),
            "weights_version": pa.array(np.ones(n, dtype=np.int64)),
            "features.petal_length": pa.array(petal_length),
            "window_id": pa.array(np.full(n, f"syn-{first}")), "day": days,
        }), right

    predictions, right = answers(arm, "primary")
    if shape.shadow:
        predictions = pa.concat_tables([predictions, answers(np.ones(n, dtype=np.int64), "shadow")[0]])
    chosen = rng.random(n) < shape.labelled
    labels = pa.table({
        "request_id": request_id.filter(pa.array(chosen)), "row_index": pa.array(np.zeros(chosen.sum(), np.int64)),
        "model_version": versions.filter(pa.array(chosen)),
        "true_label": pc.binary_join_element_wise('"', pa.array(CLASSES[truth[chosen]]), '"', ""),
        "correct": pa.array(right[chosen]), "abs_error": pa.nulls(int(chosen.sum()), pa.float64()),
        "reward": pa.nulls(int(chosen.sum()), pa.float64()), "trust": pa.array(np.full(chosen.sum(), "token")),
        "ts_ms": pa.array(ts[chosen] + 60_000), "window_id": pa.array(np.full(chosen.sum(), f"syn-{first}")),
        "day": days.filter(pa.array(chosen)),
    })
    return predictions, labels


def write(uri: str, shape: Shape, *, seed: int = 7, chunk_rows: int = 5_000_000, progress: bool = True,
          storage_options: dict[str, str] | None = None, first: int = 0) -> float:
    """Append synthetic rows ``first`` .. ``shape.rows`` (and their labels) to ``<uri>/predictions``
    and ``<uri>/feedback``; returns the seconds taken."""
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed + first)
    started = time.perf_counter()
    done = first
    while done < shape.rows:
        n = min(chunk_rows, shape.rows - done)
        predictions, labels = chunk(shape, done, n, rng)
        for name, table in ((PREDICTIONS, predictions), (FEEDBACK, labels)):
            write_deltalake(f"{uri}/{name}", table, mode="append", partition_by=["day"],
                            storage_options=storage_options)
        done += n
        if progress:
            rate = (done - first) / (time.perf_counter() - started)
            print(f"  {done:,} of {shape.rows:,} rows written ({rate:,.0f}/s)", file=sys.stderr)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.table_rows", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", required=True, help="the table root ([table] uri)")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--labelled", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    seconds = write(args.uri, Shape(args.rows, args.users, args.labelled), seed=args.seed)
    print(f"{args.rows:,} rows in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
