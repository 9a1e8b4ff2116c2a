"""Payloads the probe sends: the seed's activity JSON, field for field, and its awkward variants."""
from __future__ import annotations

import random
import uuid
from typing import Any

from dispatchsim.engine.clock import iso
from dispatchsim.engine.sender import encode_body
from dispatchsim.mapping.activity import NULLABLE, PAYLOAD_KEYS, example_activity, seed_payload


class Payloads:
    """Seeded ids and contents, so one seed sends the same probe twice."""

    def __init__(self, seed: int, now: Any, mapping: dict[str, Any] | None = None) -> None:
        self.rng = random.Random(f"probe:{seed}")
        self.now = now
        #: the provider's payload mapping: every payload is sent in the shape its endpoint expects
        self._mapping = None
        if mapping is not None:
            from dispatchsim.mapping import compile_mapping

            self._mapping = compile_mapping(mapping)

    def _shaped(self, payload: dict[str, Any]) -> Any:
        return self._mapping.apply(payload) if self._mapping is not None else payload

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def webhook_id(self) -> str:
        return f"msg_probe_{self.rng.getrandbits(96):024x}"

    def seed(self) -> Any:
        """The seed example with a fresh id and creation time (mapped when a mapping is set)."""
        return self._shaped(self._raw())

    def _raw(self) -> dict[str, Any]:
        out = seed_payload()
        out["id"] = self.new_id()
        out["createdAt"] = iso(self.now())
        return out

    def varied(self, *, commerce: str | None = None) -> dict[str, Any]:
        """A realistic activity in the seed's shape (all 19 keys), optionally of one commerce (queue)."""
        out = self._raw()
        out.update(example_activity(self.rng))
        if commerce is not None:
            out["commerceExternalId"] = commerce
            out["commerceAssignment"]["commerceExternalId"] = commerce
            out["commerceAssignment"]["commerce"]["externalId"] = commerce
        return self._shaped({k: out[k] for k in PAYLOAD_KEYS})

    def unicode(self) -> Any:
        out = self._raw()
        name = "Café Ñandú — 東京店 🏪 Ελληνικά عربي"
        out["commerceName"] = name
        out["commerceAssignment"]["commerce"]["name"] = name
        out["commerceAssignment"]["assignmentReason"] = "Asignación por ruta ✓ (zero\u200bwidth, e\u0301 combining)"
        out["reason"]["label"] = "Riesgo de fuga ⚠️ 🚨"
        out["activityDetails"]["assignedOperator"]["name"] = "Zoë Ångström-Łukasiewicz 👩‍💼"
        return self._shaped(out)

    def nulls(self) -> Any:
        out = self._raw()
        for key in NULLABLE:
            out[key] = None
        return self._shaped(out)

    def unknown_fields(self) -> Any:
        out = self._shaped(self._raw())
        if isinstance(out, list) and out and isinstance(out[0], dict):
            target = out[0]
        elif isinstance(out, dict):
            target = out
        else:
            return out
        target["probeFutureField"] = {"addedIn": "v2", "values": [1, 2.5, True, None]}
        target["probeNotes"] = ["extra", "fields", "must", "be", "ignored"]
        return out

    def max_size(self, size: int) -> Any:
        """The seed padded (in ``lifecycleStatusDetail``) to ``size`` bytes of JSON (before any mapping,
        which may keep or drop that field)."""
        out = self._raw()
        out["lifecycleStatusDetail"] = ""
        pad = size - len(encode_body(out))
        filler = "probe max-size padding 0123456789 "
        out["lifecycleStatusDetail"] = (filler * (max(pad, 0) // len(filler) + 1))[:max(pad, 0)]
        return self._shaped(out)
