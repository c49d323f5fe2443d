"""The export side: spooled predictions and labels to MLflow, off the request path, exactly once.

The app sees one ``Exporter`` (start, stop, status): threads in the gateway (export/runner.py) or a
supervised child process (export/process.py); which one is a setting, never an ``isinstance``. Both
are built by gateway/wiring/exporter.py.
"""

from __future__ import annotations

from typing import Any, Protocol


class Exporter(Protocol):
    def start(self) -> None: ...

    def stop(self, grace_seconds: float) -> Any: ...

    def status(self) -> dict[str, Any]: ...
