"""A tree ensemble's own time inside the gateway against its time alone ([model] threads, issue 34).

    python -m experiments.bench.tree_threads [--seconds 8] [--connections 8]

scikit-learn's HistGradientBoosting (an OpenMP model, as LightGBM and XGBoost are) trained on iris,
saved locally. Alone: 2,000 one-row predict calls in a fresh process, with the OpenMP runtime's own
thread count and with one thread. Inside the gateway: wrk on /predict with one row at
``--connections``, once with ``[model] threads = 1`` (the default) and once with 0 (the libraries'
own pools); the model's own call times are read from the spool's records (``inference_time_ms``).
The target: the gateway's model p50 with the default at most 2x the model's p50 alone. Part of
``make bench``; writes var/bench/tree_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from experiments.bench.wrk import _lua, run_wrk
from stack.iris import FEATURES, IRIS_MODEL
from stack.processes import ROOT, GatewayProcess, write_config

TARGET_RATIO = 2.0
_ALONE = """
import json, sys, time
import mlflow.sklearn, numpy as np, pandas as pd
model = mlflow.sklearn.load_model(sys.argv[1])
row = pd.DataFrame([json.loads(sys.argv[2])])
for _ in range(50):
    model.predict(row)
times = []
for _ in range(2000):
    t = time.perf_counter(); model.predict(row); times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)),
                  "p99": float(np.percentile(times, 99))}))
"""


def save_model(path: Path) -> str:
    import mlflow.sklearn
    import pandas as pd
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.ensemble import HistGradientBoostingClassifier

    if (path / "MLmodel").exists():
        return str(path)
    x, y = load_iris(return_X_y=True, as_frame=True)
    x.columns = list(FEATURES)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y)
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(x.head(3), model.predict(x.head(3))),
                              input_example=pd.DataFrame(x.head(5)),
                              skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    return str(path)


def alone(model: str, threads: int | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", _ALONE, model, json.dumps(FEATURES)], env=env, check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def in_gateway(model: str, work: Path, threads: int, seconds: int, connections: int) -> dict[str, Any]:
    config = write_config(work / "gateway.toml", "http://127.0.0.1:9", work / "spool", work / "cache",
                          variants=[{"name": "hgb", "model_uri": model, "weight": 1.0}],
                          model={**IRIS_MODEL, "threads": threads}, spool={"export": False})
    script = work / "predict.lua"
    script.write_text(_lua(json.dumps(FEATURES), "application/json"))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with GatewayProcess(config=config, workdir=work, env=env) as gw:  # started by the with
        result = run_wrk(gw.url + "/predict", seconds, connections, script)
    db = sqlite3.connect(work / "spool" / "predictions.sqlite3")
    calls = [(t, n) for t, n in db.execute("SELECT json_extract(shared, '$.inference_time_ms'), "
                                           "json_extract(shared, '$.batch_rows') FROM entry_rows") if t is not None]
    db.close()
    times = [t for t, _ in calls]
    return {"threads": threads, "requests_per_s": result.rps, "request_p50_ms": result.p50_ms,
            "request_p99_ms": result.p99_ms, "model_p50_ms": float(np.percentile(times, 50)),
            "model_p95_ms": float(np.percentile(times, 95)), "model_p99_ms": float(np.percentile(times, 99)),
            "calls": len(times), "rows_per_call_p50": float(np.percentile([n for _, n in calls], 50))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.tree_threads",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-trees-") as tmp:
        work = Path(tmp)
        model = save_model(work / "hgb")
        solo = {"default": alone(model, None), "1 thread": alone(model, 1)}
        inside = {t: in_gateway(model, work / f"gw-{t}", t, args.seconds, args.connections) for t in (1, 0)}
    ratio = inside[1]["model_p50_ms"] / solo["default"]["p50"]
    print(f"HistGradientBoosting, one row, {os.cpu_count()} cores")
    for name, s in solo.items():
        print(f"  alone, {name:<10}  model p50 {s['p50']:7.2f} ms  p95 {s['p95']:7.2f}  p99 {s['p99']:7.2f}")
    for t, g in inside.items():
        print(f"  gateway threads={t}   model p50 {g['model_p50_ms']:7.2f} ms  p95 {g['model_p95_ms']:7.2f}  "
              f"p99 {g['model_p99_ms']:7.2f} ({g['rows_per_call_p50']:.0f} rows a call)   requests "
              f"{g['requests_per_s']:7.1f}/s, p50 {g['request_p50_ms']:.2f} ms, p99 {g['request_p99_ms']:.2f} ms "
              f"(wrk -c{args.connections})")
    met = ratio <= TARGET_RATIO
    print(f"target: gateway model p50 (threads = 1) / alone p50 (default threads) = {ratio:.2f} <= {TARGET_RATIO:g}: "
          f"{'met' if met else 'NO'}")
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tree_threads.json").write_text(json.dumps({"alone": solo, "gateway": inside, "ratio": ratio,
                                                        "target": TARGET_RATIO, "met": met}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
