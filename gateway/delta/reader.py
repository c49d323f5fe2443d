"""Reading rows back from an inference table by SQL (delta-rs's DataFusion engine): the report's
window runs name their table and window id, and their rows are read from it, not downloaded."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")


def read_windows(uri: str, window_ids: Sequence[str], storage_options: dict[str, str] | None = None) -> pa.Table:
    """The rows of the windows named (``window_id`` column) from the table at ``uri``."""
    ids = sorted(set(window_ids))
    if not ids:
        return pa.table({})
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise ValueError(f"not a window id: {bad[0]!r}")
    table = DeltaTable(uri, storage_options=storage_options or None)
    listed = ", ".join(f"'{i}'" for i in ids)
    result = QueryBuilder().register("predictions", table).execute(
        f"SELECT * FROM predictions WHERE window_id IN ({listed})")
    return _plain(pa.table(result.read_all()))


def _plain(table: pa.Table) -> pa.Table:
    """DataFusion's string views as plain strings, which every pyarrow and pandas operation takes."""
    columns = [c.cast(pa.string()) if pa.types.is_string_view(c.type) else c for c in table.columns]
    return pa.table(columns, names=table.column_names)
