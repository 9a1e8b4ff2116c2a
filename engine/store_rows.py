"""The store's rows: frozen dataclasses, one per table, each with its one conversion to the wire.

The store hands out these instead of dicts, so a misspelt column is an AttributeError where it
is written, not a KeyError (or a silent None) far away. ``to_json()`` is the single place a row
becomes the JSON that the API, the event log and reports show (seed names, ISO times); the field
order of each JSON object is part of the wire format and must not change.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from .clock import iso
from .config import ConfigKind
from .payload import render, rendered_body
from .states import ACTIVE, Circuit, Status


def _t(value: float | None) -> str | None:
    return iso(value) if value is not None else None


def columns(cls: type) -> str:
    """The SELECT list that builds ``cls`` positionally (its fields, in order)."""
    return ", ".join(f.name for f in fields(cls))


@dataclass(frozen=True, slots=True)
class _Registered:
    """An id with a display name: the shape tenants and providers share on the wire."""

    id: str
    name: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data for the API; times as ISO 8601 UTC strings."""
        return {"id": self.id, "name": self.name, "created_at": iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class Tenant(_Registered):
    """A tenant: the owner of configurations and activities."""


@dataclass(frozen=True, slots=True)
class Provider(_Registered):
    """A provider, registered centrally."""


@dataclass(frozen=True, slots=True)
class Configuration:
    """A dispatch configuration's current state (its settings are in the versioned snapshot)."""

    id: str
    kind: ConfigKind
    tenant_id: str  #: for a message-event webhook, its account
    provider_id: str | None  #: None for a message-event webhook
    channel: str | None  #: None for a message-event webhook
    version: int
    active: bool
    deleted: bool
    inactive_reason: str | None
    inactive_since: float | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Any) -> Configuration:
        """Build from a row of the store's configuration columns."""
        return cls(row[0], ConfigKind(row[1]), row[2], row[3], row[4], row[5], bool(row[6]), bool(row[7]), row[8],
                   row[9], row[10], row[11])

    def to_json(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The configuration as every read shows it; ``settings`` is its snapshot, secrets redacted."""
        return {
            "id": self.id, "tenant_id": self.tenant_id, "provider_id": self.provider_id, "channel": self.channel,
            "version": self.version, "active": self.active, "inactive_reason": self.inactive_reason,
            "inactive_since": iso(self.inactive_since) if self.inactive_since else None,
            "created_at": iso(self.created_at), "updated_at": iso(self.updated_at), **settings,
        }


@dataclass(frozen=True, slots=True)
class Activity:
    """A stored activity: its payload as accepted, its result, and whether a delivery of it FAILED."""

    seq: int
    id: str
    tenant_id: str
    type: str
    channel: str
    payload: dict[str, Any]
    result: Any
    created_at: float
    can_force_retry: bool

    @classmethod
    def from_row(cls, row: Any) -> Activity:
        """Build from a row of the store's activity columns (JSON columns decoded)."""
        return cls(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]),
                   json.loads(row[6]) if row[6] is not None else None, row[7], bool(row[8]))

    def to_json(self) -> dict[str, Any]:
        """The seed's activity JSON: what ``GET /api/activities`` returns and what is dispatched."""
        return render(self.payload, can_force_retry=self.can_force_retry, result=self.result)


@dataclass(frozen=True, slots=True)
class Streak:
    """An endpoint's failure streak as stored: how many attempts in a row failed, and since when."""

    consecutive_failures: int
    failing_since: float | None


class StoredActivity(NamedTuple):
    """What a delivery of an activity sends, as stored (JSON text, not decoded), read with its claim
    by a backend that can (PostgreSQL: one round trip less per attempt). A named tuple: one is
    built per attempt (see ``Claim``)."""

    #: the activity as accepted, JSON text (SQLite: its UTF-8 bytes, what the body is spliced from)
    payload: str | bytes
    result: str | bytes | None  #: its result, JSON text (of the payload's type)
    can_force_retry: bool  #: a delivery of it is FAILED

    def body(self) -> bytes:
        """The default payload's body (no mapping), as ``StoreContract.activity_body`` makes it."""
        return rendered_body(self.payload, can_force_retry=self.can_force_retry, result=self.result)

    def to_json(self) -> dict[str, Any]:
        """The seed's activity JSON (what a mapping is applied to), as ``Activity.to_json``."""
        return render(json.loads(self.payload), can_force_retry=self.can_force_retry,
                      result=None if self.result is None else json.loads(self.result))


