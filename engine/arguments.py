"""The arguments of the library's public calls, checked where they come in.

A caller's wrong value would otherwise travel on to the database driver or to arithmetic and come
back as sqlite3's or Python's own error (a list for a delivery id, text for a page size, an integer
too large for the database), or worse as a plausible answer (a negative page size: an empty page;
NaN seconds: a run that never ends). :func:`checked_calls` reads the annotations of a class's public
coroutine methods once and refuses such values with :class:`InvalidArgument`, naming the call and
the argument, before the method runs. The annotations are the rule: what a method declares is what
it accepts.
"""
from __future__ import annotations

import enum
import functools
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from dispatchsim.yamlfile import valid_text

from .clock import is_clock
from .errors import InvalidArgument
from .sender import Sender
from .store_file import OwnerLock

#: The largest integer both stores hold (a signed 64-bit column); a larger id matches nothing anyway.
INT64_MAX = 2**63 - 1

#: Bounds of arguments by name, the same in every call that has one.
BOUNDS: Mapping[str, tuple[float, float]] = {
    "limit": (1, INT64_MAX - 1),  # a page of nothing is no page; one more is read to see if a page follows
    "after": (0, INT64_MAX),
    "after_id": (0, INT64_MAX),
    "seconds": (0, math.inf),
    "max_time": (0, math.inf),
    "deadline": (0, math.inf),
}

#: Arguments their method checks itself, with a richer error (an activity body: ActivityError naming its fields).
THEIR_OWN = frozenset({"data"})

C = TypeVar("C", bound=type)


@dataclass(frozen=True)
class _Rule:
    """What one argument accepts: values of ``kinds`` (None too when ``optional``), numbers within
    ``low``..``high``, and for an enum annotation its members or their values."""

    name: str
    kinds: tuple[type, ...]
    optional: bool
    low: float = -INT64_MAX - 1
    high: float = INT64_MAX
    choices: frozenset[str] = frozenset()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or None when it is accepted."""
        if value is None:
            return None if self.optional else f"required, got None (expected {self._expected()})"
        if isinstance(value, bool) and bool not in self.kinds:
            return f"must be {self._expected()}, got a bool"
        if not isinstance(value, self.kinds):
            return f"must be {self._expected()}, got {type(value).__name__}"
        if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and self.high != math.inf)):
            return f"must be a finite number, got {_shown(value)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value < self.low:
                return f"must be at least {_number(self.low)}, got {_shown(value)}"
            if value > self.high:
                return f"must be at most {_number(self.high)}, got {_shown(value)}"
        if isinstance(value, str):
            if not valid_text(value):
                return "not valid Unicode text (a lone surrogate such as \\ud800)"
            if self.choices and (value.value if isinstance(value, enum.Enum) else value) not in self.choices:
                return f"must be one of {', '.join(sorted(self.choices))}, got {_shown(value)}"
        return None

    def _expected(self) -> str:
        names = {str: "text", int: "an integer", float: "a number", bool: "True or False", dict: "a dict",
                 types.MappingProxyType: "a dict", list: "a list", tuple: "a list"}
        return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in self.kinds if k is not int
                                         or float not in self.kinds))


def _number(bound: float) -> str:
    return str(int(bound)) if math.isfinite(bound) and bound == int(bound) else str(bound)


def _shown(value: Any) -> str:
    """``value`` as the message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rule(name: str, hint: Any) -> _Rule | None:
    """The rule of an annotation made of plain kinds (text, numbers, bools, dicts, lists, one enum), an
    optional one; None for anything else (an object of ours, ``Any``), which is not checked here."""
    parts = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    optional = type(None) in parts
    kinds: list[type] = []
    choices: frozenset[str] = frozenset()
    for part in parts:
        if part is type(None):
            continue
        base = typing.get_origin(part) or part
        if isinstance(base, type) and issubclass(base, enum.Enum):
            choices = frozenset(str(m.value) for m in base)
            kinds.append(str)
        elif base is list:
            kinds += [list, tuple]  # a sequence: a tuple of items is one too
        elif base is dict:
            kinds += [dict, types.MappingProxyType]
        elif base in (str, int, bool):
            kinds.append(base)
        elif base is float:
            kinds += [int, float]  # a number: an integer is one too
        else:
            return None
    low, high = BOUNDS.get(name, (-INT64_MAX - 1, INT64_MAX))
    return _Rule(name, tuple(dict.fromkeys(kinds)), optional, low, high, choices)


