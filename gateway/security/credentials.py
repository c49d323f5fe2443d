"""Bearer credentials: reading ``Authorization: Bearer ...`` and comparing a secret in constant time.
The admin API and the feedback route share them."""

from __future__ import annotations

import hmac


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is none."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality, for text a client sent (any bytes) against a configured secret."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))
