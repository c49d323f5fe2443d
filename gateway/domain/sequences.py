"""A sequence whose items are built only when asked for: a batch's columns stay columns, and an
object per row exists only where one is indexed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class OnDemand(Sequence[T]):
    """Subclasses give ``__len__`` and ``item(i)`` for 0 <= i < len; indexing (negative indexes,
    slices as lists), iteration and equality with any sequence of the same items follow."""

    __slots__ = ()

    def item(self, i: int) -> T:
        raise NotImplementedError

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.item(i) for i in range(len(self))[index]]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.item(index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]
