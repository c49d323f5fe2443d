"""Credentials never reach a message: URLs lose their userinfo, in text, in JSON-like answers, and
in every log record (message and traceback), whatever logger made it."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.messages import install_log_redaction, redacted, without_credentials

secrets = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=20)


@given(user=secrets, password=secrets, scheme=st.sampled_from(["http", "https", "postgresql", "s3"]))
def test_userinfo_of_any_url_is_removed(user: str, password: str, scheme: str) -> None:
    text = f"request to {scheme}://{user}:{password}@db.example:5432/path failed; again {scheme}://{user}@h/x"
    out = without_credentials(text)
    assert out == f"request to {scheme}://db.example:5432/path failed; again {scheme}://h/x"
    assert f":{password}@" not in out


def test_text_without_credentials_is_unchanged() -> None:
    for text in ("http://127.0.0.1:5001/api", "mail alice@example.com", "models:/IrisClassifier/1", ""):
        assert without_credentials(text) == text


def test_answers_are_redacted_all_the_way_down() -> None:
    body = {"export": {"last_error": "GET http://a:pw@h/x"}, "list": ["https://t0k@h", 1, None]}
    assert redacted(body) == {"export": {"last_error": "GET http://h/x"}, "list": ["https://h", 1, None]}


def test_log_records_of_any_logger_lose_the_password(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    install_log_redaction()  # idempotent
    with caplog.at_level(logging.INFO):
        logging.getLogger("httpx").info('HTTP Request: GET %s "HTTP/1.1 200 OK"', "http://alice:pw@h:1/health")
        try:
            raise ConnectionError("cannot reach http://alice:pw@h:1")
        except ConnectionError:
            logging.getLogger("gateway.exporter").exception("export failed")
    text = caplog.text
    assert "http://h:1/health" in text and "cannot reach http://h:1" in text and "pw@" not in text
