"""The one error root of dispatchsim, and the located error every input file and value check raises.

This module imports nothing of ours, so every part (mapping and providers included, which may not know
the engine) can raise these. A located error says where (``file:line``), which key (``retry.cap``) and
what is wrong; one exception can carry every problem found in a file, so a user fixes them in one go.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager


class DispatchsimError(Exception):
    """dispatchsim failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class LocatedError(DispatchsimError, ValueError):
    """An input is invalid at a place we can name; nothing was done with it.

    ``str()`` is ``source:line: field: message`` (the parts that are known), one line per problem when
    the error carries several (``errors``, each a single problem). ``source``, ``line``, ``field`` and
    ``message`` are those of the first problem.
    """

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        self.errors: tuple[LocatedError, ...] = (self,)
        super().__init__(self.located())

    def located(self) -> str:
        """This one problem as ``source:line: field: message``, the form editors and CI logs link to."""
        if self.source is not None:
            where = self.source if self.line is None else f"{self.source}:{self.line}"
        else:
            where = None if self.line is None else f"line {self.line}"
        return ": ".join([p for p in (where, self.field) if p] + [self.message])

    def __str__(self) -> str:
        return "\n".join(e.located() for e in self.errors)

    @classmethod
    def of(cls, errors: Sequence[LocatedError]) -> LocatedError:
        """One exception of this class carrying every problem in ``errors`` (at least one), in order."""
        errors = all_errors(errors)
        if not errors:
            raise ValueError("no errors to report")
        first = errors[0]
        out = cls(first.message, source=first.source, line=first.line, field=first.field)
        if len(errors) > 1:
            out.errors = tuple(errors)  # each a single problem (its own ``errors`` is itself)
            out.args = (str(out),)
        return out


class ReportedAlready(LocatedError):
    """A check cannot go on, and its cause is one of the problems reported already (a required key missing
    because it is misspelt: the unknown key says so). It stops the check of its item and adds nothing to
    the list, so one mistake is reported once. Raise it only inside :meth:`Collector.guard`."""

    def __init__(self) -> None:
        super().__init__("reported already")
        self.errors = ()


def misspelt(key: str, unknown: Iterable[object]) -> bool:
    """``key`` (missing) is probably one of the ``unknown`` keys written instead (``delivry`` for ``delivery``)."""
    return bool(difflib.get_close_matches(key, [str(k) for k in unknown], n=1, cutoff=0.6))


def all_errors(errors: Iterable[LocatedError]) -> list[LocatedError]:
    """Flatten exceptions that carry several problems into one list of single problems."""
    return [single for exc in errors for single in exc.errors]


class Collector:
    """Gathers located errors so a parser can go on after a mistake and report every problem at once.

    ``with collector.guard(): ...`` records a :class:`LocatedError` raised inside and continues after the
    block; :meth:`raise_if_any` raises them all as one exception of the caller's class (or
    :class:`ReportedAlready` when a block stopped on a problem reported elsewhere: what the caller was
    building is incomplete all the same).
    """

    def __init__(self) -> None:
        self.errors: list[LocatedError] = []
        self.stopped = False  #: a guarded block stopped (its problem may be reported elsewhere)

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except LocatedError as exc:
            self.errors.extend(exc.errors)
            self.stopped = True

    def raise_if_any(self, cls: type[LocatedError]) -> None:
        if self.errors:
            raise cls.of(self.errors)
        if self.stopped:
            raise ReportedAlready()
