"""Routing changes recorded in MLflow: one run per change in the routing-changes experiment.

Each change is put in the durable outbox as it is made (the change itself is already in force), and
the outbox's sender creates its run once MLflow answers (gateway/routing/sender.py), exactly once:
the run is tagged with the item's key, looked for before a retry. Without an outbox file (the spool's
directory unwritable), one direct try from a background thread, logged when it fails."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from gateway.domain.messages import first_line
from gateway.mlflow.change_runs import deliver_change_run
from gateway.routing.table import RoutingChange
from gateway.spool.outbox import ItemKind, Outbox

log = logging.getLogger("gateway.changes")


class RoutingChangeRecorder:
    """A routing table's listener: each change made here becomes a run in MLflow."""

    def __init__(self, tracking_uri: str, experiment: str, outbox: Outbox | None = None,
                 poke: Callable[[], None] | None = None) -> None:
        """``experiment``: where the runs go ([mlflow] routing_changes_experiment); ``poke`` wakes the
        outbox's sender (gateway/routing/sender.py) for a new item."""
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.outbox = outbox
        self.poke = poke

    def __call__(self, change: RoutingChange) -> None:
        payload = {**change.to_dict(), "at_ms": int(time.time() * 1000), "experiment": self.experiment}
        if self.outbox is not None and self.poke is not None:
            try:
                self.outbox.add(ItemKind.CHANGE_RUN, payload, f"change log run of {change.old_config_hash} -> "
                                f"{change.config_hash} ({change.source})")
                self.poke()
                return
            except Exception as exc:
                log.error("routing change %s not put in the outbox (%s); one direct try", change.config_hash,
                          first_line(exc, 200))
        threading.Thread(target=self._direct, args=(payload,), name="routing-change-log", daemon=True).start()

    def _direct(self, payload: dict[str, Any]) -> None:
        try:
            deliver_change_run(self.tracking_uri, uuid.uuid4().hex, payload, maybe_landed=False)
        except Exception as exc:
            log.warning("routing change %s -> %s not recorded in MLflow: %s", payload["old_config_hash"],
                        payload["config_hash"], first_line(exc, 200))
