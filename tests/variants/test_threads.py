"""[model] threads: a model call's OpenMP pool is capped in the thread that makes the call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stack.processes import ROOT

# In a fresh process (the OpenMP runtime reads its environment once): threads that call models, one
# capped as a batcher thread caps itself, one left alone.
_PROBE = """
import json, threading
import sklearn.ensemble  # loads scikit-learn's OpenMP runtime
from threadpoolctl import ThreadpoolController
from gateway.variants.threads import limit_this_thread

seen = {}
def worker(name, threads):
    limit_this_thread(threads)
    seen[name] = max(p["num_threads"] for p in ThreadpoolController().info() if p["user_api"] == "openmp")
for name, threads in (("capped", 1), ("untouched", 0)):
    t = threading.Thread(target=worker, args=(name, threads)); t.start(); t.join()
print(json.dumps(seen))
"""


def test_a_batcher_thread_calls_models_with_the_configured_threads() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"capped": 1, "untouched": len(os.sched_getaffinity(0))}
