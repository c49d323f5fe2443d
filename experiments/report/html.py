"""The comparison as one self-contained HTML page: tables, verdicts and charts inlined as PNG."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import pandas as pd

from experiments.report.bandit import html_table as bandit_html
from experiments.report.charts import accuracy_chart, class_bars, confusion_heatmap, latency_ecdf, value_histogram
from experiments.report.text import quality_text, source_text

# What a test's figures are called on the page (anything not named here keeps its key)
FIGURE_NAMES = {
    "statistic": "statistic", "dof": "degrees of freedom", "cramers_v": "Cramér's V", "median_diff_ms":
    "median difference (ms)", "median_diff_ci": "its 95% interval", "difference": "difference", "ci":
    "95% interval", "n": "labelled", "units": "users", "a": "control's value", "b": "candidate's value",
    "mae_diff": "mean absolute error difference", "median_diff": "median difference", "test": "test",
    "observed": "observed", "expected": "expected", "weights": "configured weights", "unit": "counted",
}


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
        return ", ".join(f"{html.escape(str(k))} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return html.escape(str(value))


# Where a figure means something else in one test: the sample-ratio test's n counts requests or users.
FIGURE_NAMES_BY_TEST = {"srm": {"n": "counted", "unit": "unit"}}


def _figures(figures: dict[str, Any], test: str | None = None) -> str:
    """A test's figures as named numbers, one per line."""
    names = {**FIGURE_NAMES, **FIGURE_NAMES_BY_TEST.get(test or "", {})}
    return "<br>".join(f"{html.escape(names.get(k, k.replace('_', ' ')))}: {_fmt(v)}"
                       for k, v in figures.items())


def filters_text(filters: dict[str, Any]) -> str:
    """The report's filters in words ("since 2026-12-02 10:00 UTC, role primary"), or "none"."""
    def when(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    words = []
    if filters.get("since") is not None:
        words.append(f"since {when(filters['since'])}")
    if filters.get("until") is not None:
        words.append(f"until {when(filters['until'])}")
    if filters.get("config_hash"):
        words.append(f"routing config {filters['config_hash']}")
    if filters.get("role") and filters["role"] != "all":
        words.append(f"role {filters['role']}")
    return ", ".join(words) or "none (every prediction run)"


def _version_table(report: dict[str, Any], key: str) -> str:
    labels = report.get("labels")
    labelled = any(quality_text(s) for s in report[key].values())
    timed = any(s.get("request_time_ms") for s in report[key].values())
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
        if labelled:
            cells += f"<td>{html.escape(quality_text(s) or '–')}</td>"
        own = s.get("request_time_ms")
        if timed:
            cells += ("".join(f"<td>{own[q]:.3f}</td>" for q in ("p50", "p95", "p99")) if own else "<td>–</td>" * 3)
        rows.append(f"<tr><th>{html.escape(v)}</th><td>{s['count']}</td><td>{s['share']:.1%}</td>"
                    f"<td>{lat['mean']:.3f}</td><td>{lat['p50']:.3f}<br><small>{ci50 or ''}</small></td>"
                    f"<td>{lat['p95']:.3f}<br><small>{ci95 or ''}</small></td><td>{lat['p99']:.3f}</td>{cells}</tr>")
    head = ("".join(f"<th>{html.escape(str(c))}</th>" for c in labels) if labels is not None else
            "".join(f"<th>predicted {k}</th>" for k in ("mean", "std", "p5", "p50", "p95")))
    if labelled:
        head += f"<th>{'accuracy' if labels is not None else 'mean abs. error'}<br><small>from feedback</small></th>"
    if timed:
        head += "".join(f"<th>request {q} ms</th>" for q in ("p50", "p95", "p99"))
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
                    f"<td>{_fmt(significant)}</td><td class=l>{_figures(figures, key)}</td></tr>")
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
                        f"<td>{_fmt(t['significant'])}</td><td class=l>{_figures(figures)}</td></tr>")
    return (f"<p>{html.escape(section['correction_name'])}-adjusted across {section['family_size']} tests "
            f"(versions × metrics), alpha {section['alpha']:g}.</p><table><tr><th>version</th><th>metric</th>"
            "<th>raw p</th><th>adjusted p</th><th>significant</th><th>figures</th></tr>" + "".join(rows) + "</table>")


