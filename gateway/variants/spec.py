"""What the settings say of the models: each variant's name, model URI and weight (``[[variants]]``),
and what the gateway needs to know of the model beyond its signature (``[model]``)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from gateway.domain.validation import Section, reject_bool
from gateway.variants.schema import Bounds


class VariantSpec(Section):
    name: str = Field(min_length=1, max_length=64)
    model_uri: str = Field(min_length=1)
    weight: float = Field(1.0, ge=0)

    _not_bool = field_validator("weight", mode="before")(lambda value: reject_bool(value))

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("model_uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("models:/", "runs:/", "file:", "/", "./", "mlflow-artifacts:")):
            raise ValueError("must be a models:/, runs:/ or local path URI")
        return value


class ModelSection(Section):
    """What the gateway needs to know about the model beyond its signature."""

    name: str | None = Field(None, min_length=1, max_length=128)  # the route name (OIP /v2/models/{name})
    kind: Literal["auto", "classifier", "regressor"] = "auto"
    class_names: list[str] = Field(default_factory=list)  # names for integer classes 0, 1, 2, ...
    bounds: dict[str, Bounds] = Field(default_factory=dict)  # per input column
    max_rows: int = Field(1000, ge=1, le=1_000_000)  # rows per request; past it 413
    # A request the variant has not answered by then gets 504 naming the variant; its queued work is
    # dropped, unlogged. 0: no deadline (a client that disconnects still cancels its queued work).
    request_timeout_ms: float = Field(30_000.0, ge=0, le=3_600_000)
    # A registry version that MLflow no longer has (deleted) is served from the local cache, with a
    # warning, rather than stopping start-up. (Here, not in [variants]: that name is the variants' list.)
    allow_cached: bool = True
    threads: int = Field(1, ge=0, le=256)  # threads one model call may use (variants/threads.py); 0: all cores

    @field_validator("class_names")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("class names must be distinct")
        return value
