"""A window's rows into an inference table (predictions, or feedback), exactly once: the window's
number in this spool's sequence of appends to that table (spool/commits.py) is the app transaction
version of the append (delta/appender.py), under the spool's identity as the app id."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from gateway.delta.appender import DeltaAppender, repeated
from gateway.delta.spec import PREDICTIONS, TableSection
from gateway.domain import contract
from gateway.spool.label_table import LabelRow
from gateway.spool.store import PredictionSpool

# The column that ties a row to its window: the same name as the window run's tag.
WINDOW_ID = contract.TAG_WINDOW_ID


class WindowTable:
    def __init__(self, spool: PredictionSpool, section: TableSection, name: str = PREDICTIONS) -> None:
        self.spool, self.name = spool, name
        self.uri = section.table_uri(name)
        self.appender = DeltaAppender(self.uri, section.storage_options)

    def app_id(self) -> str:
        return f"gateway-spool-{self.spool.commits.spool_id()}"

    def pending(self) -> str | None:
        """The window whose number is given but not committed, if any: it must be appended before the
        next one is numbered."""
        return self.spool.commits.pending(self.name)

    def append(self, batch_id: str, rows: pa.Table) -> int:
        """Append the window's rows (once); the table version that holds them."""
        seq, done = self.spool.commits.number(batch_id, self.name)
        version = self.spool.commits.table_version(batch_id) if done else None
        if version is not None:
            return version
        rows = rows.append_column(WINDOW_ID, repeated(batch_id, rows.num_rows))
        result = self.appender.append_once(rows, self.app_id(), seq, metadata={WINDOW_ID: batch_id, "table": self.name})
        self.spool.commits.committed(batch_id, result.version)
        return result.version


def labels_table(labels: Sequence[LabelRow]) -> pa.Table:
    """A feedback window's labels as rows: the label as its JSON text (a class name, an index, a number)."""
    return pa.table({
        "request_id": pa.array([lb.request_id for lb in labels], pa.string()),
        "row_index": pa.array([lb.row_index for lb in labels], pa.int64()),
        "model_version": pa.array([lb.model_version for lb in labels], pa.string()),
        "true_label": pa.array([json.dumps(lb.true_label) for lb in labels], pa.string()),
        "correct": pa.array([lb.correct for lb in labels], pa.bool_()),
        "abs_error": pa.array([lb.abs_error for lb in labels], pa.float64()),
        "reward": pa.array([lb.reward for lb in labels], pa.float64()),
        "trust": pa.array([lb.trust for lb in labels], pa.string()),
        "ts_ms": pa.array([lb.ts_ms for lb in labels], pa.int64()),
    })
