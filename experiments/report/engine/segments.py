"""Segments on the engine path: comparisons.by_segment's figures, each segment narrowed in the engine."""

from __future__ import annotations

from typing import Any

import pandas as pd

from experiments.report.comparisons import SEGMENT_BINS, segment_family
from experiments.report.engine import compare as c
from experiments.report.engine import queries as q
from experiments.report.engine.engines import Engine
from experiments.report.engine.queries import Filters

QUARTILES = (0.0, 0.25, 0.5, 0.75, 1.0)

def segment_expression(engine: Engine, column: str) -> str | None:
    """The segment's value as SQL ("{p}" for the alias): an input column of the table, or a logged
    header; None when the table has neither."""
    if column.startswith("header:"):
        header = column.removeprefix("header:").lower().replace("'", "")
        return f"JSON_EXTRACT_STRING({{p}}headers, '$.{header}')"
    if f"features.{column}" not in engine.frame("SELECT * FROM predictions LIMIT 0").columns:
        return None
    return f"CAST({{p}}\"features.{column}\" AS VARCHAR)"


def segments(engine: Engine, f: Filters, column: str, control: str, labels: list[str], correction: str, seed: int,
              unit: str, min_records: int = 20) -> dict[str, Any]:
    """comparisons.by_segment on the engine: the quartiles (or values) of ``column``, then each
    segment's comparisons against the control, narrowed to it; one correction family of their own."""
    value = segment_expression(engine, column)
    what = (f"header {column.removeprefix('header:')!r} (is it in the gateway's [routing] log_headers?)"
            if column.startswith("header:") else f"{column!r} (an input column of the model)")
    if value is None:
        return {"by": column, "error": f"no record carries a value of {what}"}
    primary = f.narrowed(f"{value} IS NOT NULL")
    v = value.format(p="")
    stats = engine.frame(f"""
        SELECT COUNT(*) AS n, COUNT(TRY_CAST({v} AS DOUBLE)) AS numeric, COUNT(DISTINCT {v}) AS distinct_,
               {', '.join(f'QUANTILE_CONT(TRY_CAST({v} AS DOUBLE), {q}) AS q{i}' for i, q in enumerate(QUARTILES))}
        FROM predictions WHERE {primary.sql(role='primary')}""").iloc[0]
    if int(stats["n"]) == 0:
        return {"by": column, "error": f"no record carries a value of {what}"}
    if int(stats["numeric"]) == int(stats["n"]) and int(stats["distinct_"]) > SEGMENT_BINS:
        edges = sorted({float(stats[f"q{i}"]) for i in range(len(QUARTILES))})
        # pandas' own interval labels for these edges, as qcut makes them (precision 3, lowest included)
        names = [str(c) for c in pd.cut(pd.Series(edges), bins=edges, include_lowest=True, precision=3)
                 .cat.categories]
        cases = " ".join(f"WHEN TRY_CAST({value} AS DOUBLE) <= CAST('{edge!r}' AS DOUBLE) THEN {q.quote(name)}"
                         for edge, name in zip(edges[1:], names, strict=True))
        segment = f"CASE {cases} ELSE {q.quote(names[-1])} END"
        how = f"quartiles of the numeric column ({len(names)} bins)"
    else:
        segment, how = value, "the column's values"
    seg_sql = segment.format(p="")
    parts = engine.frame(f"SELECT {seg_sql} AS seg, model_version, COUNT(*) AS n FROM predictions "
                         f"WHERE {primary.sql(role='primary')} GROUP BY 1, 2")
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for seg in sorted(parts["seg"].astype(str).unique()):
        rows = parts[parts["seg"].astype(str) == seg]
        names = sorted(rows["model_version"].astype(str))
        if control not in names or len(names) < 2 or int(rows["n"].sum()) < min_records:
            skipped[seg] = (f"{int(rows['n'].sum())} records, versions {', '.join(names)}: too few to compare "
                            f"with {control}")
            continue
        results[seg] = c.compare_in(engine, primary.narrowed(f"{segment} = {q.quote(seg)}"), names, control, labels,
                                   unit, seed)
    return segment_family(column, how, control, results, skipped, correction)
