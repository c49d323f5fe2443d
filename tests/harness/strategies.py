"""Hypothesis strategies shared by the property and stateful tests."""

from __future__ import annotations

from hypothesis import strategies as st

from gateway.routing.spec import RoutingConfig, ShadowSection
from gateway.variants.schema import Bounds, Column, ModelSchema
from gateway.variants.spec import VariantSpec

variant_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=8)
user_keys = st.text(min_size=1, max_size=40)
salts = st.text(max_size=16)


@st.composite
def weight_lists(draw: st.DrawFn, min_size: int = 2, max_size: int = 5) -> list[float]:
    """Non-negative weights with a positive sum; zeros allowed."""
    weights = draw(st.lists(st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0, 2.0, 3.0]),
                            min_size=min_size, max_size=max_size))
    if sum(weights) == 0:
        weights[draw(st.integers(0, len(weights) - 1))] = 1.0
    return weights


def routing_config(weights: list[float], salt: str = "iris-ab", mode: str = "weighted") -> RoutingConfig:
    variants = tuple(VariantSpec(name=f"v{i}.0", model_uri=f"models:/M/{i + 1}", weight=w)
                     for i, w in enumerate(weights))
    shadow = ShadowSection(primary=variants[0].name, candidate=variants[-1].name, sample_rate=1.0)
    return RoutingConfig(mode=mode, variants=variants, shadow=shadow, salt=salt)  # type: ignore[arg-type]


iris_values = st.floats(min_value=0.01, max_value=100.0, allow_nan=False, allow_infinity=False)
bad_values = st.one_of(
    st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")),
    st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=100.0001, allow_nan=False, allow_infinity=False),
    st.text(alphabet="abcxyz!?", min_size=1, max_size=5),
)


# -- model schemas ---------------------------------------------------------------------------------

_column_names = st.text(alphabet="abcxyzAB019 ._/-():%é", min_size=1, max_size=12).filter(lambda s: s.strip() == s)


@st.composite
def schemas(draw: st.DrawFn) -> ModelSchema:
    """Column-based schemas with awkward names, every supported type, optional columns and bounds."""
    names = draw(st.lists(_column_names, min_size=1, max_size=6, unique=True))
    columns = []
    for name in names:
        kind = draw(st.sampled_from(["double", "float", "long", "integer", "boolean", "string"]))
        numeric = kind in ("double", "float", "long", "integer")
        bounds = Bounds(gt=0, le=100) if numeric and draw(st.booleans()) else None
        columns.append(Column(name, kind, draw(st.booleans()), bounds))
    return ModelSchema(tuple(columns))


def valid_value(column: Column) -> st.SearchStrategy[object]:
    if column.type in ("double", "float"):
        if column.bounds is not None:
            return st.floats(min_value=0.001, max_value=100.0)
        return st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
    if column.type in ("long", "integer"):
        return st.integers(1, 100) if column.bounds is not None else st.integers(-(10**9), 10**9)
    if column.type == "boolean":
        return st.booleans()
    return st.text(max_size=10)


@st.composite
def bucket_counts(draw: st.DrawFn, arms: list[str], floor: int = 0) -> dict[str, int]:
    """Whole buckets per arm summing to allocation.BUCKETS, none below ``floor``."""
    from gateway.routing import allocation

    weights = draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=len(arms), max_size=len(arms)))
    if sum(weights) <= 0:
        weights = [1.0] * len(arms)
    return allocation.quantise(dict(zip(arms, weights, strict=True)), floor)
