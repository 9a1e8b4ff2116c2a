"""The activity payload: the seed's JSON object, field for field.

The stored form keeps everything except the derived fields (``canForceRetryDispatch``,
``activityResult``), which the store fills in when it renders an activity, so the payload
sent always equals what the store returns for that activity at that moment.
"""
from __future__ import annotations

import random
from typing import Any

from .clock import iso, parse_iso
from .errors import ActivityError

#: Top-level keys in the seed's order (Reten dispatch doc, "Activity payload").
PAYLOAD_KEYS: tuple[str, ...] = (
    "id", "activityOrigin", "type", "status", "channel", "scheduledAt", "occurredAt", "createdAt",
    "lifecycleStatus", "lifecycleStatusLabel", "lifecycleStatusDetail", "canForceRetryDispatch",
    "commerceExternalId", "commerceName", "reason", "userStatus", "commerceAssignment",
    "activityDetails", "activityResult",
)
#: Fields the engine owns; callers cannot set them.
DERIVED = frozenset({"id", "createdAt", "canForceRetryDispatch", "activityResult"})
ACTIVITY_TYPES = ("TASK", "MESSAGE")
#: The seed: "Dispatch for MESSAGE type activities will be available soon."
DISPATCHED_TYPES = frozenset({"TASK"})

_DEFAULTS: dict[str, Any] = {
    "activityOrigin": "ACTIVITY",
    "type": "TASK",
    "status": "PENDING",
    "scheduledAt": None,
    "occurredAt": None,
    "lifecycleStatus": "SCHEDULED",
    "lifecycleStatusLabel": None,
    "lifecycleStatusDetail": None,
    "commerceExternalId": None,
    "commerceName": None,
    "reason": None,
    "userStatus": None,
    "commerceAssignment": None,
    "activityDetails": None,
}
_STRING_OR_NULL = ("activityOrigin", "status", "lifecycleStatus", "lifecycleStatusLabel",
                   "lifecycleStatusDetail", "commerceExternalId", "commerceName", "userStatus")
_OBJECT_OR_NULL = ("reason", "commerceAssignment", "activityDetails")
_TIMESTAMPS = ("scheduledAt", "occurredAt")


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
    for key in _STRING_OR_NULL:
        if key in data and data[key] is not None and not isinstance(data[key], str):
            problems.append(f"{key}: must be a string or null")
    for key in _OBJECT_OR_NULL:
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            problems.append(f"{key}: must be an object or null")
    stamps: dict[str, str | None] = {}
    for key in _TIMESTAMPS:
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
        elif key in _TIMESTAMPS:
            out[key] = stamps[key]
        else:
            out[key] = data.get(key, _DEFAULTS.get(key))
    return out


def render(stored: dict[str, Any], *, can_force_retry: bool, result: Any) -> dict[str, Any]:
    out = dict(stored)
    out["canForceRetryDispatch"] = bool(can_force_retry)
    out["activityResult"] = result
    return out


_COMMERCES = [("Farmacia Central", "COM"), ("Kiosco Norte", "COM"), ("Almacén Sur", "COM"),
              ("Drogería del Parque", "COM"), ("Minimarket Oeste", "COM"), ("Bodega Real", "COM")]
_REASONS = [("CHURN_RISK", "Riesgo de fuga"), ("LOW_STOCK", "Bajo stock"),
            ("NEW_PRODUCT", "Lanzamiento de producto"), ("PAYMENT_DUE", "Pago pendiente")]
_ROUTES = [("RUTA-NORTE-01", "Ruta Norte"), ("RUTA-SUR-02", "Ruta Sur"), ("RUTA-CENTRO-03", "Ruta Centro")]
_OPERATORS = [("OP-042", "Carlos Pérez"), ("OP-007", "Ana Gómez"), ("OP-113", "Lucía Fernández"),
              ("OP-256", "Jorge Díaz")]


def example_activity(rng: random.Random, *, channel: str = "SALESMAN", scheduled_at: float | None = None,
                     commerces: int = 50) -> dict[str, Any]:
    """A realistic, varied activity in the seed's shape (caller fields only)."""
    n = rng.randrange(1, commerces + 1)
    name, _ = _COMMERCES[n % len(_COMMERCES)]
    ext = f"COM-{n:03d}"
    code, label = rng.choice(_REASONS)
    route_code, route_name = rng.choice(_ROUTES)
    op_id, op_name = rng.choice(_OPERATORS)
    return {
        "type": "TASK",
        "channel": channel,
        "scheduledAt": iso(scheduled_at) if scheduled_at is not None else None,
        "lifecycleStatusLabel": "Programada",
        "commerceExternalId": ext,
        "commerceName": f"{name} {n}",
        "reason": {"code": code, "label": label},
        "commerceAssignment": {
            "commerceExternalId": ext,
            "assignmentReason": "Asignación por ruta",
            "commerce": {"externalId": ext, "name": f"{name} {n}"},
        },
        "activityDetails": {
            "type": "TASK",
            "assignedRouteCode": route_code,
            "assignedOperatorExternalId": op_id,
            "assignedRoute": {"code": route_code, "name": route_name},
            "assignedOperator": {"externalId": op_id, "name": op_name, "type": channel},
        },
    }
