"""Where the report's heavy work runs: an SQL engine over the inference tables, not pandas.

Every query is written once, in DuckDB's dialect (experiments/report/engine/queries.py), and runs as it
is on DuckDB (embedded, the default) or transpiled by sqlglot for Apache Spark (``--engine spark``).

Both read the Delta tables' current files (``DeltaTable.file_uris()``: the table is append-only and
compaction keeps its rows, so its current files are its rows) with the ``day`` partition taken from
the paths, so a filter on ``day`` skips whole directories. DuckDB scans them as a pyarrow dataset
(projection and filters pushed into the scan; local paths and S3 through pyarrow's own filesystem,
so no DuckDB extension has to be downloaded). Only the aggregates come back to Python.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Protocol

import pandas as pd

from gateway.delta.spec import FEEDBACK, PREDICTIONS, TableSection

DUCKDB_MEMORY_LIMIT = "1500MB"  # DuckDB's memory_limit for the report (compare --memory-limit)


class Engine(Protocol):
    name: str
    tables: dict[str, bool]  # table name -> whether it exists (feedback may not, yet)
    timings: list[tuple[str, float]]  # (the query's function, seconds), in order: the report's stages

    def frame(self, sql: str) -> pd.DataFrame:
        """The result of ``sql`` (DuckDB's dialect; views ``predictions`` and ``feedback``)."""
        ...

    def prepare(self, name: str, sql: str) -> None:
        """Compute ``sql`` once and keep it as the relation ``name`` for the queries after (a small
        relation several queries join, such as each prediction's first label)."""
        ...

    def close(self) -> None: ...


class TableMissing(Exception):
    """No predictions table at the configured URI."""


def _files(section: TableSection, name: str) -> list[str] | None:
    """The table's current data files, or None when there is no table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(section.table_uri(name), storage_options=section.storage_options or None)
    except TableNotFoundError:
        return None
    return list(table.file_uris())


def _filesystem(section: TableSection) -> tuple[Any, str]:
    """pyarrow's filesystem for the table root, and the root as that filesystem names it."""
    from pyarrow import fs

    uri = section.uri
    if uri.startswith(("s3://", "s3a://")):
        opts = {k.upper(): v for k, v in section.storage_options.items()}
        endpoint = opts.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        scheme = "http" if endpoint and endpoint.startswith("http://") else "https"
        s3 = fs.S3FileSystem(
            access_key=opts.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=opts.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY"),
            region=opts.get("AWS_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            endpoint_override=endpoint.split("://", 1)[1] if endpoint else None, scheme=scheme)
        return s3, uri.split("://", 1)[1]
    return fs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://"))


def arrow_dataset(section: TableSection, name: str) -> Any:
    """The table's current files as one pyarrow dataset, ``day`` from the hive-style paths; None
    when the table does not exist."""
    import pyarrow.dataset as ds

    files = _files(section, name)
    if files is None:
        return None
    filesystem, root = _filesystem(section)
    base = f"{root.rstrip('/')}/{name}"
    paths = [f.split("://", 1)[1] if "://" in f else f for f in files]
    if not paths:
        return None
    return ds.dataset(paths, filesystem=filesystem, format="parquet", partitioning="hive",
                      partition_base_dir=base)


class DuckDBEngine:
    name = "duckdb"

    def __init__(self, section: TableSection, *, threads: int | None = None,
                 memory_limit: str = DUCKDB_MEMORY_LIMIT) -> None:
        import tempfile

        import duckdb

        self.section = section
        # Past the limit DuckDB spills its aggregates, joins and sorts to disk instead of growing.
        self._spill = tempfile.TemporaryDirectory(prefix="report-duckdb-")
        config = {"memory_limit": memory_limit, "temp_directory": self._spill.name}
        if threads is not None:
            config["threads"] = str(threads)
        self.con = duckdb.connect(config=config)
        self.tables: dict[str, bool] = {}
        self.timings: list[tuple[str, float]] = []
        local = not section.uri.startswith(("s3://", "s3a://"))
        for name in (PREDICTIONS, FEEDBACK):
            if local:  # DuckDB's own Parquet reader: about twice the pyarrow dataset's speed here
                files = _files(section, name)
                self.tables[name] = bool(files)
                if files:
                    paths = [f.removeprefix("file://") for f in files]
                    self.con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({paths!r}, "
                                     "hive_partitioning = true, union_by_name = true)")
                continue
            dataset = arrow_dataset(section, name)  # S3 through pyarrow's filesystem: no extension to download
            self.tables[name] = dataset is not None
            if dataset is not None:
                self.con.register(name, dataset)
        if not self.tables[PREDICTIONS]:
            raise TableMissing(f"no predictions table at {section.table_uri(PREDICTIONS)}")

    def prepare(self, name: str, sql: str) -> None:
        started = time.perf_counter()
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")
        self.timings.append((f"prepare {name}", time.perf_counter() - started))

    def frame(self, sql: str) -> pd.DataFrame:
        started = time.perf_counter()
        out = self.con.execute(sql).df()
        self.timings.append((sys._getframe(1).f_code.co_name, time.perf_counter() - started))
        return out

    def close(self) -> None:
        self.con.close()
        self._spill.cleanup()


def spark_sql(sql: str) -> str:
    """A query in DuckDB's dialect, for Spark. DuckDB's exact, interpolated ``QUANTILE_CONT`` becomes
    Spark's ``PERCENTILE``: exact and interpolated the same way, and it counts each distinct value
    once (the gateway's latencies have microsecond resolution, so few), where ``percentile_approx``
    returns one of the values, up to a whole gap between two of them away on a small group."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")

    def exact(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.PercentileCont):
            return exp.Quantile(this=node.this, quantile=node.expression)
        return node

    return tree.transform(exact).sql(dialect="spark")


class SparkEngine:
    name = "spark"

    def __init__(self, section: TableSection, master: str = "local[2]", *, memory: str = "2g") -> None:
        from pyspark.sql import SparkSession

        self.section = section
        builder = (SparkSession.builder.master(master).appName("gateway-report")
                   .config("spark.driver.memory", memory)
                   .config("spark.sql.session.timeZone", "UTC")
                   .config("spark.ui.enabled", "false"))
        if master.startswith("local"):
            # Spark's 200 shuffle partitions are sized for a cluster: on one machine each aggregate would
            # pay for 200 tiny tasks. A cluster keeps its own setting.
            builder = builder.config("spark.sql.shuffle.partitions", str(4 * (os.cpu_count() or 2)))
        self.spark = builder.getOrCreate()
        self.tables = {}
        self.timings = []
        self._frames: dict[str, Any] = {}
        for name in (PREDICTIONS, FEEDBACK):
            files = _files(section, name)
            self.tables[name] = bool(files)
            if files:
                base = section.table_uri(name)
                self._frames[name] = (self.spark.read.option("basePath", base).option("mergeSchema", "true")
                                      .parquet(*files))
        if not self.tables[PREDICTIONS]:
            raise TableMissing(f"no predictions table at {section.table_uri(PREDICTIONS)}")

    def frame(self, sql: str) -> pd.DataFrame:
        # The session is the process's; another engine on it may have named other tables the same.
        started = time.perf_counter()
        for name, frame in self._frames.items():
            frame.createOrReplaceTempView(name)
        out = self.spark.sql(spark_sql(sql)).toPandas()
        self.timings.append((sys._getframe(1).f_code.co_name, time.perf_counter() - started))
        return out

    def prepare(self, name: str, sql: str) -> None:
        started = time.perf_counter()
        for view, frame in self._frames.items():
            frame.createOrReplaceTempView(view)
        self._frames[name] = self.spark.sql(spark_sql(sql)).cache()
        self._frames[name].count()  # computed now, kept in memory for the queries after
        self.timings.append((f"prepare {name}", time.perf_counter() - started))

    def close(self) -> None:
        for frame in self._frames.values():
            frame.unpersist()
        # the session stays for the process (tests share one); SparkSession.stop() ends it


ENGINES = ("duckdb", "spark")


def open_engine(name: str, section: TableSection, *, spark_master: str = "local[2]",
                memory_limit: str = DUCKDB_MEMORY_LIMIT) -> Engine:
    if name == "duckdb":
        return DuckDBEngine(section, memory_limit=memory_limit)
    if name == "spark":
        return SparkEngine(section, spark_master)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {name!r}")
