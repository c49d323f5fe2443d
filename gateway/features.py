"""The four iris measurements, validated the same way whatever the body's encoding."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidFeatures

FEATURE_NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASS_NAMES = ("Setosa", "Versicolor", "Virginica")

_measure = Field(gt=0, le=100, allow_inf_nan=False, description="centimetres, in (0, 100]")


class IrisFeatures(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sepal_length: float = _measure
    sepal_width: float = _measure
    petal_length: float = _measure
    petal_width: float = _measure

    def as_row(self) -> list[float]:
        return [self.sepal_length, self.sepal_width, self.petal_length, self.petal_width]

    @classmethod
    def parse(cls, data: Any) -> IrisFeatures:
        """Validate a mapping; raise InvalidFeatures naming every bad field."""
        if not isinstance(data, dict):
            raise InvalidFeatures(
                "body must be an object with the four features",
                [{"field": "body", "message": f"expected an object, got {type(data).__name__}"}],
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = []
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "body"
                message = err["msg"]
                value = err.get("input")
                if isinstance(value, float) and not math.isfinite(value):
                    message = "must be a finite number (NaN and infinity are not measurements)"
                errors.append({"field": field, "message": message})
            names = ", ".join(str(e["field"]) for e in errors)
            raise InvalidFeatures(f"invalid features: {names}", errors) from None
