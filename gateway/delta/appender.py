"""Appending to a Delta table exactly once: each append carries an app transaction (app id, version),
and an append whose version the table already holds for that app id is not made again.

delta-rs records the transaction but leaves the check to the writer: ``append_once`` reads the table's
version for the app id first. Two writers of one app id at once (a lease that ran out while its holder
still wrote) cannot both commit: delta-rs refuses the second as a concurrent transaction of the same
app id, and the check is made again. Writers of other app ids (other replicas' spools) append side by
side under Delta's optimistic concurrency.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

PARTITION = "day"  # the UTC day of ts_ms, 2026-12-07: a day's rows are read without the rest
# Set when the table is made. A window every 10 s is 8,640 commits a day: kept 30 days (Delta's default)
# the log directory would hold 259,000 files that every open lists. Two days of log is enough to read
# any version since the last maintenance; older versions end with the vacuum anyway.
TABLE_PROPERTIES = {"delta.logRetentionDuration": "interval 2 days"}


@dataclass(frozen=True)
class Appended:
    version: int  # a version of the table that holds the rows
    appended: bool  # False: an earlier try had committed them


class DeltaAppender:
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None, retries: int = 3) -> None:
        self.uri = uri
        self.storage_options = storage_options or None
        self.retries = retries

    def _open(self) -> DeltaTable | None:
        """The table at its newest version, opened afresh: from its last checkpoint and the commits
        after it. (One table object brought up to date commit by commit grew slower faster: 22 ms an
        append at first, 164 ms after 1,500 commits, against 45 and 93 ms opened afresh.)"""
        try:
            return DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def append_once(self, rows: pa.Table, app_id: str, version: int,
                    metadata: dict[str, Any] | None = None) -> Appended:
        """Append ``rows`` as app transaction ``version`` of ``app_id``, unless the table holds it."""
        rows = with_day(rows)
        for attempt in range(self.retries + 1):
            table = self._open()
            if table is not None and int(table.transaction_version(app_id) or 0) >= version:
                return Appended(table.version(), False)
            try:
                write_deltalake(table if table is not None else self.uri, rows, mode="append",
                                configuration=TABLE_PROPERTIES if table is None else None,
                                partition_by=[PARTITION], schema_mode="merge", storage_options=self.storage_options,
                                commit_properties=CommitProperties(
                                    custom_metadata={k: str(v) for k, v in (metadata or {}).items()},
                                    app_transactions=[Transaction(app_id, version, int(time.time() * 1000))]))
            except CommitFailedError:
                if attempt == self.retries:
                    raise
                continue  # another writer's commit came first: look again
            after = self._open()
            assert after is not None
            return Appended(after.version(), True)
        raise AssertionError("unreachable")


def repeated(value: str, n: int) -> pa.DictionaryArray:
    """``value`` ``n`` times as dictionary-encoded text: one string and an index per row. delta-rs
    writes dictionary-encoded text as the table's plain string type (Parquet encodes it by dictionary
    either way); casting a 500,000-row window's text columns to plain strings first cost a fifth of
    its append (measured here), for the same files."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], pa.string()))


_MS_PER_DAY = 86_400_000
_EPOCH = dt.date(1970, 1, 1)


def with_day(rows: pa.Table) -> pa.Table:
    """The partition column: each row's UTC day, from its ts_ms."""
    if PARTITION in rows.column_names:
        return rows
    # A window spans a day or two: each day's text is made once and taken by index, a fourteenth of
    # the time of formatting every row's timestamp (50,000 rows: 3.4 ms against 47 ms, measured here).
    day = np.floor_divide(rows["ts_ms"].to_numpy(zero_copy_only=False), _MS_PER_DAY)
    unique, index = np.unique(day, return_inverse=True)
    names = pa.array([(_EPOCH + dt.timedelta(days=int(d))).isoformat() for d in unique], pa.string())
    return rows.append_column(PARTITION, names.take(pa.array(index.reshape(-1))))  # plain: delta-rs partitions by it
