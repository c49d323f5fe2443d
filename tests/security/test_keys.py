"""Where the feedback secrets come from: the environment, else (one machine) key files made once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.security.keys import (
    FEEDBACK_TOKEN_ENV,
    PSEUDONYM_KEY_ENV,
    RECEIPT_KEY_ENV,
    MissingSecret,
    load_secrets,
    secrets_problem,
)


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (FEEDBACK_TOKEN_ENV, RECEIPT_KEY_ENV, PSEUDONYM_KEY_ENV):
        monkeypatch.delenv(name, raising=False)


def test_without_the_environment_one_key_file_each_shared_by_every_worker(tmp_path: Path) -> None:
    def load(_: int) -> tuple[str, str]:
        s = load_secrets(tmp_path, replicas=False, receipts=True, receipt_ttl_seconds=60)
        assert s.receipts is not None
        return s.pseudonyms.of("alice"), s.receipts.issue("r1", 1, now=0.0)

    with ThreadPoolExecutor(8) as pool:  # workers starting together
        seen = set(pool.map(load, range(16)))
    assert len(seen) == 1
    assert (tmp_path / "keys" / "pseudonym.key").stat().st_mode & 0o777 == 0o600
    s = load_secrets(tmp_path, replicas=False, receipts=True, receipt_ttl_seconds=60)
    assert s.feedback_token is None and any("GATEWAY_PSEUDONYM_KEY is not set" in n for n in s.notes)


def test_the_environment_wins_and_replicas_must_set_the_shared_keys(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    problem = secrets_problem(replicas=True, receipts=True)
    assert problem is not None and PSEUDONYM_KEY_ENV in problem and RECEIPT_KEY_ENV in problem
    with pytest.raises(MissingSecret):
        load_secrets(tmp_path, replicas=True, receipts=True, receipt_ttl_seconds=60)
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "p" * 20)
    assert secrets_problem(replicas=True, receipts=False) is None
    monkeypatch.setenv(RECEIPT_KEY_ENV, "short")
    assert "at least 16" in (secrets_problem(replicas=False, receipts=True) or "")
    monkeypatch.setenv(RECEIPT_KEY_ENV, "r" * 20)
    monkeypatch.setenv(FEEDBACK_TOKEN_ENV, "t" * 20)
    a = load_secrets(tmp_path / "a", replicas=True, receipts=True, receipt_ttl_seconds=60)
    b = load_secrets(tmp_path / "b", replicas=True, receipts=True, receipt_ttl_seconds=60)
    assert a.pseudonyms.of("u") == b.pseudonyms.of("u") and a.feedback_token == "t" * 20
    assert a.receipts is not None and b.receipts is not None
    b.receipts.verify(a.receipts.issue("r1", 2), "r1", 1)  # one replica's receipt, verified by another
    assert not (tmp_path / "a" / "keys").exists()
