"""The durable local log: one SQLite wrapper, the rows, the schema, the export queue, labels, the writer."""
