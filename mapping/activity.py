"""The activity's shape: the seed's JSON object (Reten dispatch, "Activity payload"), field for field.

One definition for everyone who builds, checks or sends activities: the engine validates and stores
them with these keys and defaults, mappings are checked against the seed example when compiled, the
probe and the scenarios generate activities in this shape. It lives here, in the lowest layer,
because ``mapping`` may not import the engine while the engine, the probe and the scenarios may all
import ``mapping``. Treat the constants as read-only; :func:`seed_payload` returns a private copy.
"""
from __future__ import annotations

import copy
import random
from typing import Any

#: Top-level keys in the seed's order.
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
#: What a caller may leave out, and the value it then has.
DEFAULTS: dict[str, Any] = {
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
STRING_OR_NULL = ("activityOrigin", "status", "lifecycleStatus", "lifecycleStatusLabel",
                  "lifecycleStatusDetail", "commerceExternalId", "commerceName", "userStatus")
OBJECT_OR_NULL = ("reason", "commerceAssignment", "activityDetails")
#: ISO-8601 strings or null (the engine normalises them).
TIMESTAMPS = ("scheduledAt", "occurredAt")
#: Fields a receiver cannot count on being set: null in the seed, or optional and descriptive (the
#: commerce id and the reason, which orderings and mappings key on, are left out).
NULLABLE = ("scheduledAt", "occurredAt", "lifecycleStatusLabel", "lifecycleStatusDetail", "commerceName",
            "userStatus", "commerceAssignment", "activityDetails", "activityResult")

#: The seed document's example, every key present.
SEED_PAYLOAD: dict[str, Any] = {
    "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    "activityOrigin": "ACTIVITY",
    "type": "TASK",
    "status": "PENDING",
    "channel": "SALESMAN",
    "scheduledAt": "2026-04-15T09:00:00.000Z",
    "occurredAt": None,
    "createdAt": "2026-04-10T14:30:00.000Z",
    "lifecycleStatus": "SCHEDULED",
    "lifecycleStatusLabel": "Programada",
    "lifecycleStatusDetail": None,
    "canForceRetryDispatch": False,
    "commerceExternalId": "COM-001",
    "commerceName": "Farmacia Central",
    "reason": {
        "code": "CHURN_RISK",
        "label": "Riesgo de fuga",
    },
    "userStatus": None,
    "commerceAssignment": {
        "commerceExternalId": "COM-001",
        "assignmentReason": "Asignación por ruta",
        "commerce": {
            "externalId": "COM-001",
            "name": "Farmacia Central",
        },
    },
    "activityDetails": {
        "type": "TASK",
        "assignedRouteCode": "RUTA-NORTE-01",
        "assignedOperatorExternalId": "OP-042",
        "assignedRoute": {
            "code": "RUTA-NORTE-01",
            "name": "Ruta Norte",
        },
        "assignedOperator": {
            "externalId": "OP-042",
            "name": "Carlos Pérez",
            "type": "SALESMAN",
        },
    },
    "activityResult": None,
}


def _shape(example: dict[str, Any]) -> dict[str, Any]:
    return {key: _shape(value) if isinstance(value, dict) else TEXT for key, value in example.items()}


#: A nested leaf: a string or null (the seed shows strings; it is silent on absence, so null is allowed).
TEXT = "string"
#: The nested objects' shapes, taken from the seed example: for each object field, each key's kind,
#: :data:`TEXT` or the nested object's own shape. Keys may be left out or null; others are refused.
NESTED_SHAPES: dict[str, dict[str, Any]] = {key: _shape(SEED_PAYLOAD[key]) for key in OBJECT_OR_NULL}


def seed_payload() -> dict[str, Any]:
    """A deep copy of :data:`SEED_PAYLOAD`, safe to modify."""
    return copy.deepcopy(SEED_PAYLOAD)


_COMMERCES = [("Farmacia Central", "COM"), ("Kiosco Norte", "COM"), ("Almacén Sur", "COM"),
              ("Drogería del Parque", "COM"), ("Minimarket Oeste", "COM"), ("Bodega Real", "COM")]
_REASONS = [("CHURN_RISK", "Riesgo de fuga"), ("LOW_STOCK", "Bajo stock"),
            ("NEW_PRODUCT", "Lanzamiento de producto"), ("PAYMENT_DUE", "Pago pendiente")]
_ROUTES = [("RUTA-NORTE-01", "Ruta Norte"), ("RUTA-SUR-02", "Ruta Sur"), ("RUTA-CENTRO-03", "Ruta Centro")]
_OPERATORS = [("OP-042", "Carlos Pérez"), ("OP-007", "Ana Gómez"), ("OP-113", "Lucía Fernández"),
              ("OP-256", "Jorge Díaz")]


def example_activity(rng: random.Random, *, channel: str = "SALESMAN", commerces: int = 50) -> dict[str, Any]:
    """A realistic, varied activity in the seed's shape (caller fields only), drawn from ``rng`` so a
    seed gives the same activities (scenarios, benchmarks and the probe generate load with it)."""
    n = rng.randrange(1, commerces + 1)
    name, _ = _COMMERCES[n % len(_COMMERCES)]
    ext = f"COM-{n:03d}"
    code, label = rng.choice(_REASONS)
    route_code, route_name = rng.choice(_ROUTES)
    op_id, op_name = rng.choice(_OPERATORS)
    return {
        "type": "TASK",
        "channel": channel,
        "scheduledAt": None,
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
