"""How many threads one model call may use.

Tree ensembles (scikit-learn's HistGradientBoosting, LightGBM, XGBoost) and BLAS run each call on a
thread pool as wide as the machine. The gateway already runs calls side by side (a batcher per
variant, shadows, the exporter), so those pools fight each other and the gateway's own threads:
measured here (issue 34), HistGradientBoosting's p50 inside the gateway was 25.7 ms (p99 1,405 ms)
against 1.53 ms alone with one thread. ``[model] threads`` (default 1) caps each call: through the
environment for the OpenMP runtimes, which read it when a model library first loads them, and, for
runtimes already loaded, in each batcher thread itself (OpenMP's thread count is per calling thread)
and globally for BLAS. An OMP_NUM_THREADS set by the operator wins. 0 leaves the libraries' defaults.
"""

from __future__ import annotations

import os

from threadpoolctl import ThreadpoolController

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_model_threads(threads: int) -> str:
    """Before the models load: cap the thread pools of model calls; the line the start-up log says."""
    if threads == 0:
        return "model calls use the libraries' own thread pools ([model] threads = 0: every core)"
    for name in THREAD_ENV:
        os.environ.setdefault(name, str(threads))
    ThreadpoolController().limit(limits=threads, user_api="blas")  # numpy's BLAS is loaded already
    return (f"model calls use at most {os.environ['OMP_NUM_THREADS']} thread(s) each ([model] threads = {threads}; "
            "an OMP_NUM_THREADS of your own wins)")


def limit_this_thread(threads: int) -> None:
    """In a thread that calls models (a batcher's), for OpenMP runtimes loaded before the environment
    was set (its thread count belongs to the calling thread)."""
    if threads > 0:
        ThreadpoolController().limit(limits=threads, user_api="openmp")

