"""Send realistic traffic to a gateway, for whatever model it serves, and report what it saw.

    python -m experiments.traffic --url http://127.0.0.1:8000 -n 2000 [--concurrency 8]
        [--users K] [--variant v2.0] [--seed S] [--data rows.csv] [--feedback [--label-column C]]

Rows are drawn from the model's own logged input example (``GET /variants``), or from a CSV file
with the model's columns, with Gaussian jitter on numeric columns (5% of each column's spread, kept
inside the configured bounds), so the models see in-distribution inputs that sometimes fall near a
decision boundary.

With ``--feedback`` every answered prediction is followed by ``POST /feedback`` with the row's true
label: from the CSV's label column, or from the model's metadata when it labels its input example
(models/train.py logs the iris hold-out set that way). Rows are then sent as they are (no jitter,
unless --jitter is given), so that their labels hold; the report then has accuracy to compare. Each
label carries its answer's receipt (``X-Feedback-Receipt``), as any client labelling its own answers
does; with receipts off, the label pipelines' token from ``GATEWAY_FEEDBACK_TOKEN``. A 429 (the
gateway's rate per client, ``[feedback] client_limit``) is waited out and retried.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

_BOUND_RE = re.compile(r"^([(\[])([^,]+), ([^)\]]+)([)\]])$")


def _limits(bounds: str | None, integer: bool) -> tuple[float, float]:
    """(low, high) to clip into, from /variants' text such as "(0, 100]"; open ends moved inside by
    more than the rounding of the values sent (4 decimals, or whole numbers)."""
    m = _BOUND_RE.match(bounds or "")
    if not m:
        return -np.inf, np.inf
    low, high = float(m[2]), float(m[3])
    if integer:
        return (math.floor(low) + 1 if m[1] == "(" else math.ceil(low)), (
            math.ceil(high) - 1 if m[4] == ")" else math.floor(high))
    return (low + 1e-3 if m[1] == "(" else low), (high - 1e-3 if m[4] == ")" else high)


class NoGroundTruth(ValueError):
    """--feedback without true labels to send."""


def sample_rows(model: dict[str, Any], n: int, seed: int, seeds: list[dict[str, Any]] | None = None,
                jitter: float = 0.05, labels: list[Any] | None = None) -> tuple[list[dict], list[Any] | None]:  # type: ignore[type-arg]
    """``n`` rows for the model described by /variants: seed rows picked at random, numeric columns
    jittered by ``jitter`` times their spread across the seed rows (or of their size, with a single
    seed row); with ``labels`` (one per seed row), each picked row's label beside it."""
    seeds = seeds or model.get("examples") or []
    if not seeds:
        raise ValueError("the gateway's models have no logged input example; pass --data with rows to send")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(seeds), size=n)
    rows = [dict(seeds[i]) for i in picks]
    picked_labels = [labels[i] for i in picks] if labels is not None else None
    if jitter <= 0:
        return rows, picked_labels
    for col in model["inputs"]:
        name = col["name"]
        if col["type"] not in ("double", "float", "long", "integer"):
            continue
        values = np.array([float(r[name]) for r in seeds if r.get(name) is not None])
        if len(values) == 0:
            continue
        spread = values.std() if len(values) > 1 and values.std() > 0 else max(abs(values.mean()), 1.0) * 0.2
        integer = col["type"] in ("long", "integer")
        low, high = _limits(col.get("bounds"), integer)
        noise = rng.normal(0.0, jitter * spread, size=n)
        for row, e in zip(rows, noise, strict=True):
            if row.get(name) is None:
                continue
            value = float(np.clip(float(row[name]) + e, low, high))
            row[name] = round(value) if integer else round(value, 4)
    return rows, picked_labels


