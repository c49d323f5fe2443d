"""One deciding process among a gateway's workers: whoever holds an exclusive lock on a file next to
the spool. The lock goes with the process (a killed worker's lock is released by the kernel), so
another worker takes over at its next try."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any


class LeaderLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def try_acquire(self) -> bool:
        """True if this process holds the lock (now or already); never waits."""
        if self._handle is not None:
            return True
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as this process leads
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def write(self, text: str) -> None:
        """Replace the lock file's text (who holds it, for humans and standby processes); only the
        holder writes."""
        if self._handle is None:
            raise RuntimeError(f"{self.path} is not held by this process")
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(text)
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
