"""The feedback route's door: the token, a receipt, or nothing; and each credential's rate."""

from __future__ import annotations

import pytest

from gateway.domain.errors import FeedbackDenied
from gateway.security.gate import FeedbackGate
from gateway.security.keys import Secrets
from gateway.security.pseudonyms import Pseudonyms
from gateway.security.receipts import ReceiptSigner
from gateway.security.spec import FeedbackSection, Trust

TOKEN = "t" * 24
SIGNER = ReceiptSigner(b"r" * 32, 60)


def gate(**section: object) -> FeedbackGate:
    return FeedbackGate(FeedbackSection(**section), Secrets(TOKEN, SIGNER, Pseudonyms(b"p" * 32)))


def test_who_may_label() -> None:
    g = gate()
    assert g.admit(f"Bearer {TOKEN}", None, "r1", 0) is Trust.TOKEN
    assert g.admit(None, SIGNER.issue("r1", 3), "r1", 2) is Trust.RECEIPT
    for auth, receipt, status in ((None, None, 401), ("Bearer nope", None, 403), (TOKEN, None, 401),
                                  (None, SIGNER.issue("r2", 3), 403), (None, "forged", 403)):
        with pytest.raises(FeedbackDenied) as err:
            g.admit(auth, receipt, "r1", 0)
        assert err.value.status == status, (auth, receipt)
    assert gate(untrusted="record").admit(None, None, "r1", 0) is Trust.UNTRUSTED
    assert not Trust.UNTRUSTED.decides and Trust.RECEIPT.decides


def test_each_client_and_the_token_have_their_own_rate() -> None:
    """Every /feedback request counts against its caller's rate, refused ones too: the token's own, else
    its address's (a wrong token is just another request from that address)."""
    g = gate(client_limit="5/minute", token_limit="3/minute")
    assert [g.rate(None, "10.0.0.1") for _ in range(5)] == [None] * 5
    wait = g.rate("Bearer wrong", "10.0.0.1")
    assert wait is not None and 1 <= wait <= 60 and "client_limit" in g.describe_limit(None)
    assert g.rate(None, "10.0.0.2") is None  # another address: its own window
    assert [g.rate(f"Bearer {TOKEN}", "10.0.0.1") for _ in range(3)] == [None] * 3
    assert g.rate(f"Bearer {TOKEN}", "10.0.0.9") is not None and "token_limit" in g.describe_limit(f"Bearer {TOKEN}")


def test_a_rate_that_is_not_one_stops_start_up() -> None:
    from gateway.config.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"feedback\.client_limit"):
        load_settings(None, feedback={"client_limit": "lots"})
