"""Activities as the engine accepts and renders them, in the one shape of :mod:`dispatchsim.mapping.activity`.

The stored form keeps everything except the derived fields (``canForceRetryDispatch``,
``activityResult``), which the store fills in when it renders an activity, so the payload
sent always equals what the store returns for that activity at that moment.
"""
from __future__ import annotations

import functools
import json
from typing import Any, AnyStr, NamedTuple

from dispatchsim.mapping.activity import (ACTIVITY_TYPES, DEFAULTS, DERIVED, NESTED_SHAPES, OBJECT_OR_NULL,
                                          PAYLOAD_KEYS, STRING_OR_NULL, TEXT, TIMESTAMPS)
from dispatchsim.yamlfile import valid_text

from .clock import iso, parse_iso
from .errors import ActivityError
from .jsontext import encode_body
from .values import show_key, value_problems

def _nested_problems(value: Any, shape: dict[str, Any], where: str) -> list[str]:
    """Problems of one nested object against its seed shape: unknown keys, wrong kinds, invalid text."""
    if not isinstance(value, dict):
        return [f"{where}: must be an object or null, got {type(value).__name__}"]
    problems = []
    if not value.keys() <= shape.keys():  # every activity is checked: the usual case costs one comparison
        unknown = sorted((show_key(k) for k in value if k not in shape), key=str)
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)} (the seed has {', '.join(shape)})")
    for key, kind in shape.items():
        item = value.get(key)
        if item is None:
            continue
        if kind == TEXT:
            if not isinstance(item, str):
                problems.append(f"{where}.{key}: must be a string or null, got {type(item).__name__}")
            elif not valid_text(item):  # the dotted name is made only for a problem
                problems.extend(value_problems(item, f"{where}.{key}"))
        else:
            problems.extend(_nested_problems(item, kind, f"{where}.{key}"))
    return problems


#: every field a caller's activity may hold (and the derived ones, refused with their own message)
_KNOWN = frozenset(PAYLOAD_KEYS)


def _field_problems(data: dict[str, Any]) -> list[str]:
    """Every problem of the activity's fields outside the timestamps, each naming its dotted field."""
    problems: list[str] = []
    if not data.keys() <= _KNOWN:
        unknown = sorted((show_key(k) for k in data if k not in _KNOWN), key=str)
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    if not DERIVED.isdisjoint(data):
        derived = sorted(k for k in data if k in DERIVED)
        problems.append(f"field(s) set by the engine, not the caller: {', '.join(derived)}")
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        problems.append("channel: required, a non-empty string such as SALESMAN")
    elif not valid_text(channel):
        problems.extend(value_problems(channel, "channel"))
    typ = data.get("type", "TASK")
    if not isinstance(typ, str) or typ not in ACTIVITY_TYPES:
        problems.append(f"type: must be one of {', '.join(ACTIVITY_TYPES)}, not {typ!r}")
    for key in STRING_OR_NULL:
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                problems.append(f"{key}: must be a string or null, got {type(value).__name__}")
            elif not valid_text(value):
                problems.extend(value_problems(value, key))
    for key in OBJECT_OR_NULL:
        value = data.get(key)
        if value is not None:
            problems.extend(_nested_problems(value, NESTED_SHAPES[key], key))
    return problems


def _quick_nested(value: Any, shape: dict[str, Any], texts: list[str]) -> bool:
    """:func:`_quick_valid` of one nested object: known keys, strings or objects of the right shape."""
    if not isinstance(value, dict) or not value.keys() <= shape.keys():
        return False
    for key, item in value.items():
        if item is None:
            continue
        kind = shape[key]
        if kind == TEXT:
            if not isinstance(item, str):
                return False
            texts.append(item)
        elif not _quick_nested(item, kind, texts):
            return False
    return True


def _quick_valid(data: dict[str, Any]) -> bool:
    """True only when :func:`build_stored_payload` would find no problem outside the timestamps: the
    question a valid activity answers at once, with every string's validity checked by one encode
    of them all instead of one per field. False sends the activity through the checks that name
    each problem (nothing is refused here)."""
    if not data.keys() <= _KNOWN or not DERIVED.isdisjoint(data):
        return False
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        return False
    typ = data.get("type", "TASK")
    if not isinstance(typ, str) or typ not in ACTIVITY_TYPES:
        return False
    texts = [channel]
    for key in STRING_OR_NULL:
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                return False
            texts.append(value)
    for key in OBJECT_OR_NULL:
        value = data.get(key)
        if value is not None and not _quick_nested(value, NESTED_SHAPES[key], texts):
            return False
    return valid_text("".join(texts))


