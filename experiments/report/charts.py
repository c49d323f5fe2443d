"""The report's charts, each a PNG inlined as a data URL (matplotlib, headless)."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pandas as pd

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


def _groups(records: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    return sorted(records.groupby(["model_version", "role"]), key=lambda kv: (kv[0][1] != "primary", kv[0]))


def log_latency_axis(records: pd.DataFrame) -> bool:
    """Versions whose medians are more than 3x apart: on a linear axis the fast one would be a line
    against the y-axis, so the latency axis is logarithmic."""
    medians = records.groupby("model_version")["latency_ms"].median()
    return len(medians) > 1 and bool(medians.min() > 0) and bool(medians.max() / medians.min() > 3)


def latency_ecdf(records: pd.DataFrame) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for i, ((version, role), g) in enumerate(_groups(records)):
        x = np.sort(g["latency_ms"].to_numpy())
        y = np.arange(1, len(x) + 1) / len(x)
        ax.step(x, y, where="post", color=PALETTE[i % len(PALETTE)], label=f"{version} ({role}), n = {len(x)}",
                linestyle="-" if role == "primary" else "--")
    hi = float(records["latency_ms"].quantile(0.995))
    if log_latency_axis(records):
        ax.set_xscale("log")
        low = float(records.loc[records["latency_ms"] > 0, "latency_ms"].quantile(0.001))
        ax.set_xlim(low * 0.9, hi * 1.1)
        ax.set_xlabel("predict latency (ms, log scale)")
    else:
        ax.set_xlim(0, hi * 1.05 if hi > 0 else 1)
        ax.set_xlabel("predict latency (ms)")
    ax.set_ylabel("fraction of predictions ≤ x")
    ax.set_title("Latency ECDF per version")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def class_bars(report: dict[str, Any]) -> str:
    plt = _plt()
    labels = report["labels"]
    rows = [(f"{v} ({role})", s["class_shares"])
            for role, key in (("primary", "versions"), ("shadow", "shadow_versions")) for v, s in report[key].items()]
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(labels) * max(1, len(rows)) / 2), 3.4), dpi=110)
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(labels))
    for i, (label, shares) in enumerate(rows):
        values = [shares[c] for c in labels]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label, color=PALETTE[i % len(PALETTE)])
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7)
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 4 else 0)
    ax.set_ylabel("share of predictions")
    ax.set_ylim(0, 1)
    ax.set_title("Predicted class shares per version")
    ax.legend(fontsize=8)
    return _png(fig)


def value_histogram(records: pd.DataFrame) -> str:
    """A regressor's predicted values per version, as overlaid density histograms."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    values = records["value"].astype(float)
    bins = np.histogram_bin_edges(values[np.isfinite(values)], bins=30)
    for i, ((version, role), g) in enumerate(_groups(records)):
        ax.hist(g["value"].astype(float), bins=bins, density=True, histtype="step", linewidth=1.6,
                color=PALETTE[i % len(PALETTE)], linestyle="-" if role == "primary" else "--",
                label=f"{version} ({role}), n = {len(g)}")
    ax.set_xlabel("predicted value")
    ax.set_ylabel("density")
    ax.set_title("Predicted values per version")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def confusion_heatmap(shadow: dict[str, Any]) -> str:
    plt = _plt()
    m = np.array(shadow["confusion"]["matrix"])
    labels = shadow["confusion"]["labels"]
    k = len(labels)
    fig, ax = plt.subplots(figsize=(max(4.6, 0.7 * k + 2.5), max(3.9, 0.6 * k + 2)), dpi=110)
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=20)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel(f"candidate {shadow['candidate']}")
    ax.set_ylabel(f"primary {shadow['primary']}")
    ax.set_title("Shadow: primary × candidate")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def accuracy_chart(report: dict[str, Any]) -> str | None:
    """Each version's accuracy from feedback with its 95% interval (or its mean absolute error);
    None when no version has labels."""
    key = "accuracy" if report.get("kind") != "regressor" else "error"
    rows = [(v, s[key]) for v, s in report["versions"].items() if s.get(key)]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows) + 2), 3.2), dpi=110)
    x = np.arange(len(rows))
    if key == "accuracy":
        values = [r["rate"] for _, r in rows]
        low = [r["rate"] - r["ci"][0] for _, r in rows]
        high = [r["ci"][1] - r["rate"] for _, r in rows]
        bars = ax.bar(x, values, color=[PALETTE[i % len(PALETTE)] for i in range(len(rows))], yerr=[low, high],
                      capsize=6)
        ax.bar_label(bars, labels=[f"{v:.1%}\nn={r['n']}" for v, (_, r) in zip(values, rows, strict=True)],
                     fontsize=7, label_type="center", color="white")
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy (95% interval)")
        ax.set_title("Accuracy from feedback per version")
    else:
        values = [r["mae"] for _, r in rows]
        bars = ax.bar(x, values, color=[PALETTE[i % len(PALETTE)] for i in range(len(rows))])
        ax.bar_label(bars, labels=[f"{v:.3g}\nn={r['n']}" for v, (_, r) in zip(values, rows, strict=True)], fontsize=7)
        ax.set_ylabel("mean absolute error")
        ax.set_title("Error from feedback per version")
    ax.set_xticks(x, [v for v, _ in rows])
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
