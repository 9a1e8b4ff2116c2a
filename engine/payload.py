"""Activities as the engine accepts and renders them, in the one shape of :mod:`dispatchsim.mapping.activity`.

The stored form keeps everything except the derived fields (``canForceRetryDispatch``,
``activityResult``), which the store fills in when it renders an activity, so the payload
sent always equals what the store returns for that activity at that moment.
"""
from __future__ import annotations

from typing import Any

from dispatchsim.mapping.activity import (ACTIVITY_TYPES, DEFAULTS, DERIVED, OBJECT_OR_NULL, PAYLOAD_KEYS,
                                       STRING_OR_NULL, TIMESTAMPS)

from .clock import iso, parse_iso
from .errors import ActivityError

def build_stored_payload(data: dict[str, Any], *, activity_id: str, created_at: float) -> dict[str, Any]:
    """Validate caller fields and return the stored payload (seed key order, derived fields unset)."""
    if not isinstance(data, dict):
        raise ActivityError(f"activity must be a JSON object, got {type(data).__name__}")
    problems: list[str] = []
    unknown = sorted(k for k in data if k not in PAYLOAD_KEYS)
    if unknown:
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    derived = sorted(k for k in data if k in DERIVED)
    if derived:
        problems.append(f"field(s) set by the engine, not the caller: {', '.join(derived)}")
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        problems.append("channel: required, a non-empty string such as SALESMAN")
    typ = data.get("type", "TASK")
    if typ not in ACTIVITY_TYPES:
        problems.append(f"type: must be one of {', '.join(ACTIVITY_TYPES)}, not {typ!r}")
    for key in STRING_OR_NULL:
        if key in data and data[key] is not None and not isinstance(data[key], str):
            problems.append(f"{key}: must be a string or null")
    for key in OBJECT_OR_NULL:
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            problems.append(f"{key}: must be an object or null")
    stamps: dict[str, str | None] = {}
    for key in TIMESTAMPS:
        value = data.get(key)
        if value is None:
            stamps[key] = None
        elif isinstance(value, str):
            try:
                stamps[key] = iso(parse_iso(value))
            except ValueError:
                problems.append(f"{key}: not an ISO-8601 timestamp: {value!r}")
        else:
            problems.append(f"{key}: must be an ISO-8601 string or null")
    if problems:
        raise ActivityError("invalid activity: " + "; ".join(problems))
    out: dict[str, Any] = {}
    for key in PAYLOAD_KEYS:
        if key == "id":
            out[key] = activity_id
        elif key == "createdAt":
            out[key] = iso(created_at)
        elif key in ("canForceRetryDispatch", "activityResult"):
            out[key] = None  # rendered by the store
        elif key in TIMESTAMPS:
            out[key] = stamps[key]
        else:
            out[key] = data.get(key, DEFAULTS.get(key))
    return out


def render(stored: dict[str, Any], *, can_force_retry: bool, result: Any) -> dict[str, Any]:
    out = dict(stored)
    out["canForceRetryDispatch"] = bool(can_force_retry)
    out["activityResult"] = result
    return out
