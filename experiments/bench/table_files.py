"""python -m experiments.bench.table_files: 10-second windows into a Delta inference table (100-row
windows, each under its own app transaction version, compacted hourly as python -m gateway.delta
would be), the time per append at the start and at the end, the files left, and what a last
compaction and vacuum make of them. Prints one JSON line."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from gateway.delta.appender import DeltaAppender
from gateway.delta.maintenance import maintain

T0 = 1_765_065_600_000  # 2025-12-07 00:00 UTC


def window(i: int, rows: int, interval_ms: int) -> pa.Table:
    ts = T0 + i * interval_ms
    rng = np.random.default_rng(i)
    return pa.table({"request_id": [f"r{i}-{j}" for j in range(rows)], "row_index": np.arange(rows),
                     "model_version": ["v1.0" if i % 2 else "v2.0"] * rows, "ts_ms": np.full(rows, ts),
                     "prediction": rng.choice(["Setosa", "Versicolor", "Virginica"], rows),
                     "inference_time_ms": rng.gamma(2.0, 0.5, rows), "window_id": [f"w{i}"] * rows,
                     **{f"features.f{k}": rng.normal(size=rows) for k in range(4)}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.table_files",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2160, help="appends (default: 6 hours of 10 s windows)")
    parser.add_argument("--rows", type=int, default=100, help="rows per window")
    parser.add_argument("--compact-every", type=int, default=360, metavar="N",
                        help="compact (without vacuum) after every N windows, as an hourly maintenance would "
                             "(default %(default)s: 10 s windows; 0: never)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"{tmp}/predictions"
        appender = DeltaAppender(uri)
        start = time.perf_counter()
        per_append: list[float] = []
        for i in tqdm(range(args.windows), unit="window", file=sys.stderr, disable=not sys.stderr.isatty()):
            rows = window(i, args.rows, 10_000)
            began = time.perf_counter()
            appender.append_once(rows, "bench", i + 1)
            per_append.append(time.perf_counter() - began)
            if args.compact_every and (i + 1) % args.compact_every == 0 and i + 1 < args.windows:
                maintain(uri)
        appended_s = time.perf_counter() - start
        tenth = max(1, args.windows // 10)
        start = time.perf_counter()
        done = maintain(uri, vacuum_hours=0)
        maintained_s = time.perf_counter() - start
        assert done is not None
        print(json.dumps({"windows": args.windows, "rows_per_window": args.rows,
                          "append_ms_mean": round(appended_s / args.windows * 1000, 2),
                          "append_ms_first_tenth": round(float(np.mean(per_append[:tenth])) * 1000, 2),
                          "append_ms_last_tenth": round(float(np.mean(per_append[-tenth:])) * 1000, 2),
                          "files_before": done.files_before, "files_after": done.files_after,
                          "compacted": done.compacted, "vacuumed": done.vacuumed,
                          "maintenance_seconds": round(maintained_s, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