def ground_truth(model: dict[str, Any], seeds: list[dict[str, Any]] | None,
                 label_column: str | None) -> tuple[list[dict[str, Any]], list[Any]]:
    """The rows to sample and their true labels, for --feedback; NoGroundTruth saying why there are none."""
    inputs = {c["name"] for c in model["inputs"]}
    if seeds is not None:
        extra = [c for c in (seeds[0] if seeds else {}) if c not in inputs]
        column = label_column or next((c for c in ("label", "target", "y", "class", "species") if c in extra),
                                      extra[0] if len(extra) == 1 else None)
        if column is None or column not in extra:
            raise NoGroundTruth(f"--feedback: the --data file has no label column (columns besides the model's "
                                f"inputs: {extra or 'none'}); name it with --label-column")
        return [{k: v for k, v in r.items() if k != column} for r in seeds], [r[column] for r in seeds]
    labels = model.get("example_labels")
    if not labels:
        raise NoGroundTruth("--feedback: no ground truth: the model's logged input example carries no labels "
                            "(model metadata 'input_example_labels'); pass --data FILE with the true labels in a "
                            "column (--label-column NAME)")
    return model["examples"], labels


def describe_model(url: str, timeout: float = 60.0) -> dict[str, Any]:
    """The model's columns and examples from /variants, waiting for the models to load (with several
    workers, each answers for itself: a fresh connection may reach one that is still loading)."""
    deadline = time.monotonic() + timeout
    while True:
        model = httpx.get(url.rstrip("/") + "/variants", timeout=10, headers={"Connection": "close"}).json().get(
            "model")
        if model is not None:
            return model  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise ValueError(f"the gateway at {url} has not loaded its models after {timeout:.0f}s")
        time.sleep(0.2)


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
    throttled: int = 0  # --feedback: labels answered 429 (and sent again after Retry-After)
    labelled: Counter[str] = field(default_factory=Counter)  # --feedback: labels sent per version...
    correct: Counter[str] = field(default_factory=Counter)  # ...and how many of those it predicted

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
            "feedback": {v: {"labelled": n, "accuracy": round(self.correct[v] / n, 4)}
                         for v, n in sorted(self.labelled.items())} or None,
            "feedback_throttled": self.throttled,
        }


async def run_traffic(url: str, n: int, concurrency: int = 8, users: int = 0, variant: str | None = None,
                      seed: int = 0, progress: bool = True, timeout: float = 10.0,
                      seeds: list[dict[str, Any]] | None = None, feedback: bool = False,
                      label_column: str | None = None, jitter: float | None = None) -> TrafficResult:
    model = describe_model(url)
    labels = None
    if feedback:
        seeds, labels = ground_truth(model, seeds, label_column)
    rows, truth = sample_rows(model, n, seed, seeds, jitter=(0.0 if feedback else 0.05) if jitter is None else jitter,
                              labels=labels)
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
                body = rows[i]
                start = time.perf_counter()
                try:
                    r = await client.post("/predict", json=body, headers=headers)
                except httpx.HTTPError as exc:
                    result.errors[type(exc).__name__] += 1
                else:
                    result.latencies_ms.append((time.perf_counter() - start) * 1000)
                    if r.status_code == 200:
                        data = r.json()
                        version = data.get("model_version", HIDDEN)  # [routing] reveal_version = false: blind
                        result.ok += 1
                        result.versions[version] += 1
                        result.classes[str(data["prediction"])[:40]] += 1
                        result.reasons[r.headers.get("X-Routing-Reason", "?")] += 1
                        if user and seen_user.setdefault(user, version) != version:
                            result.sticky_consistent = False
                        if truth is not None:
                            await _send_feedback(client, result, data, truth[i], r.headers.get("x-feedback-receipt"))
                    else:
                        result.errors[f"HTTP {r.status_code}"] += 1
                result.sent += 1
                bar.update(1)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - start
    bar.close()
    return result


HIDDEN = "(hidden)"  # the version of an answer that does not show it
RETRIES_429 = 20