def _sequential_table(section: dict[str, Any]) -> str:
    """The always-valid tests beside their fixed-horizon ones, as in the terminal."""
    pairs = section.get("pairs") or {section.get("b", ""): section.get("tests") or {}}
    rows = [(v, name, t) for v, tests in pairs.items() for name, t in tests.items()]
    if "sample_ratio" in (section.get("tests") or {}):
        rows.append(("all", "sample_ratio", section["tests"]["sample_ratio"]))
    body = []
    for v, name, t in rows:
        seq, fixed = t["always_valid"], t["fixed_horizon"]
        body.append(f"<tr><th>{html.escape(v)}</th><td class=l>{html.escape(name.replace('_', ' '))}</td>"
                    f"<td class=l>{html.escape(fixed['test'])}</td><td>{_fmt(fixed['p_value'])}</td>"
                    f"<td>{_fmt(seq['p_value'])}</td><td>{_fmt(seq.get('p_adjusted'))}</td>"
                    f"<td>{_fmt(seq.get('estimate'))}</td><td>{_fmt(seq.get('interval'))}</td></tr>")
    return (f"<p>Against the control {html.escape(str(section.get('a', '')))}, alpha {section['alpha']}: the "
            f"always-valid p-value is the running minimum over {section['looks']} looks, valid however often the "
            "report is run; the fixed-horizon one only for a single planned look.</p><table><tr><th>version</th>"
            "<th>test</th><th>fixed-horizon test</th><th>p</th><th>always-valid p</th><th>adjusted</th>"
            "<th>estimate</th><th>always-valid interval</th></tr>" + "".join(body) + "</table>")


def _recommendation(section: dict[str, Any]) -> str:
    items = "".join(f"<li class={c['decision'].split()[0]}><b>{html.escape(v)}: {html.escape(c['decision'])}</b>: "
                    f"{html.escape('; '.join(c['evidence']))}</li>"
                    for v, c in section["candidates"].items())
    return (f"<h2>Recommendation</h2><p>Each candidate against the control {html.escape(section['control'])} "
            f"(p-values {html.escape(section['correction'])}-adjusted, alpha {section['alpha']:g}).</p>"
            f"<ul>{items}</ul>")


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
                f"{report['n_records']} prediction records {html.escape(source_text(report))} · "
                f"{report.get('kind', '')} · filters: {html.escape(filters_text(report.get('filters') or {}))}</p>"]
    links = report.get("links") or {}
    if links.get("runs"):
        sections.append(f"<p>Prediction runs in MLflow: <a href='{html.escape(links['runs'])}'>"
                        f"{html.escape(links['runs'])}</a></p>")
    if report.get("recommendation"):
        sections.append(_recommendation(report["recommendation"]))
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
    quality = accuracy_chart(report)
    if quality:
        sections.append(f"<img alt='accuracy per version' src='{quality}'>")
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
    sequential = report.get("sequential") or {}
    if sequential.get("tests") or sequential.get("pairs"):
        sections.append("<h2>Always-valid tests</h2>" + _sequential_table(sequential))
    if report.get("bandit"):
        sections.append("<h2>Bandit</h2>" + bandit_html(report["bandit"]))
    sections.append("<h2>Tests</h2>" + _tests_table(report["tests"]))
    if shadow:
        sections.append("<h2>Shadow</h2>" + _shadow_table(shadow))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f4f4f4}td.l{text-align:left}.meta{color:#666}"
             ".warn{background:#fff4e5;border:1px solid #f0ad4e;padding:0.6em}li.promote{color:#1a7f37}"
             "li.keep{color:#b42318}img{max-width:100%;margin:0.5em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>A/B report</title><style>{style}</style>"
            f"</head><body>{''.join(sections)}</body></html>")
