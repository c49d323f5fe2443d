"""python -m experiments.clearance: how many samples a rollout's guardrail needs to clear.

A guardrail with ``require = "cleared"`` holds its step until its always-valid interval lies on the
safe side of the threshold. This simulates an equal candidate (the case that should clear) with the
guardrails' own statistics, looking every 100 samples per arm, and prints the median and 90th
percentile of the samples per arm at which the interval cleared, for a few thresholds. Seeded: the
same table on every run. The README's power table is this output.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from gateway.stats import sequential as sq

LOOK_EVERY = 100


def _latency_clears(rng: np.random.Generator, max_ratio: float, limit: int, alpha: float, n_star: int) -> int | None:
    """Samples per arm until the p95 ratio's interval lies below ``max_ratio`` (lognormal latencies)."""
    hist: list[dict[int, int]] = [{}, {}]
    for n in range(LOOK_EVERY, limit + 1, LOOK_EVERY):
        for h in hist:
            for ms in rng.lognormal(math.log(20.0), 0.4, LOOK_EVERY):
                b = sq.histogram_bin(float(ms))
                h[b] = h.get(b, 0) + 1
        est = sq.histogram_quantile_ratio(hist[0], hist[1], null=max_ratio, alpha=alpha, n_star=n_star)
        if math.isfinite(est.high) and est.high < max_ratio:
            return n
    return None


def _accuracy_clears(rng: np.random.Generator, max_drop: float, accuracy: float, limit: int, alpha: float,
                     n_star: int) -> int | None:
    """Labels per arm until the accuracy difference's interval lies above ``-max_drop``."""
    right = [0, 0]
    for n in range(LOOK_EVERY, limit + 1, LOOK_EVERY):
        right = [r + int(rng.binomial(LOOK_EVERY, accuracy)) for r in right]
        est = sq.proportion_difference(right[0], n, right[1], n, null=-max_drop, alpha=alpha, n_star=n_star)
        if math.isfinite(est.low) and est.low > -max_drop:
            return n
    return None


def _summary(found: list[int | None], limit: int) -> str:
    done = sorted(n for n in found if n is not None)
    if len(done) < len(found) / 2:
        return f"> {limit:,}"
    median = done[len(done) // 2]
    p90 = done[min(len(done) - 1, int(0.9 * len(found)))] if len(done) >= 0.9 * len(found) else None
    return f"{median:,} (90%: {p90:,})" if p90 is not None else f"{median:,} (90%: > {limit:,})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.clearance", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="simulated rollouts per row")
    parser.add_argument("--limit", type=int, default=50_000, help="give up after this many samples per arm")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--tuning-samples", type=int, default=2000, help="the rollout's tuning_samples")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(2026)
    print("| guardrail (equal candidate) | threshold | samples per arm to clear: median (90%) |")
    print("|---|---|---|")
    for max_ratio in (1.5, 1.2, 1.1):
        found = [_latency_clears(rng, max_ratio, args.limit, args.alpha, args.tuning_samples)
                 for _ in range(args.runs)]
        print(f"| latency_p95 (lognormal, sigma 0.4) | max_ratio {max_ratio:g} | {_summary(found, args.limit)} |",
              flush=True)
    for accuracy in (0.9, 0.97):
        for max_drop in (0.05, 0.02, 0.01):
            found = [_accuracy_clears(rng, max_drop, accuracy, args.limit, args.alpha, args.tuning_samples)
                     for _ in range(args.runs)]
            print(f"| accuracy (both {accuracy:.0%}) | max_drop {max_drop:g} | {_summary(found, args.limit)} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