@dataclass(frozen=True, slots=True)
class Delivery:
    """One activity for one configuration: its status, place in its queue, budget and lease."""

    id: int
    webhook_id: str
    activity_id: str | None  #: None for a batch of message events
    batch_id: int | None  #: the batch of message events it sends, if that is what it carries
    config_id: str
    config_version: int
    queue: str
    status: Status
    holds: bool  #: keeps later deliveries of its ordered queue waiting
    eligible: bool  #: may be claimed (queue head, or unordered)
    attempts: int
    budget_attempts: int
    budget_started_at: float
    next_attempt_at: float
    lease_until: float | None
    lease_token: str | None
    failed_reason: str | None
    last_error: str | None
    dispatched_at: float | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        """Build from a row of the store's delivery columns."""
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], row[6], Status(row[7]), bool(row[8]),
                   bool(row[9]), *row[10:21])

    @property
    def blocks_queue(self) -> bool:
        """A FAILED head that keeps its ordered queue waiting (``on_exhausted: block``)."""
        return self.holds and self.status is Status.FAILED

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data for the API and reports; times as ISO 8601 UTC strings.

        ``next_attempt_at`` is only given while the delivery is still active (READY or RETRYING).
        """
        status = self.status
        return {
            "id": self.id, "webhook_id": self.webhook_id, "activity_id": self.activity_id, "batch_id": self.batch_id,
            "config_id": self.config_id, "config_version": self.config_version, "queue": self.queue,
            "status": status.value, "attempts": self.attempts, "budget_attempts": self.budget_attempts,
            "next_attempt_at": _t(self.next_attempt_at) if status in ACTIVE else None,
            "in_flight": self.lease_until is not None, "blocks_queue": self.blocks_queue,
            "failed_reason": self.failed_reason, "last_error": self.last_error,
            "dispatched_at": _t(self.dispatched_at), "created_at": _t(self.created_at),
            "canForceRetryDispatch": status is Status.FAILED,
        }


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP try of a delivery (or a replay of a DISPATCHED one)."""

    id: int
    delivery_id: int
    number: int
    started_at: float
    finished_at: float | None
    status_code: int | None
    outcome: str | None  #: None while in flight
    error: str | None
    retry_after: float | None
    latency: float | None
    excerpt: str | None
    next_attempt_at: float | None
    config_id: str | None
    replay: bool

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        """Build from a row of the store's attempt columns."""
        return cls(*row[:13], bool(row[13]))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data for the API and reports; times as ISO 8601 UTC strings."""
        return {
            "id": self.id, "delivery_id": self.delivery_id, "number": self.number,
            "started_at": _t(self.started_at), "finished_at": _t(self.finished_at), "status_code": self.status_code,
            "outcome": self.outcome, "error": self.error, "retry_after": self.retry_after, "latency": self.latency,
            "excerpt": self.excerpt, "next_attempt_at": _t(self.next_attempt_at), "replay": self.replay,
        }


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """The persisted circuit and failure streak of one configuration's endpoint."""

    config_id: str
    circuit: Circuit
    circuit_until: float | None
    consecutive_failures: int
    failing_since: float | None
    updated_at: float

    @classmethod
    def from_row(cls, row: Any) -> EndpointHealth:
        """Build from a row of the store's endpoint health columns."""
        return cls(row[0], Circuit(row[1]), *row[2:6])


@dataclass(frozen=True, slots=True)
class Notification:
    """An operator notification (auto-disable, circuit changes) and how its webhook went."""

    id: int
    at: float
    kind: str
    config_id: str | None
    message: str
    delivery: str | None  #: the operator webhook's outcome ("HTTP 200", …), None when none is set

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data for the API; times as ISO 8601 UTC strings."""
        return {"id": self.id, "at": iso(self.at), "kind": self.kind, "config_id": self.config_id,
                "message": self.message, "delivery": self.delivery}


@dataclass(frozen=True, slots=True)
class EventBatch:
    """A batch of message events with the state of the delivery that sends it."""

    id: int
    account_id: str
    status: Status
    size: int
    attempts: int
    next_attempt_at: float
    lease_until: float | None
    last_error: str | None
    dispatched_at: float | None
    created_at: float
    updated_at: float
    delivery_id: int
    webhook_id: str  #: the public id of the delivery that sends it (what serve mode shows as the batch's id)

    @classmethod
    def from_row(cls, row: Any) -> EventBatch:
        """From the store's batch query (its columns in this class's field order)."""
        return cls(row[0], row[1], Status(row[2]), *row[3:13])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, times as ISO text; the library's view (serve mode shows the public id only)."""
        return {"id": self.id, "account_id": self.account_id, "status": self.status.value, "size": self.size,
                "attempts": self.attempts, "next_attempt_at": _t(self.next_attempt_at),
                "lease_until": _t(self.lease_until), "last_error": self.last_error,
                "dispatched_at": _t(self.dispatched_at), "created_at": _t(self.created_at),
                "updated_at": _t(self.updated_at), "delivery_id": self.delivery_id, "webhook_id": self.webhook_id}


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console user: who, with which key (its id and digest, so that a revoked or rotated
    key ends the session), for which tenant, the CSRF token its action forms carry, and when it ends.
    Stored under the digest of the cookie's token, never the token."""

    key_id: str
    key_digest: str
    who: str
    tenant_id: str
    csrf: str
    expires_at: float

    def csrf_ok(self, given: str | None) -> bool:
        """Whether a form carries this session's CSRF token (compared in constant time)."""
        return bool(given) and hmac.compare_digest(self.csrf, given or "")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's record: never the key, and the hash stays in the store."""

    id: str
    tenant_id: str | None  #: None for an admin key
    name: str | None
    created_at: float
    revoked_at: float | None
