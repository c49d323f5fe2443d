"""The feedback route's door: which credential a label carries (the token, the answer's receipt, or
none), and whether its holder is within its rate. Runs before the label is read from the spool, on
the caller's thread: a flood is answered 429 without touching the spool or the threads that serve
predictions."""

from __future__ import annotations

import math
import time

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from gateway.domain.errors import FeedbackDenied, TooManyLabels
from gateway.security.credentials import bearer, same_secret
from gateway.security.keys import FEEDBACK_TOKEN_ENV, Secrets
from gateway.security.receipts import ReceiptRefused
from gateway.security.spec import FeedbackSection, Trust

HOW = (f"send Authorization: Bearer <{FEEDBACK_TOKEN_ENV}> (a label pipeline) or the answer's X-Feedback-Receipt "
       "as receipt (the client that got the answer)")


class FeedbackGate:
    def __init__(self, section: FeedbackSection, secrets: Secrets) -> None:
        self.section = section
        self.secrets = secrets
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._token_limits = parse_many(section.token_limit)
        self._client_limits = parse_many(section.client_limit)

    def admit(self, authorization: str | None, receipt: str | None, request_id: str, row_index: int,
              client: str) -> Trust:
        """The label's trust; raises FeedbackDenied (401, 403) or TooManyLabels (429)."""
        token = bearer(authorization)
        if token is not None:
            expected = self.secrets.feedback_token
            if expected is None:
                raise FeedbackDenied(403, f"no feedback token is configured ({FEEDBACK_TOKEN_ENV}); {HOW}")
            if not same_secret(token, expected):
                raise FeedbackDenied(403, "wrong feedback token")
            self._within(self._token_limits, "token")
            return Trust.TOKEN
        if receipt is not None:
            signer = self.secrets.receipts
            if signer is None:
                raise FeedbackDenied(403, "receipts are off ([feedback] receipts = false); send the feedback token")
            try:
                signer.verify(receipt, request_id, row_index)
            except ReceiptRefused as exc:
                raise FeedbackDenied(403, str(exc)) from None
            self._within(self._client_limits, "client", client)
            return Trust.RECEIPT
        if self.section.untrusted == "refuse":
            raise FeedbackDenied(401, f"feedback needs a credential: {HOW}")
        self._within(self._client_limits, "client", client)
        return Trust.UNTRUSTED

    def _within(self, limits: list, *key: str) -> None:
        for limit in limits:
            if not self._limiter.hit(limit, *key):
                reset = self._limiter.get_window_stats(limit, *key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise TooManyLabels(f"too many labels from this {'token' if key[0] == 'token' else 'client'}: at "
                                    f"most {limit} ([feedback] {key[0]}_limit); retry in {wait} s", wait)
