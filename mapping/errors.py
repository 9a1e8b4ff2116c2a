"""Errors of the mapping package: spec problems (compile time) and apply failures (send time)."""
from __future__ import annotations

from dataclasses import dataclass

from dispatchsim.errors import DispatchsimError, LocatedError


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


class MappingError(DispatchsimError):
    """A payload mapping could not be compiled or applied."""


class MappingSpecError(MappingError, LocatedError):
    """The mapping spec is invalid; every problem found is listed, not just the first.

    ``problems`` keep the mapping's own view (target field, severity); ``errors`` are the same problems as
    located errors (``source:line: field: message``), as every other input file reports them.
    """

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        first = self.problems[0] if self.problems else Problem("", "invalid mapping")
        LocatedError.__init__(self, first.message, source=source, line=first.line, field=first.field or None)
        if len(self.problems) > 1:
            self.errors = tuple(LocatedError(p.message, source=source, line=p.line, field=p.field or None)
                                for p in self.problems)
        self.args = (self._render(),)

    def __str__(self) -> str:
        return self._render()

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
