"""The columnar fast path: rows that arrive as one numeric matrix are checked in NumPy, not row by row.

An Open Inference Protocol tensor or a ``dataframe_split`` of plain numbers decodes into a
``ColumnBlock``: a float64 matrix in signature order, with the values as the client sent them. When
every column is a floating-point one, ``prepare`` checks the matrix with NumPy masks (finite, within
``[model.bounds]``) and hands the model that matrix; the rows stay that matrix (``ValidatedRows``)
into the records and the spool, a dict per row built only where one is asked for. Anything the
masks refuse, and any schema with other column types, goes to the row validator with the original
values, so the answer (accepted, coerced, or a 422 naming the first bad row and column) is the row
validator's by construction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gateway.variants.schema import ModelSchema


class ColumnBlock(Sequence[dict[str, Any]]):
    """Decoded, not yet validated rows: ``matrix`` [n, columns] float64 in ``names`` order, and the
    client's own values: a flat row-major list of JSON numbers, or the tensor as decoded (its dtype).
    As a sequence it is the rows the row path would have decoded (built when asked for)."""

    __slots__ = ("_values", "matrix", "names")

    def __init__(self, names: Sequence[str], matrix: np.ndarray, values: list[Any] | np.ndarray | None = None) -> None:
        self.names = tuple(names)
        self.matrix = matrix
        self._values = values

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def __getitem__(self, index: Any) -> Any:
        return self.rows()[index]

    def __eq__(self, other: object) -> bool:
        return self.rows() == (other.rows() if isinstance(other, ColumnBlock) else other)

    __hash__ = None  # type: ignore[assignment]

    def rows(self) -> list[dict[str, Any]]:
        """The rows as the row path sees them: {column: value}, the client's values unconverted but
        for NaN, which every protocol's row path reads as a missing value (None)."""
        names, k = self.names, len(self.names)
        if self._values is None:
            flat = self.matrix.reshape(-1).tolist()
        elif isinstance(self._values, np.ndarray):
            flat = self._values.reshape(-1).tolist()
        else:
            flat = self._values
        if np.isnan(self.matrix).any():
            flat = [None if v != v else v for v in flat]
        return [dict(zip(names, flat[i:i + k], strict=True)) for i in range(0, len(flat), k)]


class ValidatedRows(Sequence[dict[str, Any]]):
    """Validated rows that came through the columnar path: the float64 ``matrix`` the model takes, in
    ``names`` order. As a sequence they are the {column: value} dicts the row validator would give,
    built only when asked for (a replay's comparison, a model that takes rows)."""

    __slots__ = ("_rows", "matrix", "names")

    def __init__(self, names: Sequence[str], matrix: np.ndarray) -> None:
        self.names = tuple(names)
        self.matrix = matrix
        self._rows: list[dict[str, Any]] | None = None

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            names = self.names
            self._rows = [dict(zip(names, row, strict=True)) for row in self.matrix.tolist()]
        return self._rows

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def __getitem__(self, index: Any) -> Any:
        if self._rows is None and not isinstance(index, slice):  # one row, without building them all
            return dict(zip(self.names, self.matrix[index].tolist(), strict=True))
        return self.rows()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self.rows() == list(other)

    __hash__ = None  # type: ignore[assignment]


def numbers_block(names: Sequence[str], flat: list[Any], int64_only: bool = False) -> ColumnBlock | None:
    """A block from a flat row-major list of JSON values, or None when they are not all plain numbers
    (a boolean, a string, a null or an integer too large for a float goes the row path). With
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
    return ColumnBlock(names, matrix.reshape(-1, len(names)), flat)


def prepare(schema: ModelSchema, raw: Sequence[Any]) -> Sequence[dict[str, Any]]:
    """Validated rows from a request's raw rows or block (ValidatedRows when the NumPy checks passed);
    InvalidFeatures as the row validator says."""
    if isinstance(raw, ColumnBlock):
        matrix = _checked(schema, raw)
        if matrix is not None:
            return ValidatedRows(raw.names, matrix)
        raw = raw.rows()
    return schema.validate_rows(raw)


def _checked(schema: ModelSchema, block: ColumnBlock) -> np.ndarray | None:
    """The block's matrix when every value passes what the row validator would check, else None."""
    checks = schema.plain_checks
    if checks is None or block.names != tuple(schema.names) or not all(is_float for _, is_float, *_ in checks):
        return None
    m = block.matrix
    if not np.isfinite(m).all():
        return None
    for j, (_, _, _, lo, lo_open, hi, hi_open) in enumerate(checks):
        column = m[:, j]
        if lo is not None and (column <= lo if lo_open else column < lo).any():
            return None
        if hi is not None and (column >= hi if hi_open else column > hi).any():
            return None
    return m


def joined(parts: Sequence[Sequence[dict[str, Any]]]) -> Sequence[dict[str, Any]]:
    """Several requests' validated rows as one model call's, keeping the matrix when all have one."""
    if len(parts) == 1:
        return parts[0]
    matrices = [part for part in parts if isinstance(part, ValidatedRows)]
    if len(matrices) == len(parts) and len({part.names for part in matrices}) == 1:
        return ValidatedRows(matrices[0].names, np.concatenate([part.matrix for part in matrices]))
    return [row for part in parts for row in part]
