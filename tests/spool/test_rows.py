"""A request's row keys, built when asked for, are the keys one per row would be."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.spool.rows import RowKey, RowKeys


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 50), st.integers(1, 40)), max_size=6))
def test_keys_are_each_rows_entry_and_index(entries: list[tuple[int, int, int]]) -> None:
    keys = RowKeys(entries)
    expected = [RowKey(entry, first + i) for entry, first, n in entries for i in range(n)]
    assert len(keys) == len(expected) and list(keys) == expected and keys == expected
    assert keys[1:3] == expected[1:3]
    if expected:
        assert keys[-1] == expected[-1]
