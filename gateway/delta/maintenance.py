"""Keeping the inference tables small in files: a window every 10 s is about 8,600 files a day per
replica. ``compact`` rewrites each day's small files into few large ones (the old ones stay, marked
removed, for readers of older versions); ``vacuum`` deletes removed files older than the retention,
after which versions before it can no longer be read (time travel ends there). Appends go on during
both: compaction only rewrites what it read, and Delta lets blind appends commit beside it.

One maintenance at a time: the caller holds a lock (python -m gateway.delta takes one next to the
spool); two compactions at once would conflict and one would fail, losing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

TARGET_FILE_BYTES = 128 * 1024 * 1024  # a compacted file's size goal (delta-rs's default is 100 MiB)


@dataclass(frozen=True)
class Maintained:
    table: str
    files_before: int
    files_after: int
    compacted: dict[str, Any] | None  # delta-rs's metrics: files added and removed, partitions optimized
    vacuumed: int  # files deleted (past the retention)

    def line(self) -> str:
        parts = [f"{self.table}: {self.files_before} -> {self.files_after} file(s)"]
        if self.compacted is not None:
            parts.append(f"compacted {self.compacted.get('numFilesRemoved', 0)} into "
                         f"{self.compacted.get('numFilesAdded', 0)} in {self.compacted.get('partitionsOptimized', 0)} "
                         "partition(s)")
        parts.append(f"vacuumed {self.vacuumed} file(s)")
        return ", ".join(parts)


def maintain(uri: str, *, compact: bool = True, vacuum_hours: float | None = None,
             storage_options: dict[str, str] | None = None) -> Maintained | None:
    """Compact the table at ``uri`` and, with ``vacuum_hours``, delete files removed longer ago than
    that. None when there is no table there yet."""
    try:
        table = DeltaTable(uri, storage_options=storage_options or None)
    except TableNotFoundError:
        return None
    before = len(table.file_uris())
    compacted = table.optimize.compact(target_size=TARGET_FILE_BYTES) if compact else None
    vacuumed: list[str] = []
    if vacuum_hours is not None:
        table = DeltaTable(uri, storage_options=storage_options or None)
        vacuumed = table.vacuum(retention_hours=int(vacuum_hours), dry_run=False,
                                enforce_retention_duration=vacuum_hours >= 168)
    after = len(DeltaTable(uri, storage_options=storage_options or None).file_uris())
    return Maintained(uri, before, after, compacted, len(vacuumed))
