"""The report where the rows are: an SQL engine (DuckDB embedded, or Apache Spark) aggregates the
inference table, and the statistics run on the aggregates (docs/report.md, "Where the rows are").

    engines.py    DuckDB and Spark over the table's files; queries in DuckDB's dialect, sqlglot for Spark
    queries.py    the aggregate queries (filters, labels, samples)
    report.py     engine_report: the report's dict from the aggregates
    sequential.py the always-valid column from slices of time
    sections.py   shadow pairs and the bandit's IPW
    segments.py   segments, each narrowed in the engine
"""