def _checked(owner: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` checking its plain arguments first (positional or by keyword; defaults are not checked)."""
    hints = typing.get_type_hints(fn)
    rules: list[tuple[int | None, _Rule]] = []
    for pos, (pname, param) in enumerate(inspect.signature(fn).parameters.items()):
        if pname in THEIR_OWN or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        rule = _rule(pname, hints.get(pname, Any))
        if rule is not None:
            rules.append((None if param.kind is param.KEYWORD_ONLY else pos, rule))
    where = f"{owner}.{fn.__name__}"

    @functools.wraps(fn)
    async def call(*args: Any, **kw: Any) -> Any:
        for pos, rule in rules:
            if rule.name in kw:
                value = kw[rule.name]
            elif pos is not None and pos < len(args):
                value = args[pos]
            else:
                continue
            problem = rule.problem(value)
            if problem is not None:
                raise InvalidArgument(f"{problem} ({where})", field=rule.name)
        return await fn(*args, **kw)

    return call


def checked_calls(cls: C) -> C:
    """Check the arguments of every public coroutine method ``cls`` defines (see the module's docstring)."""
    for name, attr in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(attr):
            setattr(cls, name, _checked(cls.__name__, attr))
    return cls


#: What :meth:`Engine.open` passes on to the engine itself, besides its own arguments.
ENGINE_OPTIONS = ("log_stream", "log_format", "concurrency", "lease_margin", "sender")
#: The most attempts one engine runs at once (a limit of its HTTP connections, too).
MAX_ENGINE_CONCURRENCY = 10_000
#: The most connections of one engine's PostgreSQL pool.
MAX_POOL_SIZE = 1000


def open_problem(path: Any, *, clock: Any, virtual: Any, seed: Any, durable: Any, pool_size: Any, scratch: Any,
                 owner: Any, options: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first argument :meth:`Engine.open` refuses, as ``(argument, why and what to give)``; None when all
    are accepted. Checked before anything is opened, so a refused call leaves no file and no lock behind."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        return "path", (f"must be a SQLite file path (str or pathlib.Path), ':memory:' or a postgresql:// URL, "
                        f"got {type(path).__name__}")
    if not os.fspath(path).strip():
        return "path", "must not be empty: give a SQLite file path, ':memory:' or a postgresql:// URL"
    if not valid_text(os.fspath(path)) or "\x00" in os.fspath(path):
        return "path", "not valid text for a file name (a NUL or a lone surrogate)"
    if clock is not None and not is_clock(clock):
        return "clock", (f"must be a clock (dispatchsim.VirtualClock() or RealClock()), got {type(clock).__name__}; "
                         "or leave it out and say virtual=True or False")
    for name, value in (("virtual", virtual), ("scratch", scratch)):
        if not isinstance(value, bool):
            return name, f"must be True or False, got {_shown(value)}"
    if durable is not None and not isinstance(durable, bool):
        return "durable", f"must be True, False or None (the clock decides), got {_shown(durable)}"
    if virtual and clock is not None and not clock.virtual:
        return "virtual", "virtual=True with a clock that is not virtual: give one or the other"
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "seed", f"must be an integer or None, got {_shown(seed)}"
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= MAX_POOL_SIZE:
        return "pool_size", f"must be a whole number from 1 to {MAX_POOL_SIZE}, got {_shown(pool_size)}"
    if owner is not None and not isinstance(owner, OwnerLock):
        return "owner", f"must be an OwnerLock the caller holds, or None, got {type(owner).__name__}"
    return options_problem(options)


def options_problem(options: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first engine option (see :data:`ENGINE_OPTIONS`) refused, as ``(argument, message)``; None if none."""
    concurrency = options.get("concurrency", 100)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
            or not 1 <= concurrency <= MAX_ENGINE_CONCURRENCY:
        return "concurrency", f"must be a whole number from 1 to {MAX_ENGINE_CONCURRENCY}, got {_shown(concurrency)}"
    lease_margin = options.get("lease_margin", 30.0)
    if isinstance(lease_margin, bool) or not isinstance(lease_margin, (int, float)) \
            or not math.isfinite(lease_margin) or lease_margin <= 0:
        return "lease_margin", f"must be a number of seconds above 0, got {_shown(lease_margin)}"
    if options.get("log_format", "json") not in ("json", "console"):
        return "log_format", f"must be json or console, got {_shown(options.get('log_format'))}"
    stream = options.get("log_stream")
    if stream is not None and not callable(getattr(stream, "write", None)):
        return "log_stream", f"must be a text stream such as sys.stderr or an open file, got {type(stream).__name__}"
    sender = options.get("sender")
    if sender is not None and not isinstance(sender, Sender):
        return "sender", f"must be a Sender or None, got {type(sender).__name__}"
    return None


__all__ = ["BOUNDS", "ENGINE_OPTIONS", "INT64_MAX", "checked_calls", "open_problem", "options_problem"]
