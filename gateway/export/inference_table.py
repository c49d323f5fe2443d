"""A window's rows into the predictions table, exactly once: the window's number in this spool's
sequence of appends (spool/commits.py) is the app transaction version of the append
(delta/appender.py), under the spool's identity as the app id."""

from __future__ import annotations

import pyarrow as pa

from gateway.delta.appender import DeltaAppender
from gateway.delta.spec import PREDICTIONS, TableSection
from gateway.spool.store import PredictionSpool

WINDOW_ID = "window_id"  # the column that ties a row to its window (and its MLflow run)


class WindowTable:
    def __init__(self, spool: PredictionSpool, section: TableSection) -> None:
        self.spool = spool
        self.uri = section.table_uri(PREDICTIONS)
        self.appender = DeltaAppender(self.uri, section.storage_options)

    def app_id(self) -> str:
        return f"gateway-spool-{self.spool.commits.spool_id()}"

    def pending(self) -> str | None:
        """The window whose number is given but not committed, if any: it must be appended before the
        next one is numbered."""
        return self.spool.commits.pending(PREDICTIONS)

    def append(self, batch_id: str, rows: pa.Table) -> int:
        """Append the window's rows (once); the table version that holds them."""
        seq, done = self.spool.commits.number(batch_id, PREDICTIONS)
        version = self.spool.commits.table_version(batch_id) if done else None
        if version is not None:
            return version
        rows = rows.append_column(WINDOW_ID, pa.array([batch_id] * rows.num_rows, pa.string()))
        result = self.appender.append_once(rows, self.app_id(), seq, metadata={WINDOW_ID: batch_id})
        self.spool.commits.committed(batch_id, result.version)
        return result.version
