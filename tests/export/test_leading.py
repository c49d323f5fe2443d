"""One exporter per spool: the worker holding the lock exports, the others stand by and take over."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gateway.export.leading import LOCK_NAME, LeadingExporter


class Recorder:
    """An exporter that records what it was asked (the wrapper's logic is what is tested)."""

    def __init__(self, events: list[str], name: str) -> None:
        self.events, self.name = events, name

    def start(self) -> None:
        self.events.append(f"{self.name} start")

    def stop(self, grace_seconds: float) -> Any:
        self.events.append(f"{self.name} stop {grace_seconds}")
        return {"left": 0}

    def status(self) -> dict[str, Any]:
        return {"kind": "thread", "alive": True, "workers": 1}


def _until(check: Any, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def _two_started(tmp_path: Path, events: list[str], names: tuple[str, str]) -> tuple[LeadingExporter, ...]:
    """Two exporters on one spool's lock, started in order: the first leads."""
    exporters = tuple(LeadingExporter(lambda n=name: Recorder(events, n), tmp_path / LOCK_NAME, poll_seconds=0.05)
                      for name in names)
    for exporter in exporters:
        exporter.start()
    return exporters


def test_only_the_lock_holder_exports_and_a_standby_takes_over(tmp_path: Path) -> None:
    events: list[str] = []
    first, second = _two_started(tmp_path, events, ("first", "second"))
    time.sleep(0.2)  # several polls: the second must not start while the first holds the lock
    assert events == ["first start"]
    assert first.status()["leads"] is True and first.status()["kind"] == "thread"
    standby = second.status()
    assert standby == {"kind": "standby", "leads": False, "alive": True, "workers": 0, "stalled": False,
                       "leader_pid": os.getpid()}

    assert first.stop(3.0) == {"left": 0}
    assert _until(lambda: second.leads), "the standby never took over the released lock"
    assert events == ["first start", "first stop 3.0", "second start"]
    second.stop(1.0)
    assert events[-1] == "second stop 1.0"


def test_a_standby_stopped_before_it_leads_never_starts_an_exporter(tmp_path: Path) -> None:
    events: list[str] = []
    leader, standby = _two_started(tmp_path, events, ("leader", "standby"))
    final = standby.stop(5.0)
    assert final["kind"] == "standby" and final["alive"] is False
    leader.stop(0.0)
    time.sleep(0.2)
    assert events == ["leader start", "leader stop 0.0"]
    # The lock is free again: a new exporter on the spool leads at once.
    fresh = LeadingExporter(lambda: Recorder(events, "fresh"), tmp_path / LOCK_NAME)
    fresh.start()
    assert fresh.leads and events[-1] == "fresh start"
    fresh.stop(0.0)


def test_the_lock_file_names_the_leading_process(tmp_path: Path) -> None:
    exporter = LeadingExporter(lambda: Recorder([], "x"), tmp_path / LOCK_NAME)
    exporter.start()
    assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
    exporter.stop(0.0)
