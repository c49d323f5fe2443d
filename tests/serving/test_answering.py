"""What an answer tells its client beside the predictions, one rule for HTTP headers and gRPC
parameters: the version hidden in a blind test, "not logged" only when the log is on, and a receipt
that covers the answer's rows only when they were logged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.security.receipts import ReceiptSigner
from gateway.serving.answering import Answered, notes
from gateway.serving.outcome import PredictionOutcome
from gateway.variants.output import Predictions

SIGNER = ReceiptSigner(b"k" * 32, ttl_seconds=60)


def answered(logged: bool, rows: int = 2, replayed: bool = False) -> Answered:
    outcome = PredictionOutcome("rid-1", "v2.0", "sticky", Predictions(["a"] * rows), 1.0, logged, replayed)
    return Answered(scored=None, outcome=outcome)  # type: ignore[arg-type]  # notes read the outcome only


@given(logged=st.booleans(), reveal=st.booleans(), logging_on=st.booleans(), rows=st.integers(1, 5),
       replayed=st.booleans(), signer=st.sampled_from([None, SIGNER]))
def test_the_notes_follow_the_outcome_and_the_settings(logged: bool, reveal: bool, logging_on: bool, rows: int,
                                                       replayed: bool, signer: ReceiptSigner | None) -> None:
    n = notes(answered(logged, rows, replayed), reveal_version=reveal, logging_enabled=logging_on, receipts=signer)
    assert (n.request_id, n.reason, n.replayed) == ("rid-1", "sticky", replayed)
    assert n.version == ("v2.0" if reveal else None)
    assert n.unlogged is (logging_on and not logged)
    assert (n.receipt is not None) is (logged and signer is not None)
    if n.receipt is not None:
        for row in range(rows):  # the receipt covers each of the answer's rows, and no other
            SIGNER.verify(n.receipt, "rid-1", row)
    named = n.named("r", "p", "u", "c")
    assert named["r"] == "sticky" and ("p" in named) is replayed and ("u" in named) is n.unlogged
    assert named.get("c") == n.receipt
