"""Pseudonyms for sticky user keys in the prediction log: an HMAC under a key of their own.

Never the routing salt: the salt decides buckets and may be public (the shipped default is), and a
salted hash of a guessable id (an e-mail address, a phone number) falls to a dictionary. Under a
secret key it does not, and the key can be changed without reshuffling anyone's version.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonyms:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a pseudonym key needs at least 16 bytes")
        self._key = key

    def of(self, user_key: str) -> str:
        """The same user, the same 16 hex digits wherever the key is the same."""
        return hmac.new(self._key, user_key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
