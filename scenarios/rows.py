"""Deliveries, attempts and activity ids of a finished run, streamed from the run's database.

A run of 100,000 activities leaves about 100,000 deliveries and 110,000 attempts; held as lists
(even compact ones) they were most of the run's peak memory. A :class:`Rows` reads them again, a
page at a time, each time it is iterated: the expectations and the reports make a few passes each
and keep only what they aggregate.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Rows(Generic[T]):
    """A re-iterable, sized view of one kind of row (e.g. deliveries as the API's JSON dicts).

    Each iteration is a new pass over the database; ``len`` is counted once, when first asked.
    """

    __slots__ = ("_read", "_count", "_len")

    def __init__(self, read: Callable[[], Iterator[T]], count: Callable[[], int]) -> None:
        self._read = read
        self._count = count
        self._len: int | None = None

    def __iter__(self) -> Iterator[T]:
        return self._read()

    def __len__(self) -> int:
        if self._len is None:
            self._len = self._count()
        return self._len

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        return f"<Rows: {len(self)}>"
