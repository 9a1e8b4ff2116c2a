"""The functions a field's ``fn`` pipeline can use.

Each entry builds, at compile time, a step ``step(value, payload) -> value``; a step that cannot
handle the data raises :class:`StepError`, which the field turns into a ``MappingApplyError``.
Arguments are checked when the mapping is compiled (a bad time zone or template is a spec problem).
"""
from __future__ import annotations

import json
import math
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatchsim.errors import DispatchsimError

from .paths import ExpressionError, compile_source, json_type

Step = Callable[[Any, Any], Any]


class StepError(DispatchsimError):
    """A function failed on the data (not on the spec)."""


class ArgumentError(DispatchsimError, ValueError):
    """A function's argument in the spec is wrong."""


def _string_in(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise StepError(f"{name}: expected a string, got {json_type(value)}")
    return value


def _upper(value: Any, payload: Any) -> Any:
    if value.__class__ is str:
        return value.upper()
    return _string_in("upper", value).upper()


def _lower(value: Any, payload: Any) -> Any:
    if value.__class__ is str:
        return value.lower()
    return _string_in("lower", value).lower()


def _trim(value: Any, payload: Any) -> Any:
    return _string_in("trim", value).strip()


def as_text(value: Any) -> str:
    """JSON-flavoured text of a value: ``true`` not ``True``, objects as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    raise StepError(f"cannot turn {json_type(value)} into text")


def _scalar_items(name: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise StepError(f"{name}: expected an array, got {json_type(value)}")
    out = []
    for item in value:
        if item is None:
            continue
        if isinstance(item, (dict, list)):
            raise StepError(f"{name}: array items must be strings, numbers or booleans, got {json_type(item)}")
        out.append(as_text(item))
    return out


def _build_join(separator: Any) -> Step:
    if not isinstance(separator, str):
        raise ArgumentError(f"join: the separator must be a string, got {json_type(separator)}")

    def join(value: Any, payload: Any) -> Any:
        return separator.join(_scalar_items("join", value))
    return join


def _concat(value: Any, payload: Any) -> Any:
    if not isinstance(value, list):
        raise StepError(f"concat: expected an array, got {json_type(value)}")
    items = [item for item in value if item is not None]
    if items and all(isinstance(item, list) for item in items):
        return [x for item in items for x in item]
    return "".join(_scalar_items("concat", items))


def _to_string(value: Any, payload: Any) -> Any:
    return as_text(value)


def _to_number(value: Any, payload: Any) -> Any:
    if isinstance(value, bool):
        raise StepError("to_number: expected a number or a numeric string, got a boolean")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise StepError(f"to_number: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise StepError(f"to_number: {value!r} is not a finite number")
        return number
    raise StepError(f"to_number: expected a number or a numeric string, got {json_type(value)}")


_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0", ""})


def _to_bool(value: Any, payload: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise StepError(f"to_bool: {value!r} is not a boolean (use true/false, yes/no, on/off, 1/0)")
    raise StepError(f"to_bool: expected a boolean, number or string, got {json_type(value)}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_MILLISECOND = timedelta(milliseconds=1)


def _parse_datetime(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise StepError(f"{name}: expected an ISO-8601 date-time string, got {json_type(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise StepError(f"{name}: cannot parse {value!r} as an ISO-8601 date-time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


def _epoch_seconds(value: Any, payload: Any) -> Any:
    return (_parse_datetime("epoch_seconds", value) - _EPOCH) // _SECOND


def _epoch_ms(value: Any, payload: Any) -> Any:
    return (_parse_datetime("epoch_ms", value) - _EPOCH) // _MILLISECOND


def _date_only(value: Any, payload: Any) -> Any:
    return _parse_datetime("date_only", value).date().isoformat()


def _build_to_timezone(zone: Any) -> Step:
    if not isinstance(zone, str) or not zone:
        raise ArgumentError(f"to_timezone: expected a time zone name such as 'Europe/Madrid', got {json_type(zone)}")
    target: tzinfo
    if zone.upper() in ("UTC", "Z"):
        target = UTC
    else:
        try:
            target = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ArgumentError(f"to_timezone: unknown time zone {zone!r} (an IANA name such as 'Europe/Madrid')") from None

    def to_timezone(value: Any, payload: Any) -> Any:
        return _iso(_parse_datetime("to_timezone", value).astimezone(target))
    return to_timezone


def _build_date_format(pattern: Any) -> Step:
    if not isinstance(pattern, str) or not pattern:
        raise ArgumentError(f"date_format: expected a strftime pattern such as '%d/%m/%Y', got {json_type(pattern)}")

    def date_format(value: Any, payload: Any) -> Any:
        return _parse_datetime("date_format", value).strftime(pattern)
    return date_format


def _build_format(template: Any) -> Step:
    """``{value}`` is the current value; any other name is a JMESPath expression over the payload."""
    if not isinstance(template, str):
        raise ArgumentError(f"format: expected a template string, got {json_type(template)}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ArgumentError(f"format: bad template {template!r}: {exc}") from None
    parts: list[tuple[str, Any, str, str]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None, "", ""))
            continue
        name = name.strip()
        if not name or name.isdigit():
            raise ArgumentError(f"format: positional field '{{{name}}}' in {template!r}: "
                                "name {value} or a payload field such as {commerceName}")
        if conversion not in (None, "s"):
            raise ArgumentError(f"format: conversion '!{conversion}' is not supported (field '{name}')")
        if spec and "{" in spec:
            raise ArgumentError(f"format: nested fields in the format spec of '{name}' are not supported")
        if name == "value":
            getter = None
        else:
            try:
                getter = compile_source(name).get
            except ExpressionError as exc:
                raise ArgumentError(f"format: field '{{{name}}}': {exc}") from None
        parts.append((literal, (name, getter), spec or "", ""))

    def render(value: Any, payload: Any) -> Any:
        out = []
        for literal, field, spec, _ in parts:
            if literal:
                out.append(literal)
            if field is None:
                continue
            name, getter = field
            item = value if getter is None else getter(payload)
            if item.__class__ is str and not spec:
                out.append(item)
                continue
            if item is None:
                raise StepError(f"format: '{{{name}}}' is null or missing")
            if isinstance(item, (bool, dict, list)):
                item = as_text(item)
            try:
                out.append(format(item, spec))
            except (ValueError, TypeError):
                raise StepError(f"format: cannot format {json_type(item)} with ':{spec}' (field '{name}')") from None
        return "".join(out)
    return render


#: name -> (argument: "none" | "required", step or builder)
FUNCTIONS: dict[str, tuple[str, Any]] = {
    "upper": ("none", _upper),
    "lower": ("none", _lower),
    "trim": ("none", _trim),
    "join": ("required", _build_join),
    "concat": ("none", _concat),
    "format": ("required", _build_format),
    "epoch_seconds": ("none", _epoch_seconds),
    "epoch_ms": ("none", _epoch_ms),
    "date_only": ("none", _date_only),
    "to_timezone": ("required", _build_to_timezone),
    "date_format": ("required", _build_date_format),
    "to_number": ("none", _to_number),
    "to_string": ("none", _to_string),
    "to_bool": ("none", _to_bool),
}

_ARGUMENT_EXAMPLES = {
    "join": "{join: ', '}",
    "format": "{format: '{commerceName} ({value})'}",
    "to_timezone": "{to_timezone: Europe/Madrid}",
    "date_format": "{date_format: '%d/%m/%Y'}",
}


def build_step(name: str, argument: Any, has_argument: bool) -> Step:
    """The step for one pipeline entry; raises :class:`ArgumentError` for spec mistakes."""
    entry = FUNCTIONS.get(name)
    if entry is None:
        raise ArgumentError(f"unknown function '{name}' (known: {', '.join(sorted(FUNCTIONS))})")
    mode, impl = entry
    if mode == "none":
        if has_argument and argument is not None:
            raise ArgumentError(f"{name} takes no argument, got {json_type(argument)}")
        return impl
    if not has_argument or argument is None:
        raise ArgumentError(f"{name} needs an argument, e.g. {_ARGUMENT_EXAMPLES[name]}")
    return impl(argument)
