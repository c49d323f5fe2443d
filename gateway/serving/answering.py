"""One request's way through the pipeline, whatever carried it: submit, wait for the committed
records, finish. The HTTP routes and the gRPC service both answer through ``answer``; what differs
between them (where the forced version and the sticky key come from, how a client that went away
is noticed) comes in as arguments.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.domain.errors import ClientGone, RequestTimeout
from gateway.security.receipts import ReceiptSigner
from gateway.serving.outcome import Committed, PredictionOutcome, ScoredRequest
from gateway.serving.pipeline import Pending, Scorer

# A request still waiting after this long starts watching its client and its deadline (one task);
# the many that are answered sooner cost one timer.
WATCH_AFTER_S = 0.2

Gone = Callable[[], Awaitable[object]]  # returns once the client has gone away


@dataclass(frozen=True, slots=True)
class Answered:
    scored: ScoredRequest
    outcome: PredictionOutcome

    @property
    def labels(self) -> list[Any]:
        return self.outcome.predictions.labels

    @property
    def probabilities(self) -> list[dict[str, float]] | None:
        return self.outcome.predictions.probabilities


@dataclass(frozen=True, slots=True)
class Notes:
    """What an answer tells its client beside the predictions, whatever carries it (HTTP headers,
    gRPC response parameters)."""

    request_id: str
    reason: str
    version: str | None  # None under [routing] reveal_version = false (a blind test)
    replayed: bool
    unlogged: bool  # the log is on and this answer's rows were not logged (on_log_failure = "serve")
    receipt: str | None  # lets this client label its own rows (POST /feedback); None when not logged

    def named(self, reason: str, replayed: str, unlogged: str, receipt: str) -> dict[str, str]:
        """The notes a transport sends, under its own names: the reason always, the others when they
        say something (a replay "true", an unlogged answer "false", the receipt)."""
        out = {reason: self.reason}
        if self.replayed:
            out[replayed] = "true"
        if self.unlogged:
            out[unlogged] = "false"
        if self.receipt is not None:
            out[receipt] = self.receipt
        return out


def notes(answered: Answered, *, reveal_version: bool, logging_enabled: bool,
          receipts: ReceiptSigner | None) -> Notes:
    outcome = answered.outcome
    receipt = receipts.issue(outcome.request_id, len(outcome.predictions)) \
        if outcome.logged and receipts is not None else None
    return Notes(outcome.request_id, outcome.reason, outcome.model_version if reveal_version else None,
                 outcome.replayed, logging_enabled and not outcome.logged, receipt)


@dataclass(frozen=True, slots=True)
class Ask:
    """What a protocol decoded from a request, beside its rows."""

    forced: str | None = None
    user_key: str | None = None
    request_id: str | None = None
    probabilities: bool = False
    params: dict[str, Any] | None = None
    headers: str = ""  # the logged headers (or gRPC metadata), JSON text; "" when none


async def answer(scorer: Scorer, rows: Sequence[Any], ask: Ask, *, timeout_ms: float, gone: Gone | None,
                 on_response: Callable[[str | None, str | None, int], None]) -> Answered:
    """Route, then wait: the variant's batcher thread validates and predicts, and the spool's writer
    thread commits the records, before this answers. The event loop does none of that work.
    ``timeout_ms`` (0: none) cancels the request past it (RequestTimeout); ``gone`` cancels it when
    the client leaves first (ClientGone). Either way it is not logged."""
    pending = scorer.submit(rows, forced=ask.forced or None, user_key=ask.user_key or None,
                            request_id=ask.request_id, probabilities=ask.probabilities,
                            params=ask.params or None, headers=ask.headers)
    scored, write_error = await _committed(pending, timeout_ms, gone)
    outcome = scorer.finish(scored, write_error)
    on_response(outcome.model_version, outcome.reason, 200)
    return Answered(scored, outcome)


class _Watch:
    """Cancels a pending request when its client goes away or its deadline passes."""

    def __init__(self, future: asyncio.Future[Committed], deadline: float | None, gone: Gone | None) -> None:
        self.future, self.deadline, self.gone = future, deadline, gone
        self.verdict: str | None = None  # "gone" or "timeout", once it cancelled the request
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        gone = asyncio.ensure_future(self.gone()) if self.gone is not None else None
        timeout = None if self.deadline is None else max(0.0, self.deadline - asyncio.get_running_loop().time())
        waited: set[asyncio.Future[Any]] = {self.future, *([gone] if gone is not None else [])}
        try:
            done, _ = await asyncio.wait(waited, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if gone is not None:
                gone.cancel()
        if not self.future.done():
            self.verdict = "gone" if gone is not None and gone in done else "timeout"
            self.future.cancel()


async def _committed(pending: Pending, timeout_ms: float, gone: Gone | None) -> Committed:
    """The scored request once its records are committed; RequestTimeout past ``timeout_ms`` (0: none),
    ClientGone when the client goes away first. Either cancels it: queued work is dropped, unlogged."""
    loop = asyncio.get_running_loop()
    future = asyncio.wrap_future(pending)
    watch = _Watch(future, loop.time() + timeout_ms / 1000.0 if timeout_ms else None, gone)
    handle = loop.call_later(min(WATCH_AFTER_S, timeout_ms / 1000.0) if timeout_ms else WATCH_AFTER_S, watch.start)
    try:
        return await future
    except asyncio.CancelledError:
        if watch.verdict is None:
            raise  # the task itself was cancelled (shutdown)
        if watch.verdict == "gone":
            raise ClientGone(f"the client closed the connection before request {pending.request_id} was "
                             "answered; it was cancelled and not logged") from None
        raise RequestTimeout(pending.variant, pending.request_id, timeout_ms) from None
    finally:
        handle.cancel()
        if watch.task is not None:
            watch.task.cancel()
