"""MLflow param keys for input columns: the column's own name whenever MLflow accepts it, else a
cleaned name that MLflow accepts; distinct for distinct columns."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

from gateway.domain.contract import MAX_KEY_LENGTH, param_name, param_names, param_value


def _accepted(key: str) -> bool:
    # MLflow's own pattern ends in `$`, which also lets a trailing newline through; the gateway does not.
    return (bool(validate_param_and_metric_name(key)) and "\n" not in key and not path_not_unique(key)
            and len(key) <= MAX_KEY_LENGTH)


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=300))
def test_every_column_name_becomes_a_key_mlflow_accepts(column: str) -> None:
    key = param_name(column)
    assert key and _accepted(key)
    if _accepted(column):
        assert key == column  # names MLflow takes are kept as they are


def test_awkward_names() -> None:
    assert param_name("od280/od315_of_diluted_wines") == "od280/od315_of_diluted_wines"
    assert param_name("malic acid.g/l") == "malic acid.g/l"
    assert param_name("color intensity (au)") == "color intensity _au_"
    assert param_name("/a//b/") == "a/b"
    assert param_name("..") == "_"
    assert param_name("..0") == "_0" and param_name("...x/y") == "_x/y"  # MLflow refuses a leading ".."


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=8, unique=True))
def test_keys_are_distinct(columns: list[str]) -> None:
    keys = param_names(columns)
    assert len(set(keys.values())) == len(columns) and all(_accepted(k) for k in keys.values())


def test_values_as_the_seed_logged_them() -> None:
    assert param_value(5.1) == "5.1" and param_value(3) == "3" and param_value(True) == "True"
    assert param_value(None) == "None" and param_value("x" * 7000) == "x" * 6000
