"""What every settings section and request body shares: a section refuses unknown keys, and a number
field refuses JSON's true/false."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section: a key it does not know is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def reject_bool(value: Any) -> Any:
    """A pydantic before-validator: JSON's true/false are not numbers (pydantic's lax mode takes them)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value
