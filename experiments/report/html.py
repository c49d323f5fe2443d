"""The comparison as one self-contained HTML page: tables, verdicts and charts inlined as PNG."""

from __future__ import annotations

import base64
import html
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


def latency_ecdf(records: pd.DataFrame) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for i, ((version, role), g) in enumerate(_groups(records)):
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


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.001:
            return f"{value:.2e}"
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return f"{_fmt(value[0])} – {_fmt(value[1])}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return html.escape(str(value))


def _version_table(report: dict[str, Any], key: str) -> str:
    labels = report.get("labels")
    rows = []
    for v, s in report[key].items():
        lat = s["latency_ms"]
        ci50 = lat["p50_ci"] and f"{lat['p50_ci'][0]:.3f}–{lat['p50_ci'][1]:.3f}"
        ci95 = lat["p95_ci"] and f"{lat['p95_ci'][0]:.3f}–{lat['p95_ci'][1]:.3f}"
        if labels is not None:
            cells = "".join(f"<td>{s['classes'][c]} ({s['class_shares'][c]:.1%})</td>" for c in labels)
        else:
            p = s["predictions"]
            cells = "".join(f"<td>{_fmt(p[k])}</td>" for k in ("mean", "std", "p05", "p50", "p95"))
        rows.append(f"<tr><th>{html.escape(v)}</th><td>{s['count']}</td><td>{s['share']:.1%}</td>"
                    f"<td>{lat['mean']:.3f}</td><td>{lat['p50']:.3f}<br><small>{ci50 or ''}</small></td>"
                    f"<td>{lat['p95']:.3f}<br><small>{ci95 or ''}</small></td><td>{lat['p99']:.3f}</td>{cells}</tr>")
    head = ("".join(f"<th>{html.escape(str(c))}</th>" for c in labels) if labels is not None else
            "".join(f"<th>predicted {k}</th>" for k in ("mean", "std", "p5", "p50", "p95")))
    return ("<table><tr><th>version</th><th>count</th><th>share</th><th>mean ms</th><th>p50 ms<br><small>95% CI"
            "</small></th><th>p95 ms<br><small>95% CI</small></th><th>p99 ms</th>" + head + "</tr>"
            + "".join(rows) + "</table>")


_TEST_NAMES = {
    "class_chi2": "Class distribution: chi-square test of independence",
    "prediction_mwu": "Predicted values: Mann-Whitney U",
    "prediction_ks": "Predicted values: two-sample Kolmogorov-Smirnov",
    "latency_mwu": "Latency: Mann-Whitney U",
    "srm": "Sample ratio: chi-square goodness of fit to the weights",
    "accuracy": "Accuracy from feedback",
}


def _tests_table(tests: dict[str, Any]) -> str:
    """Each test as a row: what it is, its main figures, and whether it is significant."""
    rows = []
    for key, res in tests.items():
        if res is None or key.endswith("_all") or key == "srm_by_config":
            continue
        significant = res.get("significant", res.get("mismatch"))
        figures = {k: v for k, v in res.items() if k not in ("significant", "mismatch", "p_value")}
        rows.append(f"<tr><th>{html.escape(_TEST_NAMES.get(key, key))}</th><td>{_fmt(res.get('p_value'))}</td>"
                    f"<td>{_fmt(significant)}</td><td class=l>{_fmt(figures)}</td></tr>")
    if not rows:
        return "<p>No between-version test applies (one version, or too few predictions).</p>"
    return ("<table><tr><th>test</th><th>p-value</th><th>significant</th><th>figures</th></tr>"
            + "".join(rows) + "</table>")


