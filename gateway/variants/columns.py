"""The columnar fast path: rows that arrive as one numeric matrix are checked in NumPy, not row by row.

An Open Inference Protocol tensor or a ``dataframe_split`` of plain numbers decodes into ``Rows``
(gateway/domain/batch.py) with a float64 matrix in signature order and the values as the client sent
them. When every column is a floating-point one, ``prepare`` checks the matrix with NumPy masks
(finite, within ``[model.bounds]``) and hands the model that matrix; the rows stay that matrix into
the records and the spool, a dict per row built only where one is asked for. Anything the
masks refuse, and any schema with other column types, goes to the row validator with the original
values, so the answer (accepted, coerced, or a 422 naming the first bad row and column) is the row
validator's by construction.
"""

from __future__ import annotations

import numpy as np

from gateway.domain.batch import Rows
from gateway.variants.schema import ModelSchema


def prepare(schema: ModelSchema, raw: Rows) -> Rows:
    """Validated rows from a request's decoded ones (a matrix when the NumPy checks passed, else the
    row validator's dicts); InvalidFeatures as the row validator says."""
    if raw.matrix is not None:
        matrix = _checked(schema, raw)
        if matrix is not None:
            return Rows(raw.names, matrix)
    return Rows.of_dicts(schema.validate_rows(raw.dicts()))


def _checked(schema: ModelSchema, block: Rows) -> np.ndarray | None:
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