def build_stored_payload(data: dict[str, Any], *, activity_id: str, created_at: float) -> dict[str, Any]:
    """Validate caller fields, nested ones included, and return the stored payload (seed key order,
    derived fields unset). Every problem is reported at once, each naming its dotted field.

    A valid activity answers each question at once (:func:`_quick_valid`); only one that does not
    is checked field by field, to list its problems: a burst of 10,000 activities was checked key
    by key."""
    if not isinstance(data, dict):
        raise ActivityError(f"activity must be a JSON object, got {type(data).__name__}")
    problems: list[str] = [] if _quick_valid(data) else _field_problems(data)
    stamps: dict[str, str | None] = {}
    for key in TIMESTAMPS:
        value = data.get(key)
        if value is None:
            stamps[key] = None
        elif isinstance(value, str):
            try:
                stamps[key] = _normal_stamp(value)
            except (ValueError, OverflowError):
                problems.append(f"{key}: not an ISO-8601 timestamp: {value!r}")
        else:
            problems.append(f"{key}: must be an ISO-8601 string or null")
    if problems:
        split = tuple(_split(p) for p in problems)
        raise ActivityError("invalid activity: " + "; ".join(problems),
                            fields=tuple(f for f, _ in split if f is not None), problems=split)
    # the seed's key order; the derived fields are set below, in their places
    out = {key: data.get(key, DEFAULTS.get(key)) for key in PAYLOAD_KEYS}
    out["id"] = activity_id
    out["createdAt"] = iso(created_at)
    out["canForceRetryDispatch"] = out["activityResult"] = None  # rendered by the store
    out.update(stamps)
    return out


@functools.lru_cache(maxsize=1024)
def _normal_stamp(text: str) -> str:
    """A caller's timestamp in the wire format. Cached: parsing and formatting were a third of an
    activity's validation, and the activities of a burst often share their times."""
    return iso(parse_iso(text))


def _split(problem: str) -> tuple[str | None, str]:
    """``field: message`` -> (field, message); ``unknown field(s): …`` and engine-owned ones name none."""
    head, _, rest = problem.partition(": ")
    return (head, rest) if rest and " " not in head else (None, problem)


def render(stored: dict[str, Any], *, can_force_retry: bool, result: Any) -> dict[str, Any]:
    out = dict(stored)
    out["canForceRetryDispatch"] = bool(can_force_retry)
    out["activityResult"] = result
    return out




class _Splice(NamedTuple):
    """The pieces :func:`spliced_body` looks for and puts in, all ``str`` or all ``bytes`` (the
    stored text's type)."""

    force_key: Any
    result_key: Any
    force_null: Any  #: the derived keys as the store writes them: both null
    result_null: Any
    true: Any
    false: Any
    null: Any
    comma: Any
    close: Any
    empty: Any


def _splice(encode: bool) -> _Splice:
    parts = ('"canForceRetryDispatch":', '"activityResult":', ',"canForceRetryDispatch":null,',
             ',"activityResult":null}', "true,", "false,", "null", ",", "}", "")
    return _Splice(*(p.encode() if encode else p for p in parts))


_SPLICE: dict[type, _Splice] = {str: _splice(False), bytes: _splice(True)}


def rendered_body(stored: AnyStr, *, can_force_retry: bool, result: AnyStr | None) -> bytes:
    """The body of an activity's default payload from its stored JSON text and its result's JSON text:
    byte for byte ``encode_body(render(json.loads(stored), ...))``, spliced when the text is in the
    form the store writes (see :func:`spliced_body`), decoded and rendered otherwise."""
    body = spliced_body(stored, can_force_retry=can_force_retry, result=result)
    if body is None:
        body = encode_body(render(json.loads(stored), can_force_retry=can_force_retry,
                                  result=None if result is None else json.loads(result)))
    return body


def spliced_body(stored: AnyStr, *, can_force_retry: bool, result: AnyStr | None) -> bytes | None:
    """The store writes a payload with :func:`encode_body`'s settings and both derived fields
    ``null``, so the body is that text with the two values filled in: a dispatch neither decodes nor
    re-encodes the payload. A key spelled with unescaped quotes is always a key (a quote inside a
    string is escaped), so each derived key occurring once means it is the top-level one. None for
    text in any other form (written by hand or by a bulk load, not by the store).

    The text may be UTF-8 bytes (``result`` then too), as SQLite reads it for a dispatch: spliced as
    bytes, the body needs neither the text decoded from the database nor encoded again. (Every byte
    of a character beyond ASCII is 0x80 or above, so the ASCII keys are found in the bytes exactly
    where they are in the text.)"""
    k = _SPLICE[type(stored)]
    at = stored.find(k.force_null)
    if (at < 0 or not stored.endswith(k.result_null) or stored.count(k.force_key) != 1
            or stored.count(k.result_key) != 1):
        return None
    cut = at + len(k.force_null)
    body = k.empty.join((stored[:at], k.comma, k.force_key, k.true if can_force_retry else k.false,
                         stored[cut:-len(k.result_null)], k.comma, k.result_key,
                         k.null if result is None else result, k.close))
    return body if isinstance(body, bytes) else body.encode()