def _comparisons_table(section: dict[str, Any]) -> str:
    """Every version against the control, raw and adjusted p-values side by side."""
    rows = [f"<tr><th>{html.escape(section['control'])} <small>(control)</small></th><td colspan=5 class=l>"
            "every other version is compared with this one</td></tr>"]
    for v, tests in section["pairs"].items():
        for metric, t in tests.items():
            figures = {k: val for k, val in t.items() if k not in ("test", "p_value", "p_adjusted", "significant")}
            rows.append(f"<tr><th>{html.escape(v)}</th><td class=l>{html.escape(metric)} ({html.escape(t['test'])})"
                        f"</td><td>{_fmt(t['p_value'])}</td><td>{_fmt(t['p_adjusted'])}</td>"
                        f"<td>{_fmt(t['significant'])}</td><td class=l>{_fmt(figures)}</td></tr>")
    return (f"<p>{html.escape(section['correction_name'])}-adjusted across {section['family_size']} tests "
            f"(versions × metrics), alpha {section['alpha']:g}.</p><table><tr><th>version</th><th>metric</th>"
            "<th>raw p</th><th>adjusted p</th><th>significant</th><th>figures</th></tr>" + "".join(rows) + "</table>")


def _shadow_table(shadow: dict[str, Any]) -> str:
    rows = [("pairs (same request and row)", shadow.get("pairs"))]
    if shadow.get("agreement"):
        ag = shadow["agreement"]
        rows.append(("agreement", f"{ag['rate']:.1%} of {ag['n']} (95% CI {ag['ci'][0]:.1%}–{ag['ci'][1]:.1%})"))
    if shadow.get("difference"):
        d = shadow["difference"]
        rows += [("mean absolute difference", d["mean_abs_diff"]), ("mean difference (candidate − primary)",
                 d["mean_diff"]), ("Pearson correlation", d["pearson_r"]), ("Spearman correlation",
                 d["spearman_rho"]), ("Wilcoxon p-value", d["p_value"])]
    if shadow.get("paired_latency"):
        pl = shadow["paired_latency"]
        rows += [("paired latency difference, median ms", pl["median_diff_ms"]),
                 ("its 95% CI", pl["median_diff_ci"]), ("Wilcoxon p-value (latency)", pl["p_value"])]
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows) + "</table>"


def render_html(report: dict[str, Any], records: pd.DataFrame) -> str:
    sections = [f"<h1>A/B comparison: {html.escape(str(report.get('experiment', '')))}</h1>",
                f"<p class=meta>report {report.get('report_id', '')} · generated {report.get('generated_at', '')} · "
                f"{report['n_records']} prediction records from {report.get('n_runs', '?')} runs · "
                f"{report.get('kind', '')} · filters {html.escape(str(report.get('filters', {})))}</p>"]
    sections += [f"<p class=warn>⚠ {html.escape(w)}</p>" for w in report.get("warnings", [])]
    sections.append("<h2>Verdicts</h2><ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in report["verdicts"])
                    + "</ul>")
    if report["versions"]:
        sections.append("<h2>Answered traffic (role primary)</h2>" + _version_table(report, "versions"))
    if report["shadow_versions"]:
        sections.append("<h2>Shadow scoring (role shadow)</h2>" + _version_table(report, "shadow_versions"))
    distribution = class_bars(report) if report.get("labels") is not None else value_histogram(records)
    sections.append(f"<h2>Charts</h2><img alt='latency ECDF' src='{latency_ecdf(records)}'>"
                    f"<img alt='prediction distribution' src='{distribution}'>")
    shadow = report.get("shadow")
    if shadow and shadow.get("confusion"):
        sections.append(f"<img alt='shadow confusion matrix' src='{confusion_heatmap(shadow)}'>")
    if report.get("comparisons"):
        sections.append("<h2>Against the control</h2>" + _comparisons_table(report["comparisons"]))
    segments = report.get("segments") or {}
    if segments.get("segments"):
        sections.append(f"<h2>Segments by {html.escape(segments['by'])}</h2><p>{html.escape(segments['bins'])}; "
                        "one correction family for all segments, apart from the overall one.</p>"
                        + "".join(f"<h3>{html.escape(seg)}</h3>" + _comparisons_table(r)
                                  for seg, r in segments["segments"].items()))
    sections.append("<h2>Tests</h2>" + _tests_table(report["tests"]))
    if shadow:
        sections.append("<h2>Shadow</h2>" + _shadow_table(shadow))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f4f4f4}td.l{text-align:left}.meta{color:#666}"
             ".warn{background:#fff4e5;border:1px solid #f0ad4e;padding:0.6em}img{max-width:100%;margin:0.5em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>A/B report</title><style>{style}</style>"
            f"</head><body>{''.join(sections)}</body></html>")
