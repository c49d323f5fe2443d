"""The feedback credentials' secrets, from the environment or, on one machine, from key files.

``GATEWAY_FEEDBACK_TOKEN``: the label pipelines' bearer token (none: only receipts label).
``GATEWAY_RECEIPT_KEY`` and ``GATEWAY_PSEUDONYM_KEY``: the HMAC keys of receipts and of user
pseudonyms. Without them a gateway makes a random key of each once, in ``<spool.dir>/keys/``, which
every worker of that gateway shares and restarts keep. Replicas must share the keys (a receipt
issued by one is verified by another; a user's pseudonym must be the same on every replica), so with
``[state] backend = "mlflow"`` the environment must give them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from gateway.security.pseudonyms import Pseudonyms
from gateway.security.receipts import ReceiptSigner

FEEDBACK_TOKEN_ENV = "GATEWAY_FEEDBACK_TOKEN"
RECEIPT_KEY_ENV = "GATEWAY_RECEIPT_KEY"
PSEUDONYM_KEY_ENV = "GATEWAY_PSEUDONYM_KEY"
KEY_DIR = "keys"
MIN_KEY_CHARS = 16


class MissingSecret(ValueError):
    """A secret the configuration needs is not set, or too short; the message names the variable."""


@dataclass(frozen=True)
class Secrets:
    feedback_token: str | None
    receipts: ReceiptSigner | None  # None: [feedback] receipts = false
    pseudonyms: Pseudonyms
    notes: list[str] = field(default_factory=list)  # where each key came from, for the start-up log


def secrets_problem(replicas: bool, receipts: bool) -> str | None:
    """The line start-up stops with: a secret shorter than MIN_KEY_CHARS, or replicas without the keys
    they must share. None when the secrets will do."""
    for name in (FEEDBACK_TOKEN_ENV, RECEIPT_KEY_ENV, PSEUDONYM_KEY_ENV):
        value = os.environ.get(name, "").strip()
        if value and len(value) < MIN_KEY_CHARS:
            return f"{name} must have at least {MIN_KEY_CHARS} characters"
    if not replicas:
        return None
    needed = [PSEUDONYM_KEY_ENV] + ([RECEIPT_KEY_ENV] if receipts else [])
    unset = [name for name in needed if not os.environ.get(name, "").strip()]
    if not unset:
        return None
    return (f"{' and '.join(unset)} must be set (at least {MIN_KEY_CHARS} characters, the same on every replica): "
            "with [state] backend = \"mlflow\" the replicas share user pseudonyms"
            + (" and verify each other's feedback receipts" if receipts else ""))


def load_secrets(key_dir: Path | None, *, replicas: bool, receipts: bool, receipt_ttl_seconds: float) -> Secrets:
    """The secrets in force. ``key_dir`` None (no spool): keys live in memory for this process only.
    Raises MissingSecret when replicas lack a shared key or a key is too short."""
    problem = secrets_problem(replicas, receipts)
    if problem:
        raise MissingSecret(problem)
    notes: list[str] = []
    token = os.environ.get(FEEDBACK_TOKEN_ENV, "").strip() or None
    pseudonym_key = _key(PSEUDONYM_KEY_ENV, key_dir, "pseudonym", notes)
    signer = ReceiptSigner(_key(RECEIPT_KEY_ENV, key_dir, "receipt", notes), receipt_ttl_seconds) if receipts else None
    if token is None:
        notes.append(f"{FEEDBACK_TOKEN_ENV} is not set: label pipelines cannot send feedback; clients label "
                     "their own answers with the answer's X-Feedback-Receipt" if receipts else
                     f"{FEEDBACK_TOKEN_ENV} is not set and [feedback] receipts = false: no label can move a decision")
    return Secrets(token, signer, Pseudonyms(pseudonym_key), notes)


def _key(env: str, key_dir: Path | None, name: str, notes: list[str]) -> bytes:
    given = os.environ.get(env, "").strip()
    if given:
        return given.encode("utf-8")
    if key_dir is None:
        notes.append(f"{env} is not set: a random {name} key in memory (the spool is off, nothing is kept)")
        return secrets.token_bytes(32)
    path = key_dir / KEY_DIR / f"{name}.key"
    key = _key_file(path)
    notes.append(f"{env} is not set: the {name} key is {path} (random, made once; every worker of this gateway "
                 "shares it; replicas need the variable)")
    return key


def _key_file(path: Path) -> bytes:
    """The key in ``path``, made once: written whole to a temporary file, then linked into place, so
    that workers starting together all read the same key and never a half-written one."""
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another worker made it first: its key is the key
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < MIN_KEY_CHARS:
        raise MissingSecret(f"key file {path} holds {len(key)} bytes; delete it to make a new key")
    return key
