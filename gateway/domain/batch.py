"""A batch of rows, the one type every layer passes them in: the protocols decode a request into it,
the variants validate it and give it to the model, the batcher joins several into one call, and the
spool packs it. Its form is said by its fields, never found out by probing:

- ``matrix`` is a float64 array [rows, len(names)] when every value is a plain number in the
  ``names`` order (the columnar path: NumPy checks, no dict per row);
- ``matrix`` is None when the rows are {column: value} dicts (mixed types, missing values).

Either way it is a sequence of {column: value} dicts, built only when asked for. A batch decoded
from a request but not yet validated also keeps the client's own values (``values``: a flat
row-major list of JSON numbers, or the tensor as decoded), which the row path falls back to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class Rows(Sequence[dict[str, Any]]):
    __slots__ = ("_dicts", "matrix", "names", "values")

    def __init__(self, names: Sequence[str], matrix: np.ndarray | None = None, *,
                 dicts: list[dict[str, Any]] | None = None, values: list[Any] | np.ndarray | None = None) -> None:
        if (matrix is None) == (dicts is None):
            raise ValueError("a batch of rows is a matrix or row dicts, one of the two")
        self.names = tuple(names)  # the matrix's columns (() for row dicts: each names its own)
        self.matrix = matrix
        self.values = values
        self._dicts = dicts

    @classmethod
    def of_dicts(cls, rows: Sequence[dict[str, Any]]) -> Rows:
        """Row dicts as a batch (the rows themselves; a batch is returned as it is)."""
        if isinstance(rows, Rows):
            return rows
        return cls((), dicts=rows if isinstance(rows, list) else list(rows))

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as {column: value}. From a decoded batch: the client's values unconverted but for
        NaN, which every protocol's row path reads as a missing value (None)."""
        if self._dicts is None:
            assert self.matrix is not None
            names, k = self.names, len(self.names)
            if self.values is None:
                self._dicts = [dict(zip(names, row, strict=True)) for row in self.matrix.tolist()]
                return self._dicts
            flat = self.values.reshape(-1).tolist() if isinstance(self.values, np.ndarray) else self.values
            if np.isnan(self.matrix).any():
                flat = [None if v != v else v for v in flat]
            self._dicts = [dict(zip(names, flat[i:i + k], strict=True)) for i in range(0, len(flat), k)]
        return self._dicts

    def __len__(self) -> int:
        return len(self._dicts) if self.matrix is None else int(self.matrix.shape[0])  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> Any:
        if self._dicts is None and self.values is None and not isinstance(index, slice):
            assert self.matrix is not None  # one row, without building them all
            return dict(zip(self.names, self.matrix[index].tolist(), strict=True))
        return self.dicts()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.dicts())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self.dicts() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        form = f"matrix {self.matrix.shape}" if self.matrix is not None else "dicts"
        return f"Rows({len(self)} rows, {form})"


def join(parts: Sequence[Rows]) -> Rows:
    """Several requests' validated rows as one model call's, keeping the matrix when all have one with
    the same columns."""
    if len(parts) == 1:
        return parts[0]
    matrices = [part.matrix for part in parts if part.matrix is not None]
    if len(matrices) == len(parts) and len({part.names for part in parts}) == 1:
        return Rows(parts[0].names, np.concatenate(matrices))
    return Rows.of_dicts([row for part in parts for row in part.dicts()])


def numbers(names: Sequence[str], flat: list[Any], int64_only: bool = False) -> Rows | None:
    """A decoded batch from a flat row-major list of JSON values, or None when they are not all plain
    numbers (a boolean, a string, a null or an integer too large for a float goes the row path). With
    ``int64_only``, also None for a body with integers where some value is past the 64-bit range:
    MLflow's parser, which the row path follows, reads such a column differently."""
    types = set(map(type, flat))
    if not flat or not types <= {float, int}:
        return None
    try:
        matrix = np.array(flat, dtype=np.float64)
    except OverflowError:
        return None
    if int64_only and int in types and bool((np.abs(matrix[np.isfinite(matrix)]) >= 2.0**63).any()):
        return None
    return Rows(names, matrix.reshape(-1, len(names)), values=flat)
