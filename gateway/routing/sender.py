"""What routing changes owe MLflow, delivered from the durable outbox (gateway/spool/outbox.py):
the champion alias after a promotion, and each change's run in the routing-changes experiment.

One sender thread per process; the outbox lets one of them work at a time, oldest item first, and
retries with backoff (0.5 s doubling to ``[mlflow] retry_max_seconds``) until MLflow has it. Each
item lands exactly once: an alias move is idempotent, and a change's run carries the item's key
(tag ``change_id``), looked for before a retry creates it again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gateway.domain.messages import first_line
from gateway.domain.workers import PeriodicWorker
from gateway.mlflow.change_runs import deliver_change_run
from gateway.mlflow.client import check_tracking_server, set_alias
from gateway.spool.outbox import Item, ItemKind, Outbox

log = logging.getLogger("gateway.outbox")

ALIAS = "champion"


def set_champion(tracking_uri: str, model: str, version: str) -> None:
    """Point the registry's ``champion`` alias at one model version (raises on any failure)."""
    set_alias(tracking_uri, model, ALIAS, version)


class OutboxSender(PeriodicWorker):
    """The outbox's sender thread: one item at a time, oldest first, until MLflow has each."""

    def __init__(self, outbox: Outbox, tracking_uri: str, idle_s: float = 1.0, check_timeout_s: float = 2.0,
                 retry_max_s: float = 30.0) -> None:
        super().__init__("mlflow-outbox", idle_s)
        self.outbox = outbox
        self.retry_max_s = retry_max_s
        self.tracking_uri = tracking_uri
        self.check_timeout_s = check_timeout_s
        self._done = threading.Condition()

    def wait(self, item_id: int, timeout_s: float) -> bool:
        """Whether the item reached MLflow within ``timeout_s`` (by this sender or another process's)."""
        with self._done:
            return self._done.wait_for(lambda: self.outbox.is_done(item_id), timeout=timeout_s)

    def round(self) -> bool:
        """Send the oldest item due, if any (True: one was tried, look again at once)."""
        try:
            item = self.outbox.claim()
        except Exception as exc:  # a locked outbox file: the next round
            log.debug("outbox not read: %s", first_line(exc, 200))
            return False
        if item is None:
            return False
        self._send(item)
        return True

    def _send(self, item: Item) -> None:
        try:
            # A quick health check first: MLflow's client retries an unreachable server for minutes,
            # which would hold this thread (and a shutdown) that long.
            problem = check_tracking_server(self.tracking_uri, timeout=self.check_timeout_s)
            if problem is not None:
                raise ConnectionError(f"MLflow unreachable at {self.tracking_uri}: {problem}")
            if item.kind is ItemKind.CHAMPION_ALIAS:
                set_champion(self.tracking_uri, item.payload["model"], item.payload["version"])
            else:
                deliver_change_run(self.tracking_uri, item.key, item.payload, maybe_landed=item.attempts > 0)
        except Exception as exc:
            retry = min(self.retry_max_s, 0.5 * 2 ** min(item.attempts, 10))
            log.warning("%s not in MLflow yet (attempt %d, again in %.1f s): %s", item.summary, item.attempts + 1,
                        retry, first_line(exc, 200))
            self.outbox.failed(item.id, first_line(exc, 300), retry)
            return
        self.outbox.done(item.id)
        log.info("in MLflow: %s%s", item.summary, f" (after {item.attempts + 1} attempts)" if item.attempts else "")
        with self._done:
            self._done.notify_all()

    def stop(self, timeout: float = 0.5) -> None:
        """Stop looking; an MLflow call in progress is not waited for long (its item's lease goes back
        to the next sender, who looks before it writes again)."""
        super().stop(timeout)


class Champion:
    """Moves the ``champion`` alias through the outbox; answers at once whether MLflow has it yet."""

    def __init__(self, outbox: Outbox | None, sender: OutboxSender | None, tracking_uri: str,
                 wait_s: float = 2.0) -> None:
        self.outbox, self.sender, self.tracking_uri, self.wait_s = outbox, sender, tracking_uri, wait_s

    def move(self, variant: str, registered: tuple[str, str] | None) -> dict[str, Any]:
        alias: dict[str, Any] = {"alias": ALIAS, "moved": False}
        if registered is None:
            alias["reason"] = "the variant's model is not a registry model version"
            return alias
        model, version = registered
        alias.update(model=model, version=version)
        if self.outbox is None or self.sender is None:  # no outbox file: one direct try, as a last resort
            try:
                set_champion(self.tracking_uri, model, version)
            except Exception as exc:
                alias["reason"] = f"MLflow refused or is unreachable: {first_line(exc, 200)}"
                log.error("promote %s: routing changed but the champion alias was not moved: %s", variant,
                          alias["reason"])
                return alias
            alias["moved"] = True
            return alias
        item = self.outbox.add(ItemKind.CHAMPION_ALIAS, {"variant": variant, "model": model, "version": version},
                               f"champion alias of {model} to version {version} ({variant})")
        self.sender.poke()
        if self.sender.wait(item, self.wait_s):
            alias["moved"] = True
            log.info("champion alias of %s moved to version %s (%s)", model, version, variant)
        else:
            alias.update(pending=True, reason="MLflow has not taken it yet: the move waits in the outbox and lands "
                                              "once MLflow answers (GET /rollout lists it as pending)")
        return alias
