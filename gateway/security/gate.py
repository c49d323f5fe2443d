"""The feedback route's door: whether the caller is within its rate (``rate``: the token's, else its
address's, counted for every /feedback request, refused ones too, before the body is read), and which
credential a label carries (``admit``: the token, the answer's receipt, or none). A flood is answered
429 before any parsing, and never reaches the spool or the threads that serve predictions."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from gateway.domain.errors import FeedbackDenied
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

    def _is_token(self, authorization: str | None) -> bool:
        token, expected = bearer(authorization), self.secrets.feedback_token
        return token is not None and expected is not None and same_secret(token, expected)

    def rate(self, authorization: str | None, client: str) -> int | None:
        """None when this caller may send another label now, else the seconds until it may (429)."""
        if self._is_token(authorization):
            return self._within(self._token_limits, "token")
        return self._within(self._client_limits, "client", client)

    def admit(self, authorization: str | None, receipt: str | None, request_id: str, row_index: int) -> Trust:
        """The label's trust; raises FeedbackDenied (401, 403)."""
        token = bearer(authorization)
        if token is not None:
            expected = self.secrets.feedback_token
            if expected is None:
                raise FeedbackDenied(403, f"no feedback token is configured ({FEEDBACK_TOKEN_ENV}); {HOW}")
            if not same_secret(token, expected):
                raise FeedbackDenied(403, "wrong feedback token")
            return Trust.TOKEN
        if receipt is not None:
            signer = self.secrets.receipts
            if signer is None:
                raise FeedbackDenied(403, "receipts are off ([feedback] receipts = false); send the feedback token")
            try:
                signer.verify(receipt, request_id, row_index)
            except ReceiptRefused as exc:
                raise FeedbackDenied(403, str(exc)) from None
            return Trust.RECEIPT
        if self.section.untrusted == "refuse":
            raise FeedbackDenied(401, f"feedback needs a credential: {HOW}")
        return Trust.UNTRUSTED

    def _within(self, limits: list[RateLimitItem], *key: str) -> int | None:
        for limit in limits:
            if not self._limiter.hit(limit, *key):
                reset = self._limiter.get_window_stats(limit, *key).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def describe_limit(self, authorization: str | None) -> str:
        """What a 429 says: which limit, in the config's words."""
        if self._is_token(authorization):
            return f"too many labels from this token: at most {self.section.token_limit} ([feedback] token_limit)"
        return f"too many labels from this client: at most {self.section.client_limit} ([feedback] client_limit)"
