"""Errors of the mapping package: spec problems (compile time) and apply failures (send time)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with (or worth a warning about) a mapping spec.

    ``field`` is the target field (``task.ref``) or the top-level spec key (``wrap``);
    ``line`` is the 1-based line in the mapping file when the spec came from one.
    """

    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        return f"line {self.line}: {text}" if self.line is not None else text

    def located(self, source: str, severity: str | None = None) -> str:
        """``file:line: [severity: ]field: message`` — the form editors and CI logs link to."""
        text = f"{self.field}: {self.message}" if self.field else self.message
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {severity}: {text}" if severity else f"{where}: {text}"


class MappingError(Exception):
    """A payload mapping could not be compiled or applied."""


class MappingSpecError(MappingError):
    """The mapping spec is invalid; every problem found is listed, not just the first."""

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        if self.source is not None:
            parts = [p.located(self.source) for p in self.problems]
        else:
            parts = [str(p) for p in self.problems]
        return "; ".join(parts) or "invalid mapping"


class MappingApplyError(MappingError):
    """The payload cannot be mapped (a required value is missing, a function fails on the data).

    Resending cannot fix it, so the engine fails the delivery with reason ``mapping_error``.
    """

    def __init__(self, field: str, message: str, source: str | None = None) -> None:
        self.field = field
        self.message = message
        self.source = source
        text = f"{field}: {message}" if field else message
        if source is not None:
            text += f" (source: {source})"
        super().__init__(text)
