"""The report's bandit section: each version's mean reward by inverse-propensity weighting (from the
assignment probability every record carries), beside the naive mean, the regret against always
serving the best version, and the weights over time. Present when the weights moved during the range
(a bandit, or any change of a split): with fixed weights the IPW and naive means agree."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from gateway.domain.records import RANDOMISED
from gateway.routing.router import parse_weights_tag
from gateway.stats.ipw import arm_estimates, regret

NOTE = ("ipw: self-normalised inverse-propensity mean of the rewards, weighted by one over each request's logged "
        "assignment probability; naive: the plain mean, biased when the weights moved with the rewards")


def bandit_section(records: pd.DataFrame) -> dict[str, Any] | None:
    if records.empty or "assignment_probability" not in records.columns:
        return None
    primary = records[(records["role"] == "primary") & records["routing"].isin(RANDOMISED)]
    primary = primary[pd.to_numeric(primary["assignment_probability"], errors="coerce").notna()]
    if primary.empty or primary["weights"].nunique() < 2:
        return None
    primary = primary.sort_values("ts_ms", kind="stable")
    regressor = (primary["kind"] == "regressor").all()
    sent = pd.to_numeric(primary["reward"], errors="coerce") if "reward" in primary.columns else None
    if sent is not None and sent.notna().any():  # rewards sent with /feedback (reward = "feedback")
        name, reward = "feedback", sent.astype(float)
    elif regressor:
        name, reward = "negative_abs_error", -primary["abs_error"].astype(float)
    else:
        name, reward = "correct", primary["correct"].astype(float)
    arms = primary["model_version"].astype(str).to_numpy()
    estimates = arm_estimates(arms, reward.to_numpy(), primary["assignment_probability"].astype(float).to_numpy())
    labelled = np.isfinite(reward.to_numpy())
    return {
        "reward": name,
        "versions": {arm: _clean(e.to_dict()) for arm, e in estimates.items()},
        "regret": _clean(regret(arms[labelled], estimates)),
        "weights_over_time": _weights_over_time(primary),
        "last_ts_ms": int(primary["ts_ms"].max()),
        "note": NOTE,
    }


def _weights_over_time(primary: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tag, ts in zip(primary["weights"], primary["ts_ms"], strict=True):
        if out and out[-1]["tag"] == tag:
            continue
        out.append({"ts_ms": int(ts), "tag": tag, "weights": parse_weights_tag(str(tag))})
    return [{"ts_ms": p["ts_ms"], "weights": p["weights"]} for p in out]


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def render(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = [f"bandit (reward {section['reward']}; means weighted by the logged assignment probabilities)",
             f"  {'version':<10} {'n':>7} {'labelled':>8} {'share':>7} {'ipw mean':>9} {'95% interval':>17} "
             f"{'naive mean':>10}"]
    for arm, e in section["versions"].items():
        interval = (f"{e['ipw_low']:.3f}-{e['ipw_high']:.3f}" if e["ipw_low"] is not None else "-")
        ipw = f"{e['ipw_mean']:.3f}" if e["ipw_mean"] is not None else "-"
        naive = f"{e['naive_mean']:.3f}" if e["naive_mean"] is not None else "-"
        lines.append(f"  {arm:<10} {e['n']:>7} {e['labelled']:>8} {e['share']:>7.1%} {ipw:>9} {interval:>17} "
                     f"{naive:>10}")
    r = section["regret"]
    if r.get("best") is not None:
        lines.append(f"  regret against always serving {r['best']}: {r['total']:.1f} reward over the labelled "
                     f"requests ({r['per_request']:.4f} per request)")
    lines.append(f"  weights changed {len(section['weights_over_time']) - 1} time(s) in the range")
    return [*lines, ""]


def weights_chart(section: dict[str, Any]) -> str | None:
    """Each version's weight over time, as a step chart."""
    points = section.get("weights_over_time") or []
    if len(points) < 2:
        return None
    from experiments.report.charts import PALETTE, _plt, _png

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    start = points[0]["ts_ms"]
    arms = sorted({a for p in points for a in p["weights"]})
    end = max(section.get("last_ts_ms") or points[-1]["ts_ms"], points[-1]["ts_ms"])
    for i, arm in enumerate(arms):
        xs = [(p["ts_ms"] - start) / 1000 for p in points] + [(end - start) / 1000]
        ys = [p["weights"].get(arm, 0.0) for p in points]
        ys.append(ys[-1])
        # Dashes of different lengths: arms at the same weight (two at the floor) stay visible.
        ax.step(xs, ys, where="post", label=arm, color=PALETTE[i % len(PALETTE)], linewidth=2.2 - 0.5 * (i % 3),
                linestyle=("-", "--", ":")[i % 3])
    ax.set_xlabel("seconds since the first record")
    ax.set_ylabel("weight")
    ax.set_ylim(0, 1)
    ax.set_title("Bandit weight per version over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def html_table(section: dict[str, Any]) -> str:
    import html

    head = ("<tr><th>version</th><th>n</th><th>labelled</th><th>share</th><th>IPW mean</th>"
            "<th>95% interval</th><th>naive mean</th></tr>")
    rows = []
    for arm, e in section["versions"].items():
        def f(v: Any) -> str:
            return "-" if v is None else f"{v:.3f}"
        rows.append(f"<tr><td class=l>{html.escape(arm)}</td><td>{e['n']}</td><td>{e['labelled']}</td>"
                    f"<td>{e['share']:.1%}</td><td>{f(e['ipw_mean'])}</td>"
                    f"<td>{f(e['ipw_low'])} – {f(e['ipw_high'])}</td><td>{f(e['naive_mean'])}</td></tr>")
    r = section["regret"]
    regret_text = (f"<p>Regret against always serving {html.escape(str(r['best']))}: {r['total']:.1f} reward over "
                   f"the labelled requests ({r['per_request']:.4f} per request).</p>" if r.get("best") else "")
    chart = weights_chart(section)
    return (f"<p>Reward: {html.escape(section['reward'])}. {html.escape(section['note'])}.</p><table>{head}"
            f"{''.join(rows)}</table>{regret_text}" + (f"<img alt='bandit weights over time' src='{chart}'>"
                                                         if chart else ""))
