"""The request schema, read from the model's MLflow signature: column names, types, required or not.

One ``ModelSchema`` drives validation of every protocol's rows, the OpenAPI body of ``/predict``,
the spool record's features, the MLflow params and the Open Inference Protocol metadata. Column
names are kept exactly as the signature spells them (dots, slashes and spaces included): the
validator is a pydantic model whose fields carry the column names as aliases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from gateway.domain.errors import InvalidFeatures, SchemaMismatch
from gateway.domain.validation import reject_bool

# MLflow column type -> (Python type, OIP datatype, numeric)
_TYPES: dict[str, tuple[type, str, bool]] = {
    "double": (float, "FP64", True),
    "float": (float, "FP32", True),
    "long": (int, "INT64", True),
    "integer": (int, "INT32", True),
    "boolean": (bool, "BOOL", False),
    "string": (str, "BYTES", False),
}


@dataclass(frozen=True, slots=True)
class Bounds:
    """Optional limits on a numeric column; any of them may be None. The config's ``[model.bounds]``
    entries are validated into it too (an unknown key is refused)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def describe(self) -> str:
        low = f"({self.gt:g}" if self.gt is not None else f"[{self.ge:g}" if self.ge is not None else "(-inf"
        high = f"{self.lt:g})" if self.lt is not None else f"{self.le:g}]" if self.le is not None else "inf)"
        return f"{low}, {high}"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # an MLflow DataType name: double, float, long, integer, boolean, string
    required: bool = True
    bounds: Bounds | None = None

    @property
    def python_type(self) -> type:
        return _TYPES[self.type][0]

    @property
    def oip_datatype(self) -> str:
        return _TYPES[self.type][1]

    @property
    def numeric(self) -> bool:
        return _TYPES[self.type][2]


