"""The prediction log as open tables in Delta Lake (delta-rs: no JVM): ``<[table] uri>/predictions``
and ``<uri>/feedback``, appended exactly once per window by Delta's own app transactions, partitioned
by day, readable by any engine that reads Delta (docs/inference-table.md)."""
