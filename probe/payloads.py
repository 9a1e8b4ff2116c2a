"""Payloads the probe sends: the seed's activity JSON, field for field, and its awkward variants."""
from __future__ import annotations

import copy
import random
import uuid
from dataclasses import dataclass
from typing import Any

from dispatchsim.engine.clock import iso
from dispatchsim.engine.sender import encode_body
from dispatchsim.mapping.activity import NULLABLE, PAYLOAD_KEYS, example_activity, seed_payload


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A payload as sent (mapped when a mapping is set) and the activity id the endpoint reports back."""

    body: Any
    activity_id: str | None


#: Where the seed shape carries names: the unicode check writes its text there.
_NAME_PATHS = (("commerceName",), ("commerceAssignment", "commerce", "name"), ("commerceAssignment", "assignmentReason"),
               ("reason", "label"), ("activityDetails", "assignedOperator", "name"))
UNICODE_NAME = "Café Ñandú — 東京店 🏪 Ελληνικά عربي"


class Payloads:
    """Seeded ids and contents, so one seed sends the same probe twice.

    ``team``: the team's own payloads (``--payload``). Every check then starts from them (in turn)
    instead of the seed example, with a fresh ``id`` per delivery so each one can be verified.
    """

    def __init__(self, seed: int, now: Any, mapping: dict[str, Any] | None = None,
                 team: tuple[dict[str, Any], ...] = ()) -> None:
        self.rng = random.Random(f"probe:{seed}")
        self.now = now
        self.team = team
        self._turn = 0
        #: the provider's payload mapping: every payload is sent in the shape its endpoint expects
        self._mapping = None
        if mapping is not None:
            from dispatchsim.mapping import compile_mapping

            self._mapping = compile_mapping(mapping)

    @property
    def bases(self) -> int:
        """How many distinct starting payloads there are (single-delivery checks send each)."""
        return max(1, len(self.team))

    def _shaped(self, payload: dict[str, Any]) -> Outgoing:
        body = self._mapping.apply(payload) if self._mapping is not None else payload
        ident = payload.get("id")
        return Outgoing(body, str(ident) if ident is not None else None)

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def webhook_id(self) -> str:
        return f"msg_probe_{self.rng.getrandbits(96):024x}"

    def seed(self) -> Outgoing:
        """The seed example (or the next team payload) with a fresh id and creation time."""
        return self._shaped(self._raw())

    def _raw(self) -> dict[str, Any]:
        if self.team:
            out = copy.deepcopy(self.team[self._turn % len(self.team)])
            self._turn += 1
            out["id"] = self.new_id()
            return out
        out = seed_payload()
        out["id"] = self.new_id()
        out["createdAt"] = iso(self.now())
        return out

    def varied(self, *, commerce: str | None = None) -> Outgoing:
        """A realistic activity in the seed's shape (all 19 keys), optionally of one commerce (queue)."""
        out = self._raw()
        if not self.team:
            out.update(example_activity(self.rng))
            out = {k: out[k] for k in PAYLOAD_KEYS}
        if commerce is not None:
            for path in (("commerceExternalId",), ("commerceAssignment", "commerceExternalId"),
                         ("commerceAssignment", "commerce", "externalId")):
                _set(out, path, commerce, create=path == ("commerceExternalId",))
        return self._shaped(out)

    def unicode(self) -> Outgoing:
        out = self._raw()
        texts = iter((UNICODE_NAME, UNICODE_NAME, "Asignación por ruta ✓ (zero\u200bwidth, e\u0301 combining)",
                      "Riesgo de fuga ⚠️ 🚨", "Zoë Ångström-Łukasiewicz 👩‍💼"))
        if not sum(_set(out, path, next(texts)) for path in _NAME_PATHS):
            out["probeUnicodeName"] = UNICODE_NAME  # a team payload without those fields
        return self._shaped(out)

    def nulls(self) -> Outgoing:
        out = self._raw()
        for key in NULLABLE:
            if key in out or not self.team:
                out[key] = None
        return self._shaped(out)

    def unknown_fields(self) -> Outgoing:
        raw = self._raw()
        shaped = self._shaped(raw)
        out = shaped.body
        target = out[0] if isinstance(out, list) and out and isinstance(out[0], dict) else out
        if isinstance(target, dict):
            target["probeFutureField"] = {"addedIn": "v2", "values": [1, 2.5, True, None]}
            target["probeNotes"] = ["extra", "fields", "must", "be", "ignored"]
        return shaped

    def max_size(self, size: int) -> Outgoing:
        """The payload padded (in ``lifecycleStatusDetail``) to ``size`` bytes of JSON (before any mapping,
        which may keep or drop that field)."""
        out = self._raw()
        out["lifecycleStatusDetail"] = ""
        pad = size - len(encode_body(out))
        filler = "probe max-size padding 0123456789 "
        out["lifecycleStatusDetail"] = (filler * (max(pad, 0) // len(filler) + 1))[:max(pad, 0)]
        return self._shaped(out)


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any, *, create: bool = False) -> bool:
    """Set a nested field when its parent exists (``create``: also when the field itself is missing)."""
    node: Any = data
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or (path[-1] not in node and not create):
        return False
    node[path[-1]] = value
    return True
