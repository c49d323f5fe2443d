"""The signature drives validation: any valid row is accepted as it is, any invalid one is refused with
an error that names its column (and its row, in a batch)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.errors import InvalidFeatures, SchemaMismatch
from gateway.variants.schema import Bounds, Column, ModelSchema
from tests.harness.strategies import schemas, valid_value


def _signature(columns: list[tuple[str, str, bool]]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(t, n, required=r) for n, t, r in columns]))


def test_schema_from_signature_keeps_names_types_and_optional_columns() -> None:
    sig = _signature([("od280/od315 of wines", "double", True), ("n.rings", "long", True), ("tag", "string", False)])
    schema = ModelSchema.from_signature(sig, "models:/M/1")
    assert schema.names == ["od280/od315 of wines", "n.rings", "tag"]
    assert [c.type for c in schema.columns] == ["double", "long", "string"]
    assert [c.required for c in schema.columns] == [True, True, False]
    rows = schema.validate_rows([{"od280/od315 of wines": "2.5", "n.rings": 3}])
    assert rows == [{"od280/od315 of wines": 2.5, "n.rings": 3, "tag": None}]
    props = schema.json_schema()["properties"]
    assert set(props) == set(schema.names) and schema.json_schema()["required"] == ["od280/od315 of wines", "n.rings"]


def test_missing_or_tensor_signature_names_the_uri() -> None:
    with pytest.raises(SchemaMismatch, match="models:/M/1 has no signature"):
        ModelSchema.from_signature(None, "models:/M/1")
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    tensor = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float64"), (-1, 4))]))
    with pytest.raises(SchemaMismatch, match="runs:/abc/model has a tensor-based signature"):
        ModelSchema.from_signature(tensor, "runs:/abc/model")


def test_difference_names_the_columns() -> None:
    a = ModelSchema((Column("x", "double"), Column("y", "double")))
    b = ModelSchema((Column("x", "double"), Column("z", "long")))
    diff = a.difference(b)
    assert diff is not None and "['y']" in diff and "['z']" in diff
    assert a.difference(ModelSchema((Column("x", "double"), Column("y", "double")))) is None
    c = ModelSchema((Column("x", "long"), Column("y", "double")))
    assert "column 'x': double against long" in (a.difference(c) or "")


def test_bounds_for_unknown_or_text_columns_are_refused() -> None:
    schema = ModelSchema((Column("x", "double"), Column("s", "string")))
    with pytest.raises(SchemaMismatch, match=r"model.bounds: unknown column\(s\) \['nope'\]"):
        schema.with_bounds({"nope": Bounds(gt=0)})
    with pytest.raises(SchemaMismatch, match=r"model\.bounds\.s"):
        schema.with_bounds({"s": Bounds(gt=0)})
    bounded = schema.with_bounds({"x": Bounds(gt=0, le=100)})
    with pytest.raises(InvalidFeatures, match="invalid features: x"):
        bounded.validate_rows([{"x": 0, "s": "a"}])


@settings(max_examples=150, deadline=None)
@given(data=st.data(), schema=schemas())
def test_any_valid_row_is_accepted_unchanged(data: st.DataObject, schema: ModelSchema) -> None:
    n = data.draw(st.integers(1, 4))
    rows = [{c.name: data.draw(valid_value(c)) for c in schema.columns if c.required or data.draw(st.booleans())}
            for _ in range(n)]
    out = schema.validate_rows(rows)
    assert len(out) == n
    for given_row, row in zip(rows, out, strict=True):
        assert list(row) == schema.names  # signature order, optional columns filled with None
        for c in schema.columns:
            assert row[c.name] == given_row.get(c.name)


def _invalid(column: Column) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = [st.just([1, 2]), st.just({"a": 1})]
    if column.numeric:
        options += [st.text(alphabet="abcxyz!?", min_size=1, max_size=5)]
        if column.python_type is float:
            options += [st.sampled_from([math.nan, math.inf, -math.inf])]
        b = column.bounds
        if b is not None and b.gt is not None:
            options.append(st.just(b.gt))
        if b is not None and b.le is not None:
            options.append(st.just(b.le + 1))
    if column.required:
        options.append(st.none())
    return st.one_of(options)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), schema=schemas())
def test_any_invalid_row_names_its_column_and_row(data: st.DataObject, schema: ModelSchema) -> None:
    n = data.draw(st.integers(1, 4))
    rows = [{c.name: data.draw(valid_value(c)) for c in schema.columns} for _ in range(n)]
    bad_row = data.draw(st.integers(0, n - 1))
    column = data.draw(st.sampled_from(schema.columns))
    if column.required and data.draw(st.booleans()):
        del rows[bad_row][column.name]
    else:
        rows[bad_row][column.name] = data.draw(_invalid(column))
    with pytest.raises(InvalidFeatures) as err:
        schema.validate_rows(rows)
    named = [(e.get("row"), e["field"]) for e in err.value.errors]
    assert ((bad_row if n > 1 else None), column.name) in named
    assert column.name in err.value.message


_ANY_NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-2**70, max_value=2**70),
    st.integers(min_value=-2**1100, max_value=2**1100), st.booleans(), st.none(),
    st.sampled_from(["5.1", "x", "", "1e3"]), st.just(0), st.just(100), st.just(100.0), st.just(0.0))


@settings(max_examples=300)
@given(data=st.data(), schema=schemas())
def test_the_plain_path_agrees_with_the_validator(data: st.DataObject, schema: ModelSchema) -> None:
    """Rows of numbers skip pydantic: whatever that path accepts, the validator accepts identically
    (types included); anything else goes to the validator."""
    numeric = ModelSchema(tuple(c for c in schema.columns if c.numeric) or
                          (Column("x", "double", True, Bounds(gt=0, le=100)),))
    row = {c.name: data.draw(_ANY_NUMBER) for c in numeric.columns if data.draw(st.booleans())
           or c.required}
    plain = numeric._plain_row(row)
    if plain is None:
        return
    expected = numeric._validator.model_validate(row).model_dump(by_alias=True)
    assert plain == expected
    assert [type(v) for v in plain.values()] == [type(v) for v in expected.values()]
    assert list(plain) == list(expected)


def test_an_integer_columns_bounds_must_be_whole_numbers() -> None:
    schema = ModelSchema((Column("rings", "long"), Column("x", "double")))
    with pytest.raises(SchemaMismatch, match=r"model.bounds.rings: column 'rings' is long; its bounds must be whole"):
        schema.with_bounds({"rings": Bounds(le=2.5)})
    assert schema.with_bounds({"rings": Bounds(le=3.0), "x": Bounds(gt=0.5)}).validate_rows(
        [{"rings": 3, "x": 1.0}]) == [{"rings": 3, "x": 1.0}]
