"""The ``[feedback]`` section: who may label, and how fast (docs/feedback.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from limits import parse_many
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Trust(StrEnum):
    """Where a label came from, and so whether it may move a decision (the bandit's weights, a
    rollout's accuracy guardrail)."""

    TOKEN = "token"  # GATEWAY_FEEDBACK_TOKEN: a label pipeline
    RECEIPT = "receipt"  # the answer's own X-Feedback-Receipt: the client that got the answer
    UNTRUSTED = "untrusted"  # neither: kept when [feedback] untrusted = "record", never used for decisions

    @property
    def decides(self) -> bool:
        return self is not Trust.UNTRUSTED


class FeedbackSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A label with neither the feedback token nor a receipt: "refuse" (401), or "record" (kept in the
    # spool for the retention, answered 202 without saying anything of the prediction, never exported
    # and never used by the bandit, the guardrails or the report).
    untrusted: Literal["refuse", "record"] = "refuse"
    receipts: bool = True  # every logged answer carries X-Feedback-Receipt: its client may label its own rows
    receipt_ttl_seconds: float = Field(86_400.0, gt=0, le=30 * 86_400)
    # Labels per credential, past which 429 (per worker process; "N/second;M/minute" ...): the token's,
    # and each client address's (receipts and untrusted labels; behind a proxy without forwarded
    # headers every client shares one address, so the default bounds floods, not one client's share).
    token_limit: str = "2000/second"
    client_limit: str = "1000/second"

    @field_validator("token_limit", "client_limit")
    @classmethod
    def _limits(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as \"20/second\" or \"20/second;600/minute\"") from None
        return value
