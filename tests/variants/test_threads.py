"""[model] threads: a model call's OpenMP pool is capped in the thread that makes the call."""

from __future__ import annotations

import threading

from threadpoolctl import ThreadpoolController

from gateway.variants.threads import limit_this_thread


def _openmp_threads() -> int:
    pools = [p for p in ThreadpoolController().info() if p["user_api"] == "openmp"]
    assert pools, "scikit-learn's OpenMP runtime is loaded"
    return max(int(p["num_threads"]) for p in pools)


def test_a_batcher_thread_calls_models_with_the_configured_threads() -> None:
    import os

    import sklearn.ensemble  # noqa: F401  # loads scikit-learn's OpenMP runtime

    seen: dict[str, int] = {}

    def worker(name: str, threads: int) -> None:
        limit_this_thread(threads)
        seen[name] = _openmp_threads()

    for name, threads in (("capped", 1), ("untouched", 0)):
        t = threading.Thread(target=worker, args=(name, threads))
        t.start()
        t.join()
    assert seen["capped"] == 1
    assert seen["untouched"] == (int(os.environ["OMP_NUM_THREADS"]) if "OMP_NUM_THREADS" in os.environ
                                 else len(os.sched_getaffinity(0)))
