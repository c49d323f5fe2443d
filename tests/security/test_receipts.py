"""Receipts: a receipt lets its holder label the rows of its own request until it expires, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.security.receipts import ReceiptRefused, ReceiptSigner

KEY = b"k" * 32
request_ids = st.from_regex(r"[A-Za-z0-9._:\-]{1,64}", fullmatch=True)


@given(request_id=request_ids, rows=st.integers(1, 1000), data=st.data())
def test_a_receipt_covers_its_own_rows_only(request_id: str, rows: int, data: st.DataObject) -> None:
    signer = ReceiptSigner(KEY, ttl_seconds=60)
    receipt = signer.issue(request_id, rows, now=1000.0)
    signer.verify(receipt, request_id, data.draw(st.integers(0, rows - 1)), now=1059.0)
    with pytest.raises(ReceiptRefused, match="covers rows"):
        signer.verify(receipt, request_id, rows + data.draw(st.integers(0, 10)), now=1000.0)
    other = data.draw(request_ids.filter(lambda r: r != request_id))
    with pytest.raises(ReceiptRefused, match="does not match this request_id"):
        signer.verify(receipt, other, 0, now=1000.0)  # label squatting: someone else's request id
    with pytest.raises(ReceiptRefused, match="expired"):
        signer.verify(receipt, request_id, 0, now=1061.0)


@given(request_id=request_ids, position=st.integers(0, 200), char=st.characters(codec="ascii"))
def test_a_tampered_receipt_is_refused(request_id: str, position: int, char: str) -> None:
    signer = ReceiptSigner(KEY, ttl_seconds=60)
    receipt = signer.issue(request_id, 5, now=0.0)
    i = position % len(receipt)
    forged = receipt[:i] + char + receipt[i + 1:]
    if forged == receipt:
        return
    with pytest.raises(ReceiptRefused):
        signer.verify(forged, request_id, 0, now=0.0)


def test_receipts_of_another_key_or_form_are_refused() -> None:
    receipt = ReceiptSigner(b"a" * 32, 60).issue("r1", 1, now=0.0)
    with pytest.raises(ReceiptRefused, match="another key"):
        ReceiptSigner(b"b" * 32, 60).verify(receipt, "r1", 0, now=0.0)
    more_rows = receipt.replace(".1.", ".1000.")  # the holder widens its own receipt
    with pytest.raises(ReceiptRefused):
        ReceiptSigner(b"a" * 32, 60).verify(more_rows, "r1", 999, now=0.0)
    for junk in ("", "r1", "r1.x.1.abc", "v9.1.1.abc"):
        with pytest.raises(ReceiptRefused, match="not one this gateway issues"):
            ReceiptSigner(b"a" * 32, 60).verify(junk, "r1", 0)
