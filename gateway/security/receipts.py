"""Per-answer receipts: what lets a client label its own answer, and nobody else's.

A receipt is an HMAC under a server key of the request id, the request's row count and an expiry,
sent with every logged answer (``X-Feedback-Receipt``). Its holder may label rows 0 to n-1 of that
request until the expiry; a label pipeline that knows only request ids uses the feedback token
instead. Replicas verify each other's receipts when they share the key (``GATEWAY_RECEIPT_KEY``).
Form: ``r1.<expiry, unix seconds>.<rows>.<signature, base64url>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

VERSION = "r1"
_SIGNATURE_BYTES = 18  # 144 bits: 24 base64url characters


class ReceiptRefused(Exception):
    """Why a receipt does not let its holder label this row (a message for the client)."""


class ReceiptSigner:
    def __init__(self, key: bytes, ttl_seconds: float) -> None:
        if len(key) < 16:
            raise ValueError("a receipt key needs at least 16 bytes")
        self._key = key
        self.ttl_seconds = ttl_seconds

    def _signature(self, request_id: str, rows: int, expiry: int) -> str:
        message = f"{VERSION}\n{request_id}\n{rows}\n{expiry}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii")

    def issue(self, request_id: str, rows: int, now: float | None = None) -> str:
        expiry = int((time.time() if now is None else now) + self.ttl_seconds)
        return f"{VERSION}.{expiry}.{rows}.{self._signature(request_id, rows, expiry)}"

    def verify(self, receipt: str, request_id: str, row_index: int, now: float | None = None) -> None:
        """Return if ``receipt`` lets its holder label ``row_index`` of ``request_id``; else raise
        ReceiptRefused saying why."""
        parts = receipt.split(".")
        if len(parts) != 4 or parts[0] != VERSION or not parts[1].isdigit() or not parts[2].isdigit():
            raise ReceiptRefused("receipt is not one this gateway issues (X-Feedback-Receipt of the answer)")
        expiry, rows = int(parts[1]), int(parts[2])
        if not hmac.compare_digest(parts[3].encode("ascii", "replace"),
                                   self._signature(request_id, rows, expiry).encode("ascii")):
            raise ReceiptRefused("receipt does not match this request_id (or was issued under another key)")
        if (time.time() if now is None else now) > expiry:
            raise ReceiptRefused("receipt has expired ([feedback] receipt_ttl_seconds)")
        if row_index >= rows:
            raise ReceiptRefused(f"receipt covers rows 0-{rows - 1} of its request, not row {row_index}")
