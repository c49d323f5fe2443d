"""The one batch type: a matrix or row dicts, said by its fields; the same rows either way."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.batch import Rows, join, numbers

NAMES = ("a", "b.c", "d/e f")
FINITE = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(FINITE, min_size=3, max_size=3), min_size=1, max_size=20))
def test_a_matrix_batch_is_the_same_rows_as_its_dicts(values: list[list[float]]) -> None:
    matrix = np.array(values, dtype=np.float64)
    rows = Rows(NAMES, matrix)
    dicts = [dict(zip(NAMES, row, strict=True)) for row in values]
    assert len(rows) == len(values) and rows == dicts and Rows.of_dicts(dicts) == rows
    assert [rows[i] for i in range(len(rows))] == dicts  # one row at a time, without building them all
    assert Rows.of_dicts(rows) is rows and Rows.of_dicts(dicts).matrix is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(FINITE, min_size=3, max_size=3), min_size=1, max_size=10),
       st.lists(st.lists(FINITE, min_size=3, max_size=3), min_size=1, max_size=10), st.booleans())
def test_join_keeps_the_matrix_only_when_every_part_has_one(one: list[list[float]], two: list[list[float]],
                                                             second_as_dicts: bool) -> None:
    first = Rows(NAMES, np.array(one))
    second = (Rows.of_dicts([dict(zip(NAMES, r, strict=True)) for r in two]) if second_as_dicts
              else Rows(NAMES, np.array(two)))
    both = join([first, second])
    assert both == [*first, *second]
    assert (both.matrix is None) == second_as_dicts


def test_a_decoded_block_keeps_the_clients_values_and_reads_nan_as_missing() -> None:
    block = numbers(NAMES, [1, 2.5, float("nan"), 4, 5, 6])
    assert block is not None and block.matrix is not None and block.matrix.dtype == np.float64
    assert block.dicts() == [{"a": 1, "b.c": 2.5, "d/e f": None}, {"a": 4, "b.c": 5, "d/e f": 6}]
    assert numbers(NAMES, [1.0, True, 3.0]) is None


def test_a_batch_is_a_matrix_or_dicts_never_both_or_neither() -> None:
    with pytest.raises(ValueError):
        Rows(NAMES)
    with pytest.raises(ValueError):
        Rows(NAMES, np.zeros((1, 3)), dicts=[{}])
