"""The comparison as one self-contained HTML page: tables, verdicts and charts inlined as PNG."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
import pandas as pd

CLASS_NAMES = ["Setosa", "Versicolor", "Virginica"]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_ecdf(records: pd.DataFrame) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    groups = sorted(records.groupby(["model_version", "role"]), key=lambda kv: (kv[0][1] != "primary", kv[0]))
    for i, ((version, role), g) in enumerate(groups):
        x = np.sort(g["latency_ms"].to_numpy())
        y = np.arange(1, len(x) + 1) / len(x)
        ax.step(x, y, where="post", color=PALETTE[i % len(PALETTE)], label=f"{version} ({role}), n = {len(x)}",
                linestyle="-" if role == "primary" else "--")
    hi = float(records["latency_ms"].quantile(0.995))
    ax.set_xlim(0, hi * 1.05 if hi > 0 else 1)
    ax.set_xlabel("predict latency (ms)")
    ax.set_ylabel("fraction of predictions ≤ x")
    ax.set_title("Latency ECDF per version")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def class_bars(report: dict[str, Any]) -> str:
    plt = _plt()
    rows = [(f"{v} ({role})", s["class_shares"])
            for role, key in (("primary", "versions"), ("shadow", "shadow_versions")) for v, s in report[key].items()]
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=110)
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(CLASS_NAMES))
    for i, (label, shares) in enumerate(rows):
        values = [shares[c] for c in CLASS_NAMES]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label, color=PALETTE[i % len(PALETTE)])
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7)
    ax.set_xticks(x, CLASS_NAMES)
    ax.set_ylabel("share of predictions")
    ax.set_ylim(0, 1)
    ax.set_title("Predicted class shares per version")
    ax.legend(fontsize=8)
    return _png(fig)


def confusion_heatmap(shadow: dict[str, Any]) -> str:
    plt = _plt()
    m = np.array(shadow["confusion"]["matrix"])
    fig, ax = plt.subplots(figsize=(4.6, 3.9), dpi=110)
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(3), CLASS_NAMES, rotation=20)
    ax.set_yticks(range(3), CLASS_NAMES)
    ax.set_xlabel(f"candidate {shadow['candidate']}")
    ax.set_ylabel(f"primary {shadow['primary']}")
    ax.set_title("Shadow: primary × candidate")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def _table(report: dict[str, Any], key: str) -> str:
    rows = []
    for v, s in report[key].items():
        lat = s["latency_ms"]
        ci50 = lat["p50_ci"] and f"{lat['p50_ci'][0]:.3f}–{lat['p50_ci'][1]:.3f}"
        ci95 = lat["p95_ci"] and f"{lat['p95_ci'][0]:.3f}–{lat['p95_ci'][1]:.3f}"
        classes = "".join(f"<td>{s['classes'][c]} ({s['class_shares'][c]:.1%})</td>" for c in CLASS_NAMES)
        rows.append(f"<tr><th>{html.escape(v)}</th><td>{s['count']}</td><td>{s['share']:.1%}</td>"
                    f"<td>{lat['mean']:.3f}</td><td>{lat['p50']:.3f}<br><small>{ci50 or ''}</small></td>"
                    f"<td>{lat['p95']:.3f}<br><small>{ci95 or ''}</small></td><td>{lat['p99']:.3f}</td>{classes}</tr>")
    head = "".join(f"<th>{c}</th>" for c in CLASS_NAMES)
    return ("<table><tr><th>version</th><th>count</th><th>share</th><th>mean ms</th><th>p50 ms<br><small>95% CI"
            "</small></th><th>p95 ms<br><small>95% CI</small></th><th>p99 ms</th>" + head + "</tr>"
            + "".join(rows) + "</table>")


def render_html(report: dict[str, Any], records: pd.DataFrame) -> str:
    sections = [f"<h1>A/B comparison: {html.escape(str(report.get('experiment', '')))}</h1>",
                f"<p class=meta>report {report.get('report_id', '')} · generated {report.get('generated_at', '')} · "
                f"{report['n_records']} prediction records from {report.get('n_runs', '?')} runs · "
                f"filters {html.escape(str(report.get('filters', {})))}</p>",
                "<h2>Verdicts</h2><ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in report["verdicts"]) + "</ul>"]
    if report["versions"]:
        sections.append("<h2>Answered traffic (role primary)</h2>" + _table(report, "versions"))
    if report["shadow_versions"]:
        sections.append("<h2>Shadow scoring (role shadow)</h2>" + _table(report, "shadow_versions"))
    sections.append(f"<h2>Charts</h2><img alt='latency ECDF' src='{latency_ecdf(records)}'>"
                    f"<img alt='class shares' src='{class_bars(report)}'>")
    shadow = report.get("shadow")
    if shadow and shadow.get("confusion"):
        sections.append(f"<img alt='shadow confusion matrix' src='{confusion_heatmap(shadow)}'>")
    tests = {k: v for k, v in report["tests"].items() if v is not None}
    if shadow:
        tests["shadow"] = {k: v for k, v in shadow.items() if k not in ("confusion", "verdicts")}
    sections.append("<h2>Tests</h2><pre>" + html.escape(_pretty(tests)) + "</pre>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f4f4f4}.meta{color:#666}img{max-width:100%;margin:0.5em}"
             "pre{background:#f8f8f8;padding:1em;overflow:auto;font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>A/B report</title><style>{style}</style>"
            f"</head><body>{''.join(sections)}</body></html>")


def _pretty(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2)
