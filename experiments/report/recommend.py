"""The report's last word: one recommendation per candidate against the control, with the evidence
named (which metric, by how much, the adjusted p-value), read off the comparisons already made.

The decision weighs quality (accuracy from feedback for a classifier, absolute error for a
regressor, with the family's adjusted p-value under alpha) and speed: a candidate is **clearly
slower** when its p95 request time is more than ``max_slowdown`` times the control's with the two
95% intervals apart. Then an equal (or unjudged) candidate is "do not promote: slower", and a
better one is a trade-off, named as one ("+2.0 points, 3.1x slower at p95"), for a person to weigh.
Within the tolerance, latency is reported beside the verdict as its price. Without ground truth the
recommendation gives no verdict on quality. A sample-ratio mismatch comes first: with a broken split
no comparison is trusted. (Model failures are not in the log, so errors are the rollouts' guardrail,
not the report's.)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

# Fewer than this many predictions per version and the p95 is read off its top 10 values or fewer:
# the report names it instead of comparing.
P95_MIN_SAMPLES = 200
# A candidate's p95 over the control's past which it is "clearly slower" (with the intervals apart):
# the rollouts' latency guardrail has the same default (docs/routing-and-rollouts.md).
DEFAULT_MAX_SLOWDOWN = 1.5


class Decision(StrEnum):
    PROMOTE = "promote"
    KEEP_CONTROL = "keep the control"
    SLOWER = "do not promote: slower"
    TRADE_OFF = "trade-off"
    NO_DIFFERENCE = "no difference found"
    NO_GROUND_TRUTH = "no verdict on quality"
    CHECK_SPLIT = "check the split first"


def _p(value: float) -> str:
    return f"p = {value:.2g}" if value >= 0.001 else "p < 0.001"


def _quality(kind: str, tests: dict[str, Any], alpha: float) -> tuple[int | None, str, str]:
    """(+1 better, -1 worse, 0 no detectable difference, None unknown), its evidence, and the gain in
    a few words (for a trade-off's headline)."""
    if kind == "regressor":
        t = tests.get("error")
        if t is None:
            return None, "error unknown: no feedback with true values for it or the control", ""
        diff, p = t["mae_diff"], t["p_adjusted"]
        gain = f"mean absolute error {diff:+.4g}"
        if p < alpha:
            return (1 if diff < 0 else -1), (f"{'lower' if diff < 0 else 'higher'} error, mean absolute error "
                                             f"{diff:+.4g}, {_p(p)}"), gain
        return 0, f"error: no detectable difference (mean absolute error {diff:+.4g}, {_p(p)})", gain
    t = tests.get("accuracy")
    if t is None:
        return None, ("accuracy unknown: no feedback for it or the control (experiments.traffic --feedback, or "
                      "POST /feedback)"), ""
    diff, p = t["difference"], t["p_adjusted"]
    n = t.get("n") or t.get("units")
    counted = f", {n[1]} vs {n[0]} {'users' if 'units' in t else 'labelled'}" if n else ""
    gain = f"{100 * diff:+.1f} points"
    if p < alpha:
        return (1 if diff > 0 else -1), (f"{'more' if diff > 0 else 'less'} accurate, {100 * diff:+.1f} points, "
                                         f"{_p(p)}{counted}"), gain
    return 0, f"accuracy: no detectable difference ({100 * diff:+.1f} points, {_p(p)}{counted})", gain


def slowdown(control: dict[str, Any], candidate: dict[str, Any], max_slowdown: float) -> float | None:
    """The candidate's p95 over the control's when it is clearly past ``max_slowdown`` (enough samples,
    the two 95% intervals apart), else None."""
    if min(control["count"], candidate["count"]) < P95_MIN_SAMPLES:
        return None
    a, b = control["latency_ms"], candidate["latency_ms"]
    ca, cb = a.get("p95_ci"), b.get("p95_ci")
    if not (ca and cb and a["p95"] and cb[0] > ca[1]):
        return None
    ratio = b["p95"] / a["p95"]
    return ratio if ratio > max_slowdown else None


def _latency(tests: dict[str, Any], alpha: float) -> str | None:
    t = tests.get("latency")
    if t is None:
        return None
    # by request: the median difference; by user: the difference of mean latency per request
    diff = t.get("median_diff_ms", t.get("difference"))
    where = "at p50" if "median_diff_ms" in t else "on average per request (users as the unit)"
    if t["p_adjusted"] < alpha and diff:
        return f"{abs(diff):.2g} ms {'slower' if diff > 0 else 'faster'} {where} ({_p(t['p_adjusted'])})"
    return f"latency: no detectable difference {where} ({diff:+.2g} ms, {_p(t['p_adjusted'])})"


def _p95(control: dict[str, Any], candidate: dict[str, Any]) -> str:
    n = min(control["count"], candidate["count"])
    if n < P95_MIN_SAMPLES:
        return f"not enough samples for p95 ({n} predictions; {P95_MIN_SAMPLES} needed)"
    a, b = control["latency_ms"], candidate["latency_ms"]
    ca, cb = a.get("p95_ci"), b.get("p95_ci")
    if ca and cb and (cb[0] > ca[1] or cb[1] < ca[0]):
        word = "slower" if b["p95"] > a["p95"] else "faster"
        return f"p95 {word}: {b['p95']:.3g} ms vs {a['p95']:.3g} ms (95% intervals apart)"
    return f"p95: no clear difference ({b['p95']:.3g} ms vs {a['p95']:.3g} ms, 95% intervals overlap)"


def recommend(report: dict[str, Any], max_slowdown: float = DEFAULT_MAX_SLOWDOWN) -> dict[str, Any] | None:
    """{"control", "max_slowdown", "candidates": {version: {"decision", "evidence", "line"}}}; None with
    fewer than two versions."""
    comparisons = report.get("comparisons")
    if not comparisons:
        return None
    control, alpha = comparisons["control"], comparisons["alpha"]
    srm = (report.get("tests") or {}).get("srm")
    out: dict[str, Any] = {}
    for version, tests in comparisons["pairs"].items():
        quality, quality_text, gain = _quality(report.get("kind", "classifier"), tests, alpha)
        slower = slowdown(report["versions"][control], report["versions"][version], max_slowdown)
        evidence = [quality_text]
        if slower is not None:
            evidence.insert(0, f"{slower:.2g}x slower at p95 than {control} (past the {max_slowdown:g}x tolerance, "
                               "95% intervals apart)")
        latency = _latency(tests, alpha)
        if latency:
            evidence.append(latency)
        evidence.append(_p95(report["versions"][control], report["versions"][version]))
        classes = [t for name, t in tests.items() if name.startswith("class") and t.get("significant")]
        if classes:
            evidence.append(f"predicts a different class mix ({_p(min(t['p_adjusted'] for t in classes))})")
        if srm and srm.get("mismatch"):
            decision = Decision.CHECK_SPLIT
            evidence.insert(0, f"sample ratio mismatch ({_p(srm['p_value'])}): the traffic split is not the "
                               "configured one, so no difference here is trusted")
        elif quality == -1:
            decision = Decision.KEEP_CONTROL
        elif slower is not None and quality == 1:
            decision = Decision.TRADE_OFF
            evidence.insert(0, f"{gain}, {slower:.2g}x slower at p95: weigh them")
            evidence.pop(1)  # the slowdown is in the headline
        elif slower is not None:
            decision = Decision.SLOWER
        elif quality is None:
            decision = Decision.NO_GROUND_TRUTH
        else:
            decision = {1: Decision.PROMOTE, 0: Decision.NO_DIFFERENCE}[quality]
        out[version] = {"decision": decision.value, "evidence": evidence, "slowdown": slower,
                        "line": f"{version}: {decision.value}: " + "; ".join(evidence)}
    return {"control": control, "alpha": alpha, "correction": comparisons["correction_name"],
            "max_slowdown": max_slowdown, "candidates": out}


def render(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = [f"recommendation (each candidate against the control {section['control']}; p-values "
             f"{section['correction']}-adjusted, alpha {section['alpha']:g}; clearly slower past "
             f"{section.get('max_slowdown', DEFAULT_MAX_SLOWDOWN):g}x the control's p95)"]
    lines += [f"  {c['line']}" for c in section["candidates"].values()]
    return lines
