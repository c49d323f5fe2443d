"""When the prediction log falls behind: rows coming in faster than they reach MLflow, for minutes."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.export.policy import FallingBehind


def _feed(trend: FallingBehind, seconds: int, in_per_s: float, out_per_s: float, every: int = 10,
          start: tuple[float, int, int] = (0.0, 0, 0)) -> tuple[float, int, int]:
    t, written, exported = start
    for _ in range(seconds // every):
        t += every
        written += int(in_per_s * every)
        exported += int(out_per_s * every)
        trend.observe(t, written, exported)
    return t, written, exported


def test_per_prediction_mode_falling_behind_is_flagged_then_cleared(caplog: pytest.LogCaptureFixture) -> None:
    # The numbers: c=32 against one run per prediction, about 2,950 rows/s in and 7 out.
    trend = FallingBehind(window_s=180, granularity="prediction")
    with caplog.at_level(logging.INFO, "gateway.exporter"):
        state = _feed(trend, 170, 2950, 7)
        assert not trend.behind  # not for minutes yet
        state = _feed(trend, 30, 2950, 7, start=state)
        assert trend.behind and trend.describe()["in_rows_per_s"] == pytest.approx(2950, rel=0.01)
        assert 'granularity = "window"' in caplog.text
        _feed(trend, 400, 100, 400, start=state)  # drains faster than it fills
    assert not trend.behind and "keeps up again" in caplog.text


def test_mlflow_down_says_nothing_reached_it(caplog: pytest.LogCaptureFixture) -> None:
    trend = FallingBehind(window_s=60, granularity="window")
    with caplog.at_level(logging.WARNING, "gateway.exporter"):
        _feed(trend, 120, 50, 0)
    assert trend.behind and "Nothing reached MLflow" in caplog.text


@settings(max_examples=60, deadline=None)
@given(in_per_s=st.floats(0, 5000), headroom=st.floats(1.0, 3.0))
def test_an_exporter_that_keeps_up_is_never_flagged(in_per_s: float, headroom: float) -> None:
    trend = FallingBehind(window_s=180)
    _feed(trend, 900, in_per_s, in_per_s * headroom)
    assert not trend.behind


@settings(max_examples=60, deadline=None)
@given(out_per_s=st.floats(0, 1000), excess=st.floats(20, 2000))
def test_a_backlog_that_grows_for_the_whole_window_is_flagged(out_per_s: float, excess: float) -> None:
    trend = FallingBehind(window_s=180, min_growth=1000)
    in_per_s = max(out_per_s * 1.2, out_per_s + excess)
    _feed(trend, 240, in_per_s, out_per_s)
    assert trend.behind
