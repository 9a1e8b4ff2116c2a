"""The seed doc's example activity payload (Reten dispatch, "Activity payload"), field for field.

Mappings are checked against it when compiled, and ``mapping preview`` maps it by default.
Treat it as read-only; :func:`seed_payload` returns a private copy.
"""
from __future__ import annotations

import copy
from typing import Any

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


def seed_payload() -> dict[str, Any]:
    """A deep copy of :data:`SEED_PAYLOAD`, safe to modify."""
    return copy.deepcopy(SEED_PAYLOAD)
