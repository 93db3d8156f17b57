"""Cheaper pickling for the slotted dataclasses the journal sends to its process and back."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def pickled_by_fields(cls: type[T]) -> type[T]:
    """Give a slotted dataclass a `__getstate__` and `__setstate__` that know its fields already.

    For `slots=True`, dataclasses (3.11) pickle an object as the list of its fields' values, but
    look the fields up again for every object, in Python, both ways. Every write of the journal
    and every result crosses the pipe to the journal process that way. Here the field names are
    read once, and the values are gathered by one `operator.attrgetter` call. The state is the
    same tuple of values in field order, so it stays what dataclasses would read back.
    """
    names = tuple(field.name for field in dataclasses.fields(cls))  # type: ignore[arg-type]
    if len(names) < 2:
        # attrgetter of one name gives the bare value, not a tuple; such a class is left as it is
        raise TypeError(f"{cls.__name__} has fewer than two fields")
    gather: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)

    def getstate(self: Any) -> tuple[Any, ...]:
        return gather(self)

    def setstate(self: Any, state: tuple[Any, ...]) -> None:
        for name, value in zip(names, state, strict=True):
            object.__setattr__(self, name, value)  # the dataclass is frozen

    cls.__getstate__ = getstate  # type: ignore[method-assign]
    cls.__setstate__ = setstate  # type: ignore[attr-defined]
    return cls
