"""The gateway's exporter as a supervised child process at a lower CPU priority.

Why a process and not threads in the gateway: the exporter is mostly MLflow-client work in Python.
As threads it competes with request handling for the GIL, and on a small machine with the tracking
server for the CPU. As a niced process it gets its own interpreter, and the kernel gives serving
priority: under saturation the backlog waits (durably, in the spool) and drains when load drops.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gateway.config.settings import Settings

log = logging.getLogger("gateway.export")

SETTINGS_ENV = "GATEWAY_EXPORT_SETTINGS"  # the gateway's own settings, as JSON, for its exporter child


class ProcessExporter:
    def __init__(self, settings: Settings, nice: int = 10) -> None:
        self.settings = settings
        self.nice = nice
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._status_path: Path | None = None

    def _spawn(self) -> None:
        # Not in the spool's directory: when that disk is full, the child must still report, and drain.
        status = Path(tempfile.gettempdir()) / f"gateway-exporter-{os.getpid()}-{self.restarts}.json"
        self._status_path = status
        # The settings travel in the environment, not on the command line, where `ps` would show any
        # credentials in the tracking URI to every user of the machine.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.export", "--follow", "--nice", str(self.nice),
             "--status-file", str(status), "--parent-pid", str(os.getpid())],
            env={**os.environ, SETTINGS_ENV: self.settings.model_dump_json()},
        )

    def start(self) -> None:
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="exporter-supervisor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.wait(1.0):
            if self.proc is not None and self.proc.poll() is not None and not self._stopping.is_set():
                log.error("exporter process exited with code %s; restarting in %.0fs", self.proc.returncode, backoff)
                if self._stopping.wait(backoff):
                    return
                self.restarts += 1
                self._spawn()
                backoff = min(backoff * 2, 30.0)

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self._status_path is not None and self._status_path.exists():
            try:
                data = json.loads(self._status_path.read_text())
            except (OSError, ValueError):
                data = {}
        data["kind"] = "process"
        data["restarts"] = self.restarts
        data["alive"] = self.proc is not None and self.proc.poll() is None
        if "at" in data:
            # The child writes this every 0.5 s; a stale file means a child that is alive but stuck.
            data["status_age_seconds"] = round(time.time() - float(data["at"]), 1)
            if data["alive"] and data["status_age_seconds"] > 15:
                data["stalled"] = True
        return data

    def stop(self, grace_seconds: float) -> dict[str, Any]:
        """Ask the child to drain for the grace time and exit; wait a little longer than that."""
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_seconds + 15)
            except subprocess.TimeoutExpired:
                log.error("exporter did not stop within %.0fs; killing it (its leases will expire)", grace_seconds)
                self.proc.kill()
                self.proc.wait()
        final = self.status()
        if self._status_path is not None:
            for leftover in self._status_path.parent.glob(f"gateway-exporter-{os.getpid()}-*.json"):
                leftover.unlink(missing_ok=True)
        return final
