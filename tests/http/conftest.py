"""Fixtures for the HTTP tests: the in-process app (tests/harness/app_client.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.harness.app_client import FEEDBACK_TOKEN, TOKEN, make_client, wait_ready


@pytest.fixture(autouse=True)
def feedback_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every in-process gateway of these tests takes labels with FEEDBACK_AUTH (a label pipeline's)."""
    monkeypatch.setenv("GATEWAY_FEEDBACK_TOKEN", FEEDBACK_TOKEN)


@pytest.fixture
def client(tmp_path: Path, local_models: dict[str, str]) -> Iterator[TestClient]:
    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        yield c


@pytest.fixture
def admin_client(tmp_path: Path, local_models: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", TOKEN)
    with make_client(tmp_path, local_models) as c:
        wait_ready(c)
        yield c