@dataclass(frozen=True)
class ModelSchema:
    """The input columns every variant shares, with a validator built once at start-up."""

    columns: tuple[Column, ...]
    _validator: type[BaseModel] = field(init=False, repr=False, compare=False)
    _plain_checks: tuple[_PlainCheck, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validator", _build_validator(self.columns))
        object.__setattr__(self, "_plain_checks", _plain_checks(self.columns))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def plain_checks(self) -> tuple[_PlainCheck, ...] | None:
        """Each column's (name, float?, required, low, low exclusive, high, high exclusive), or None
        when a column is not numeric: what a value must pass without the validator's coercions."""
        return self._plain_checks

    @property
    def all_numeric(self) -> bool:
        return all(c.numeric for c in self.columns)

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def from_signature(cls, signature: Any, source: str) -> ModelSchema:
        """Read a column-based MLflow signature; raise SchemaMismatch naming ``source`` otherwise."""
        if signature is None or signature.inputs is None:
            raise SchemaMismatch(f"model {source} has no signature; log it with a column-based signature "
                                 "(mlflow.models.infer_signature) so the gateway knows its input columns")
        inputs = signature.inputs
        if inputs.is_tensor_spec():
            raise SchemaMismatch(f"model {source} has a tensor-based signature; the gateway needs named columns "
                                 "(log the model with a pandas DataFrame as its input example)")
        columns = []
        for spec in inputs.inputs:
            type_name = getattr(spec.type, "name", str(spec.type))
            if spec.name is None:
                raise SchemaMismatch(f"model {source} has an unnamed input column; the gateway needs named columns")
            if type_name not in _TYPES:
                raise SchemaMismatch(f"model {source}: column {spec.name!r} has type {type_name}, which the gateway "
                                     f"cannot take from a request (supported: {', '.join(_TYPES)})")
            columns.append(Column(spec.name, type_name, bool(getattr(spec, "required", True))))
        return cls(tuple(columns))

    def with_bounds(self, bounds: Mapping[str, Bounds]) -> ModelSchema:
        unknown = sorted(set(bounds) - set(self.names))
        if unknown:
            raise SchemaMismatch(f"model.bounds: unknown column(s) {unknown}; the model's columns: {self.names}")
        for name, b in bounds.items():
            col = next(c for c in self.columns if c.name == name)
            if not col.numeric and any(v is not None for v in (b.gt, b.ge, b.lt, b.le)):
                raise SchemaMismatch(f"model.bounds.{name}: column {name!r} is {col.type}, not a number")
            if col.python_type is int and any(v is not None and not float(v).is_integer()
                                              for v in (b.gt, b.ge, b.lt, b.le)):
                raise SchemaMismatch(f"model.bounds.{name}: column {name!r} is {col.type}; its bounds must be "
                                     f"whole numbers, got {b.describe()}")
        return ModelSchema(tuple(Column(c.name, c.type, c.required, bounds.get(c.name, c.bounds))
                                 for c in self.columns))

    def difference(self, other: ModelSchema) -> str | None:
        """None when both take the same columns; otherwise what differs, in one line."""
        mine, theirs = {c.name: c for c in self.columns}, {c.name: c for c in other.columns}
        parts = []
        if only := [n for n in mine if n not in theirs]:
            parts.append(f"only in the first: {only}")
        if only := [n for n in theirs if n not in mine]:
            parts.append(f"only in the second: {only}")
        for name in mine.keys() & theirs.keys():
            a, b = mine[name], theirs[name]
            if (a.type, a.required) != (b.type, b.required):
                parts.append(f"column {name!r}: {a.type}{'' if a.required else ' (optional)'} against "
                             f"{b.type}{'' if b.required else ' (optional)'}")
        if not parts and self.names != other.names:
            parts.append(f"column order differs: {self.names} against {other.names}")
        return "; ".join(parts) or None

    # -- validating ----------------------------------------------------------------------------

    def validate_rows(self, rows: Sequence[Any]) -> list[dict[str, Any]]:
        """Each row as {column: value} in signature order; InvalidFeatures names every bad row and column.
        With one row, errors name the column only (the seed's single-row contract)."""
        out: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        single = len(rows) == 1
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                errors.append(_error(None if single else index, "body" if single else f"[{index}]",
                                     f"expected an object with the model's columns, got {type(row).__name__}"))
                continue
            plain = self._plain_row(row) if self._plain_checks is not None else None
            if plain is not None:
                out.append(plain)
                continue
            try:
                model = self._validator.model_validate(row)
            except ValidationError as exc:
                for err in exc.errors():
                    column = str(err["loc"][0]) if err["loc"] else "body"
                    errors.append(_error(None if single else index, column, _message(err)))
                continue
            out.append(model.model_dump(by_alias=True))
        if errors:
            where = sorted({e["field"] if "row" not in e else f"row {e['row']} {e['field']}" for e in errors},
                           key=_natural)
            raise InvalidFeatures(f"invalid features: {', '.join(where[:10])}"
                                  + (f" and {len(where) - 10} more" if len(where) > 10 else ""), errors)
        return out

    def _plain_row(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """The common case without pydantic: every value already a number of the column's own type
        (an int is taken for a float column, as pydantic takes it), finite and within bounds. The
        result is what the validator would give; None sends the row to the validator (coercion of
        text, and every error message)."""
        out: dict[str, Any] = {}
        for name, is_float, required, lo, lo_open, hi, hi_open in self._plain_checks:  # type: ignore[union-attr]
            value = row.get(name, _ABSENT)
            kind = type(value)
            if value is _ABSENT or value is None:
                if required:
                    return None
                out[name] = None
                continue
            if kind is float:
                if not is_float or value != value or value in (math.inf, -math.inf):
                    return None
            elif kind is int:
                if is_float:
                    if not -_FLOAT_INT < value < _FLOAT_INT:  # float() would overflow: the validator says so
                        return None
                    value = float(value)
            else:
                return None
            if lo is not None and (value <= lo if lo_open else value < lo):
                return None
            if hi is not None and (value >= hi if hi_open else value > hi):
                return None
            out[name] = value
        return out

    def json_schema(self) -> dict[str, Any]:
        """The row's JSON schema (for OpenAPI), columns under their own names."""
        return self._validator.model_json_schema(by_alias=True)

    def example_row(self) -> dict[str, Any]:
        example: dict[str, Any] = {}
        for c in self.columns:
            if c.numeric:
                b = c.bounds or Bounds()
                low = b.gt if b.gt is not None else b.ge if b.ge is not None else 0.0
                high = b.lt if b.lt is not None else b.le if b.le is not None else low + 2.0
                value = low + (high - low) / 2 if math.isfinite(high - low) else low + 1.0
                example[c.name] = round(value, 3) if c.python_type is float else int(value)
            else:
                example[c.name] = False if c.type == "boolean" else "text"
        return example


def _build_validator(columns: Sequence[Column]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for i, col in enumerate(columns):
        b = col.bounds or Bounds()
        constraint: dict[str, Any] = {"alias": col.name, "title": col.name}
        if col.numeric:
            constraint.update(gt=b.gt, ge=b.ge, lt=b.lt, le=b.le)
            if col.python_type is int:  # what the model's int64 / int32 column can hold
                limit = 2**63 if col.type == "long" else 2**31
                constraint["ge"] = -limit if b.ge is None else max(b.ge, -limit)
                constraint["le"] = limit - 1 if b.le is None else min(b.le, limit - 1)
            if col.python_type is float:
                constraint["allow_inf_nan"] = False
            if col.bounds is not None:
                constraint["description"] = f"in {b.describe()}"
        annotation: Any = col.python_type
        if col.numeric:  # lax enough for a form's "5.1", but true is not 1.0
            annotation = Annotated[col.python_type, BeforeValidator(reject_bool)]
        if col.required:
            fields[f"c{i}"] = (annotation, Field(**constraint))
        else:
            fields[f"c{i}"] = (annotation | None, Field(None, **constraint))
    return create_model(  # type: ignore[call-overload,no-any-return]
        "Row", __config__=ConfigDict(extra="ignore", frozen=True, populate_by_name=False), **fields)


_ABSENT = object()
_FLOAT_INT = 2**1023  # ints beyond this do not convert to a float
# (column, float?, required, low, low is exclusive, high, high is exclusive)
_PlainCheck = tuple[str, bool, bool, float | None, bool, float | None, bool]


def _plain_checks(columns: Sequence[Column]) -> tuple[_PlainCheck, ...] | None:
    """The checks of ``_plain_row``, or None when a column is not numeric (the validator does all)."""
    if not all(c.numeric for c in columns):
        return None
    checks = []
    for col in columns:
        b = col.bounds or Bounds()
        lo, lo_open = (b.gt, True) if b.gt is not None else (b.ge, False)
        hi, hi_open = (b.lt, True) if b.lt is not None else (b.le, False)
        if b.gt is not None and b.ge is not None:  # both given: the tighter one
            lo, lo_open = (b.gt, True) if b.gt >= b.ge else (b.ge, False)
        if b.lt is not None and b.le is not None:
            hi, hi_open = (b.lt, True) if b.lt <= b.le else (b.le, False)
        if col.python_type is int:  # what the model's int64 / int32 column can hold
            limit = 2**63 if col.type == "long" else 2**31
            lo = -limit if lo is None else max(lo, -limit)
            hi = limit - 1 if hi is None else min(hi, limit - 1)
        checks.append((col.name, col.python_type is float, col.required, lo, lo_open, hi, hi_open))
    return tuple(checks)


def _error(row: int | None, column: str, message: str) -> dict[str, Any]:
    return {"field": column, "message": message} if row is None else {"row": row, "field": column, "message": message}


def _message(err: Any) -> str:
    value = err.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (NaN and infinity are not accepted)"
    if err["type"] == "finite_number":
        return "must be a finite number (NaN and infinity are not accepted)"
    return str(err["msg"])


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
