"""Write N synthetic window-mode predictions to MLflow through the gateway's own spool and window
exporter (no HTTP), to measure the report at scale reproducibly.

    python -m experiments.bench.synthetic_windows --tracking-uri URI --experiment NAME -n 1000000

Two versions of a four-column, three-class classifier at 50/50, with different class mixes and
latencies. Every record goes through
``PredictionSpool.append_groups`` and ``WindowRuns.export_window``, as the gateway's would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gateway.domain.records import PredictionRecord
from gateway.export.strategies import ExportCounters, WindowRuns
from gateway.mlflow.runs import RunWriter
from gateway.spool.store import PredictionSpool

CLASSES = ("class_a", "class_b", "class_c")
COLUMNS = ("x1", "x2", "x3", "x4")
VERSIONS = {"v1.0": ((0.34, 0.33, 0.33), 0.45), "v2.0": ((0.30, 0.33, 0.37), 0.55)}  # class mix, median ms
WEIGHTS = "v1.0=0.5,v2.0=0.5"
CHUNK = 20_000


def records(start: int, n: int, rng: np.random.Generator, t0_ms: int) -> list[PredictionRecord]:
    version = np.where(rng.random(n) < 0.5, "v1.0", "v2.0")
    out = []
    latency = rng.lognormal(0.0, 0.35, n)
    features = rng.uniform(0.1, 8.0, (n, 4)).round(1)
    for i in range(n):
        v = str(version[i])
        mix, median = VERSIONS[v]
        k = int(rng.choice(3, p=mix))
        out.append(PredictionRecord(
            request_id=f"syn-{start + i}", role="primary", model_version=v,
            features=dict(zip(COLUMNS, features[i].tolist(), strict=True)),
            prediction=CLASSES[k], class_index=k, inference_time_ms=float(latency[i] * median),
            ts_ms=t0_ms + (start + i) // 10, routing="weighted", config_hash="synthetic", weights=WEIGHTS,
            request_time_ms=float(latency[i] * median * 1.2)))
    return out


def generate(tracking_uri: str, experiment: str, n: int, *, window_records: int = 5000, workers: int = 4,
             seed: int = 0, progress: bool = True) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    t0_ms = int(time.time() * 1000) - n // 10 - 60_000
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spool = PredictionSpool(Path(tmp))
        for start in range(0, n, CHUNK):
            batch = records(start, min(CHUNK, n - start), rng, t0_ms)
            spool.append_groups([[r] for r in batch])
        appended = time.perf_counter()
        strategy = WindowRuns(spool, RunWriter(tracking_uri, experiment), ExportCounters(),
                              window_seconds=3600, window_max_records=window_records, series_max_records=0)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, unit="prediction", desc="exporting windows", file=sys.stderr)

        def export_all() -> None:
            while True:
                claimed = strategy.claim(draining=True)
                if claimed is None:
                    return
                strategy.export(claimed, lambda: False)
                if bar is not None:
                    bar.update(len(claimed[1]))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for f in [pool.submit(export_all) for _ in range(workers)]:
                f.result()
        if bar is not None:
            bar.close()
        left = spool.count_open()
    done = time.perf_counter()
    return {"predictions": n, "left_unexported": left, "spool_seconds": round(appended - started, 1),
            "export_seconds": round(done - appended, 1), "runs": -(-n // window_records)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.synthetic_windows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="synthetic-windows")
    parser.add_argument("-n", type=int, default=1_000_000)
    parser.add_argument("--window-records", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = generate(args.tracking_uri, args.experiment, args.n, window_records=args.window_records, seed=args.seed)
    print(result)
    return 0 if result["left_unexported"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
