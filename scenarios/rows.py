"""Deliveries and attempts of a finished run, kept compact for the reports and the expectations.

A run result holds every delivery and attempt as the JSON-ready data the engine's API gives
(``d["status"]``, ``a["started_at"]`` …). As dicts, 10,000 deliveries and 21,000 attempts took
about 14 MB; a :class:`Row` keeps the values in a tuple and shares the key index with every row
of its kind, a third of that.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Row(Mapping[str, Any]):
    """A read-only mapping over ``values``, whose keys are the shared ``index`` (name -> position)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: tuple[Any, ...]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[self._index[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return repr(dict(self))


class RowKind:
    """Makes the :class:`Row` objects of one kind (e.g. deliveries) from the API's dicts."""

    def __init__(self) -> None:
        self._index: dict[str, int] | None = None

    def __call__(self, data: dict[str, Any]) -> Row:
        index = self._index
        if index is None or len(index) != len(data) or any(a != b for a, b in zip(index, data)):
            index = self._index = {key: i for i, key in enumerate(data)}
        return Row(index, tuple(data.values()))
