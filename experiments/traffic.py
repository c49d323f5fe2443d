"""Send realistic iris traffic to a gateway and report what it saw.

    python -m experiments.traffic --url http://127.0.0.1:8000 -n 2000 [--concurrency 8]
        [--users K] [--variant v2.0] [--seed S]

Features are iris rows with Gaussian jitter (5% of each feature's spread), so both models see
in-distribution inputs that sometimes fall near a class boundary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np
from tqdm import tqdm

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def iris_samples(n: int, seed: int) -> np.ndarray:
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(seed)
    data = load_iris().data
    rows = data[rng.integers(0, len(data), size=n)]
    jitter = rng.normal(0.0, 0.05 * data.std(axis=0), size=rows.shape)
    return np.clip(np.round(rows + jitter, 2), 0.1, 100.0)


@dataclass
class TrafficResult:
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    classes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    sticky_consistent: bool = True

    def summary(self) -> dict[str, object]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {
            "sent": self.sent, "ok": self.ok, "errors": dict(self.errors),
            "requests_per_s": round(self.sent / self.elapsed_s, 1) if self.elapsed_s else None,
            "shares": {v: round(c / self.ok, 4) for v, c in sorted(self.versions.items())} if self.ok else {},
            "counts": dict(sorted(self.versions.items())),
            "routing": dict(self.reasons), "classes": dict(self.classes),
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 95, 99)},
            "sticky_consistent": self.sticky_consistent,
        }


async def run_traffic(url: str, n: int, concurrency: int = 8, users: int = 0, variant: str | None = None,
                      seed: int = 0, progress: bool = True, timeout: float = 10.0) -> TrafficResult:
    rows = iris_samples(n, seed)
    rng = np.random.default_rng(seed + 1)
    user_of = rng.integers(0, users, size=n) if users else None
    result = TrafficResult()
    seen_user: dict[str, str] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    bar = tqdm(total=n, unit="req", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout, limits=limits) as client:
        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                headers = {}
                if variant:
                    headers["X-Model-Version"] = variant
                user = f"user-{user_of[i]}" if user_of is not None else None
                if user:
                    headers["X-User-ID"] = user
                body = dict(zip(FEATURES, map(float, rows[i]), strict=True))
                start = time.perf_counter()
                try:
                    r = await client.post("/predict", json=body, headers=headers)
                except httpx.HTTPError as exc:
                    result.errors[type(exc).__name__] += 1
                else:
                    result.latencies_ms.append((time.perf_counter() - start) * 1000)
                    if r.status_code == 200:
                        data = r.json()
                        result.ok += 1
                        result.versions[data["model_version"]] += 1
                        result.classes[data["prediction"]] += 1
                        result.reasons[r.headers.get("X-Routing-Reason", "?")] += 1
                        if user and seen_user.setdefault(user, data["model_version"]) != data["model_version"]:
                            result.sticky_consistent = False
                    else:
                        result.errors[f"HTTP {r.status_code}"] += 1
                result.sent += 1
                bar.update(1)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    bar.close()
    return result


def format_summary(s: dict[str, object]) -> str:
    lines = [f"sent {s['sent']}, ok {s['ok']}, errors {s['errors'] or 'none'}, {s['requests_per_s']} req/s"]
    counts = s["counts"]
    assert isinstance(counts, dict)
    for version, share in dict(s["shares"]).items():  # type: ignore[call-overload]
        lines.append(f"  {version:<8} {counts[version]:>7}  {share:7.2%}  {'#' * round(share * 40)}")
    lines.append(f"routing: {s['routing']}")
    lines.append(f"classes: {s['classes']}")
    lat = s["latency_ms"]
    assert isinstance(lat, dict)
    lines.append("latency ms: " + ", ".join(f"{k} {v}" for k, v in lat.items()))
    if not s["sticky_consistent"]:
        lines.append("WARNING: a sticky user saw more than one version")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=1000, help="number of requests (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=0, help="send X-User-ID from this many sticky users")
    parser.add_argument("--variant", help="force this version with X-Model-Version")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.users < 0:
        parser.error("-n and --concurrency must be at least 1, --users at least 0")
    try:
        httpx.get(args.url.rstrip("/") + "/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"error: gateway at {args.url} is not answering ({type(exc).__name__})", file=sys.stderr)
        return 1
    result = asyncio.run(run_traffic(args.url, args.n, args.concurrency, args.users, args.variant, args.seed,
                                     progress=not args.json))
    summary = result.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0 if result.ok == result.sent else 3


if __name__ == "__main__":
    sys.exit(main())