async def _send_feedback(client: httpx.AsyncClient, result: TrafficResult, answer: dict[str, Any],
                         label: Any, receipt: str | None) -> None:
    """POST /feedback for one answer, with its receipt (or the label pipelines' token when the gateway
    gives no receipts), and count whether the version got it right (as the client sees it)."""
    version = answer.get("model_version", HIDDEN)
    if isinstance(label, np.generic):
        label = label.item()
    body: dict[str, Any] = {"request_id": answer["request_id"], "true_label": label}
    headers = {}
    token = os.environ.get("GATEWAY_FEEDBACK_TOKEN", "").strip()
    if receipt:
        body["receipt"] = receipt
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        for _ in range(RETRIES_429):
            r = await client.post("/feedback", json=body, headers=headers)
            if r.status_code != 429:
                break
            result.throttled += 1  # past the gateway's rate for this client: wait as told, then again
            await asyncio.sleep(min(5.0, float(r.headers.get("retry-after", "1"))))
    except httpx.HTTPError as exc:
        result.errors[f"feedback {type(exc).__name__}"] += 1
        return
    if r.status_code != 202:
        result.errors[f"feedback HTTP {r.status_code}"] += 1
        return
    result.labelled[version] += 1
    result.correct[version] += int(str(answer["prediction"]) == str(label))


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
    for version, f in dict(s.get("feedback") or {}).items():  # type: ignore[call-overload]
        lines.append(f"feedback {version}: {f['labelled']} labels sent, accuracy as answered {f['accuracy']:.1%}")
    if s.get("feedback_throttled"):
        lines.append(f"feedback: {s['feedback_throttled']} label(s) answered 429 (the gateway's rate per client, "
                     "[feedback] client_limit) and sent again after Retry-After")
    if not s["sticky_consistent"]:
        lines.append("WARNING: a sticky user saw more than one version")
    return "\n".join(lines)


def sampling_note(model: dict[str, Any], seeds: list[dict[str, Any]] | None, data: str | None,
                  feedback: bool) -> str:
    """What the rows are drawn from, said before sending (a 5-row example covers few classes)."""
    if seeds is not None:
        source = f"{len(seeds)} rows of {data}"
    else:
        examples = model.get("examples") or []
        source = (f"the model's logged input example, {len(examples)} rows only (pass --data FILE to send rows "
                  "of your own)")
    labels = " with their true labels as feedback" if feedback else ""
    return f"sampling from {source}{labels}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=1000, help="number of requests (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=0, help="send X-User-ID from this many sticky users")
    parser.add_argument("--variant", help="force this version with X-Model-Version")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="a CSV of rows with the model's columns to sample from (default: the "
                                       "models' logged input example)")
    parser.add_argument("--feedback", action="store_true",
                        help="after each answer, POST /feedback with the row's true label (from --data's label "
                             "column, or the model's labelled input example)")
    parser.add_argument("--label-column", help="--data's column of true labels (default: label, target, y, class "
                                               "or species, or the one column that is not an input)")
    parser.add_argument("--jitter", type=float, help="noise on numeric columns, as a share of each column's spread "
                                                     "(default 0.05; 0 with --feedback, so that labels hold)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.users < 0 or (args.jitter is not None and args.jitter < 0):
        parser.error("-n and --concurrency must be at least 1, --users and --jitter at least 0")
    try:
        httpx.get(args.url.rstrip("/") + "/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"error: gateway at {args.url} is not answering ({type(exc).__name__})", file=sys.stderr)
        return 1
    seeds = None
    if args.data:
        import pandas as pd

        seeds = pd.read_csv(args.data).to_dict("records")
    try:
        if not args.json:
            print(sampling_note(describe_model(args.url), seeds, args.data, args.feedback), file=sys.stderr)
        result = asyncio.run(run_traffic(args.url, args.n, args.concurrency, args.users, args.variant, args.seed,
                                         progress=not args.json and sys.stderr.isatty(), seeds=seeds,
                                         feedback=args.feedback, label_column=args.label_column,
                                         jitter=args.jitter))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = result.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0 if result.ok == result.sent else 3


if __name__ == "__main__":
    sys.exit(main())
