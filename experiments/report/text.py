"""The report as text, for the terminal."""

from __future__ import annotations

from typing import Any

from experiments.report.bandit import render as render_bandit
from experiments.report.comparisons import render as render_comparisons
from experiments.report.comparisons import render_segments
from experiments.report.recommend import render as render_recommendation
from experiments.report.sequential import render as render_sequential


def source_text(report: dict[str, Any]) -> str:
    """Where the report's figures came from: the runs read into pandas, or an engine's aggregates."""
    source = report.get("source") or {}
    if source.get("path") == "engine":
        return f"aggregated by {source.get('engine')} in the inference table {source.get('table')}"
    return f"from {report.get('n_runs', '?')} runs in experiment {report.get('experiment', '?')}, read into pandas"


def render_terminal(report: dict[str, Any]) -> str:
    lines = [f"A/B report {report.get('report_id', '')}: {report['n_records']} prediction records "
             f"{source_text(report)} (in {report.get('read_seconds', '?')} s)", ""]
    if report.get("engine_note"):
        lines[-1:] = [f"({report['engine_note']})", ""]
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    if report.get("warnings"):
        lines.append("")
    labels = report.get("labels")
    for title, key in (("answered traffic (role primary)", "versions"), ("shadow scoring (role shadow)",
                                                                           "shadow_versions")):
        versions = report[key]
        if not versions:
            continue
        lines.append(title)
        extra = ("  ".join(f"{str(lbl)[:10]:>10}" for lbl in labels) if labels is not None
                 else f"{'pred mean':>10} {'pred p50':>10} {'pred p95':>10}")
        quality = _quality_cells(versions)
        if quality:
            extra += f"  {'accuracy' if labels is not None else 'MAE':>16}"
        lines.append(f"  {'version':<8} {'count':>7} {'share':>7} {'mean':>7} {'p50':>7} {'p50 95% CI':>17} "
                     f"{'p95':>7} {'p99':>7}   " + extra)
        for v, s in versions.items():
            lat = s["latency_ms"]
            ci = lat["p50_ci"]
            ci_text = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"
            if labels is not None:
                cells = "  ".join(f"{s['class_shares'][str(lbl)]:>10.1%}" for lbl in labels)
            else:
                p = s["predictions"]
                cells = f"{p['mean']:>10.4g} {p['p50']:>10.4g} {p['p95']:>10.4g}"
            if quality:
                cells += f"  {quality[v]:>16}"
            lines.append(f"  {v:<8} {s['count']:>7} {s['share']:>7.1%} {lat['mean']:>7.3f} {lat['p50']:>7.3f} "
                         f"{ci_text:>17} {lat['p95']:>7.3f} {lat['p99']:>7.3f}   {cells}")
        lines.append("  (latency in ms: the model's own predict time; a batched call's, shared by its rows)")
        timed = {v: s for v, s in versions.items() if s.get("request_time_ms")}
        if timed:
            lines.append(f"  {'version':<8} {'request p50':>12} {'request p95':>12} {'request p99':>12} "
                         f"{'rows/call':>10}")
            for v, s in timed.items():
                own = s["request_time_ms"]
                lines.append(f"  {v:<8} {own['p50']:>12.3f} {own['p95']:>12.3f} {own['p99']:>12.3f} "
                             f"{s.get('batch_rows_mean', float('nan')):>10.2f}")
            lines.append("  (request: its own time in the gateway, queueing for the model included, in ms)")
        lines.append("")
    shadow = report.get("shadow")
    if shadow and shadow.get("confusion"):
        names = shadow["confusion"]["labels"]
        lines.append(f"shadow confusion (rows: {shadow['primary']} primary, columns: {shadow['candidate']})")
        lines.append("  " + " " * 11 + "".join(f"{str(n)[:10]:>11}" for n in names))
        for label, row in zip(names, shadow["confusion"]["matrix"], strict=True):
            lines.append(f"  {str(label)[:10]:<11}" + "".join(f"{x:>11}" for x in row))
        lines.append("")
    lines += render_comparisons(report.get("comparisons"))
    lines += render_segments(report.get("segments"))
    lines += render_sequential(report.get("sequential") or {})
    lines += render_bandit(report.get("bandit"))
    lines.append("verdicts")
    lines += [f"  - {v}" for v in report["verdicts"]]
    links = report.get("links") or {}
    if links.get("runs"):
        lines += ["", f"prediction runs in MLflow: {links['runs']}"]
    recommendation = render_recommendation(report.get("recommendation"))
    if recommendation:
        lines += ["", *recommendation]
    return "\n".join(lines)


def quality_text(s: dict[str, Any]) -> str | None:
    """A version's accuracy (or mean absolute error) and its labelled count, e.g. "96.2% (n=210)"."""
    if s.get("accuracy"):
        return f"{s['accuracy']['rate']:.1%} (n={s['accuracy']['n']})"
    if s.get("error"):
        return f"{s['error']['mae']:.4g} (n={s['error']['n']})"
    return None


def _quality_cells(versions: dict[str, Any]) -> dict[str, str]:
    """The accuracy column's cells, when any version has labels ("-" for one that has none)."""
    cells = {v: quality_text(s) for v, s in versions.items()}
    return {v: c or "-" for v, c in cells.items()} if any(cells.values()) else {}
