"""Reteno message events: one webhook URL per account, JSON arrays in batches, ordered, never given up.

The Reteno webhooks seed: events (DELIVERED, UNDELIVERED, READ, CLICKED, UNSUBSCRIBED, SPAM,
SUBSCRIPTION_CHANGED) go to the account's URL as POSTed JSON arrays; a non-2xx answer is retried
after 1, 2, 4, 8 … minutes up to one try per hour, and "the following requests are postponed until
the successful delivery of the first one and then they are delivered in their sequence". Saving
the URL sends a test GET. Here an account is a tenant; a batch is formed when ``batch_size``
events wait or the oldest has waited ``max_wait`` seconds, and its contents never change, so a
retry sends the same array with the same ``webhook-id``.

There is one sender: the account's webhook is a configuration of kind ``message_events``
(``<account>@events``) and each batch is a delivery of it, claimed, sent, retried, ordered, scrubbed
and health-tracked by the engine's dispatcher like any activity delivery. This module validates
events, keeps webhook settings, and forms the batches.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from .clock import iso
from .config import ConfigKind, Snapshot, build_snapshot
from .errors import ActivationRefused, ConfigError, NotFound
from .store_rows import Attempt, Configuration, EventBatch
from .policy import MAX_BATCH_SIZE, BatchPolicy
from .redact import REDACTED, redact_url
from .states import Status
from .values import show_key, value_problems

#: activityStatus values of the seed.
EVENT_STATUSES = ("DELIVERED", "UNDELIVERED", "READ", "CLICKED", "UNSUBSCRIBED", "SPAM", "SUBSCRIPTION_CHANGED")

_STR, _INT, _BOOL = "string", "int", "bool"
#: The seed's "List of Possible Parameters": name -> type. ``workflowInstanceId`` is documented as int
#: but the seed's own example sends a UUID string, so both are accepted; ``statusData`` and
#: ``subscription`` are "Data array" but the examples send ``{}``, so objects and arrays are accepted.
EVENT_PARAMS: dict[str, str] = {
    "activityDateTime": _STR, "activityStatus": _STR, "broadcastId": _INT, "clickEventLink": _STR,
    "contactId": _INT, "email": _STR, "externalCustomerId": _STR, "hardBounce": _BOOL, "iid": _STR,
    "mediaType": _STR, "messageId": _INT, "messageInstanceId": _INT, "messageName": _STR, "messageTag": _STR,
    "mobilepush": _STR, "sms": _STR, "sourceEventId": _INT, "sourceEventKey": _STR, "sourceEventTypeKey": _STR,
    "statusData": "data", "statusDescription": _STR, "subscription": "data", "subscriptions": "strings",
    "viber": _STR, "viewMessageLink": _STR, "webpush": _STR, "workflowBlockId": _STR, "workflowId": _INT,
    "workflowInstanceId": "int_or_string",
}
#: Fields the seed says appear only with one status.
EVENT_ONLY_WITH = {"statusDescription": "UNDELIVERED", "hardBounce": "UNDELIVERED", "clickEventLink": "CLICKED"}
#: Fields an event of a status must carry.
EVENT_REQUIRED_WITH = {"UNDELIVERED": ("statusDescription", "hardBounce"),
                       "CLICKED": ("clickEventLink",)}

#: What a user sets on an account's webhook (the message-event counterpart of a configuration).
WEBHOOK_FIELDS = ("url", "auth", "signing_secret", "batch_size", "max_wait", "retry", "timeouts", "circuit_breaker",
                  "auto_disable")
#: Seed: "the following requests are postponed until the successful delivery of the first one".
_WEBHOOK_ORDERING = {"mode": "ordered", "on_exhausted": "skip"}


def webhook_config_id(account_id: str) -> str:
    """The configuration (and queue) of an account's webhook; ``@`` cannot occur in a user's config id."""
    return f"{account_id}@events"


def seed_time(ts: float) -> str:
    """``activityDateTime`` as the seed writes it: ``2023-09-14T08:30:03`` (UTC, no zone)."""
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _type_ok(kind: str, v: Any) -> bool:
    if kind == _STR:
        return isinstance(v, str)
    if kind == _INT:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == _BOOL:
        return isinstance(v, bool)
    if kind == "data":
        return isinstance(v, (dict, list))
    if kind == "strings":
        return isinstance(v, list) and all(isinstance(x, str) for x in v)
    return (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str)


def validate_event(data: Any, *, now: float, where: str = "event") -> tuple[dict[str, Any], list[str]]:
    """Check one event against the seed's parameters; fills ``activityDateTime`` when absent."""
    if not isinstance(data, dict):
        return {}, [f"{where}: must be a JSON object, got {type(data).__name__}"]
    problems = []
    unknown = sorted((show_key(k) for k in data if k not in EVENT_PARAMS), key=str)
    if unknown:
        problems.append(f"{where}: unknown parameter(s) {', '.join(unknown)}")
    for key, value in data.items():
        kind = EVENT_PARAMS.get(key)
        if kind and value is not None and not _type_ok(kind, value):
            problems.append(f"{where}.{key}: must be {kind.replace('_', ' ')}, got {type(value).__name__}")
        elif kind:
            problems.extend(value_problems(value, f"{where}.{key}"))
    status = data.get("activityStatus")
    if status not in EVENT_STATUSES:
        problems.append(f"{where}.activityStatus: required, one of {', '.join(EVENT_STATUSES)}")
    else:
        for key, only in EVENT_ONLY_WITH.items():
            if key in data and status != only:
                problems.append(f"{where}.{key}: only sent with activityStatus {only}")
        for key in EVENT_REQUIRED_WITH.get(status, ()):
            if data.get(key) is None:
                problems.append(f"{where}.{key}: required with activityStatus {status}")
    out = dict(data)
    if out.get("activityDateTime") is None:
        out["activityDateTime"] = seed_time(now)
    return out, problems


@dataclass(frozen=True)
class WebhookSettings:
    """An account's webhook as users write it (``url``, ``batch_size``, ``max_wait`` …).

    It is kept as the snapshot of a ``message_events`` configuration: ordered, Reteno retries by
    default, and the same endpoint-health options (circuit breaker, auto-disable) as any
    configuration, because its batches are deliveries sent by the one dispatcher.
    """

    snapshot: Snapshot

    @classmethod
    def parse(cls, data: dict[str, Any]) -> WebhookSettings:
        if not isinstance(data, dict):
            raise ConfigError("expected an object", field="webhook")
        unknown = sorted(set(data) - set(WEBHOOK_FIELDS))
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(WEBHOOK_FIELDS)})", field="webhook")
        batching = BatchPolicy(size=data.get("batch_size", 100), max_wait=data.get("max_wait", 60.0))
        secret = data.get("signing_secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ConfigError("a non-empty string or null", field="webhook.signing_secret")
        fields = {"endpoint_url": data.get("url"), "retry": data.get("retry", "reteno"),
                  "ordering": _WEBHOOK_ORDERING,
                  **{k: data[k] for k in ("auth", "signing_secret", "timeouts", "circuit_breaker", "auto_disable")
                     if data.get(k) is not None}}
        try:
            snap, _ = build_snapshot(fields)
        except ConfigError as exc:
            if exc.field != "endpoint_url":
                raise
            raise ConfigError(exc.message, field="webhook.url") from None  # the name an account's webhook uses
        if REDACTED in snap.secrets():
            raise ConfigError("secrets are write-only; send the real value, not ***", field="webhook")
        return cls(replace(snap, batching=replace(batching, max_wait=float(batching.max_wait))))

    @property
    def batching(self) -> BatchPolicy:
        assert self.snapshot.batching is not None
        return self.snapshot.batching

    def to_dict(self, *, redact: bool) -> dict[str, Any]:
        snap = self.snapshot.to_dict(redact=redact)
        return {"url": snap["endpoint_url"], "auth": snap["auth"], "signing_secret": snap["signing_secret"],
                "batch_size": self.batching.size, "max_wait": self.batching.max_wait, "retry": snap["retry"],
                "timeouts": snap["timeouts"], "circuit_breaker": snap["circuit_breaker"],
                "auto_disable": snap["auto_disable"]}

    def secrets(self) -> list[str]:
        return self.snapshot.secrets()


class MessageEvents:
    """An engine's message events: webhooks, queued events, and the batches formed from them.

    Sending is not done here: a batch is a delivery of the account's webhook configuration, which
    the engine's dispatcher claims, sends, retries, orders, scrubs and health-tracks like any
    other. The dispatcher calls :meth:`form_due_batches` on every cycle.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.store = engine.store.events_store()
        self.clock = engine.clock
        self.log = engine.log
        #: an engine without webhooks (the common case) skips batching on every dispatch cycle; only
        #: :meth:`configure_webhook` creates one, and :meth:`load` reads it again at a restart
        self._webhooks = False
        #: the key of batch webhook-ids (see ``events_store.batch_webhook_id``): from the seed when runs must repeat
        self._id_key = f"seed:{engine.seed}" if engine.seed is not None else secrets.token_hex(16)

    async def load(self) -> None:
        """Read what the database already holds (the engine calls it once, when it opens)."""
        self._webhooks = await self.store.has_webhooks()

    # -- configuration and input --------------------------------------------------------

    async def configure_webhook(self, account_id: str, data: dict[str, Any], *, verify: bool = True) -> dict[str, Any]:
        """Save the account's webhook; the test GET must answer 2xx first (as Reteno does on save).

        Saving again (a new version) also re-enables a webhook that auto-disable paused.
        """
        if await self.engine.store.tenant(account_id) is None:
            raise NotFound(f"account {account_id!r} not found (accounts are tenants; add the tenant first)")
        settings = WebhookSettings.parse(data)
        snap = settings.snapshot
        self.engine.redactor.add(*settings.secrets())
        if verify:
            reason = await self.engine.verification_failure(snap)
            if reason is not None:
                self.log.warning("webhook.refused", account_id=account_id, reason=reason)
                raise ActivationRefused(f"webhook of account {account_id!r} not saved: test GET to "
                               f"{redact_url(snap.endpoint_url)} failed: {reason}")
        cid = webhook_config_id(account_id)
        now = self.clock.now()
        store = self.engine.store
        async with store.tx():
            cfg = await store.config(cid)
            if cfg is None or cfg.deleted:
                if cfg is not None:
                    raise ConfigError(f"the webhook of account {account_id!r} was deleted; its id is not reused")
                await store.insert_config(cid, account_id, None, None, snap.to_dict(redact=False), now,
                                          kind=ConfigKind.MESSAGE_EVENTS)
            else:
                await store.new_config_version(cid, snap.to_dict(redact=False), now)
            await store.set_config_active(cid, True, now)
        self._webhooks = True
        await self.engine.dispatcher.reset_streak(cid)
        self.log.info("webhook.saved", account_id=account_id, config_id=cid, url=redact_url(snap.endpoint_url),
                      batch_size=settings.batching.size, max_wait=settings.batching.max_wait)
        self.engine.dispatcher.wake()
        return await self.webhook(account_id)

    async def _webhook_config(self, account_id: str) -> Configuration:
        cfg = await self.engine.store.config(webhook_config_id(account_id))
        if cfg is None or cfg.deleted:
            raise NotFound(f"account {account_id!r} has no webhook; configure it with PUT /api/accounts/"
                           f"{account_id}/webhook")
        return cfg

    async def webhook(self, account_id: str) -> dict[str, Any]:
        """The account's webhook as read APIs show it (secrets ``***``) with batch counts."""
        cfg = await self._webhook_config(account_id)
        settings = WebhookSettings((await self.engine.prepared(cfg.id, cfg.version)).snapshot)
        return {"account_id": account_id, **settings.to_dict(redact=True), "config_id": cfg.id,
                "version": cfg.version, "active": cfg.active, "inactive_reason": cfg.inactive_reason,
                "updated_at": iso(cfg.updated_at), "counts": await self.store.counts(account_id)}

    def validate(self, events: Any) -> list[dict[str, Any]]:
        """All or nothing: every problem of every event, or the events ready to store."""
        if not isinstance(events, list) or not events:
            raise ConfigError("a non-empty JSON array of events", field="events")
        if len(events) > MAX_BATCH_SIZE:
            raise ConfigError(f"at most {MAX_BATCH_SIZE} per request", field="events")
        now = self.clock.now()
        out, problems = [], []
        for i, e in enumerate(events):
            ev, p = validate_event(e, now=now, where=f"events[{i}]")
            out.append(ev)
            problems.extend(p)
        if problems:
            raise ConfigError("invalid message events: " + "; ".join(problems[:20])
                              + (f"; … {len(problems) - 20} more" if len(problems) > 20 else ""))
        return out

    async def post(self, account_id: str, events: list[Any]) -> dict[str, Any]:
        """Queue events for the account's webhook (validated first; nothing is stored on error).

        A paused webhook (deactivated or auto-disabled) keeps them until it is enabled again.
        """
        await self._webhook_config(account_id)
        checked = self.validate(events)
        seqs = await self.store.insert_events(account_id, checked, self.clock.now())
        self.log.info("events.queued", account_id=account_id, count=len(seqs), first_seq=seqs[0])
        self.engine.dispatcher.wake()
        return {"account_id": account_id, "accepted": len(seqs)}

    # -- reading ------------------------------------------------------------------------

    async def batches(self, account_id: str, *, after_id: int = 0, limit: int = 50) -> list[EventBatch]:
        """An account's event batches in id order, ``limit`` at a time after ``after_id``."""
        return await self.store.batches(account_id, after_id=after_id, limit=limit)

    async def attempts(self, batch_id: int) -> list[Attempt]:
        """The attempts of the delivery that sends batch ``batch_id``."""
        return await self.engine.store.attempts((await self.store.batch(batch_id)).delivery_id)

    async def counts(self, account_id: str | None = None) -> dict[str, int]:
        """Number of stored message events per status, for one account or all."""
        return await self.store.counts(account_id)

    # -- batching (called by the dispatcher) --------------------------------------------

    async def form_due_batches(self, now: float) -> float | None:
        """Form the batches that are due; return when the next one will be (None: no event waits).

        A webhook whose queue still holds a batch gets none: the events wait, and go out in full
        batches once that one has been delivered (as the seed's ordered delivery requires).
        """
        if not self._webhooks:
            return None
        nxt: float | None = None
        for hook in await self.store.webhooks_free():
            policy = (await self.engine.prepared(hook.id, hook.version)).snapshot.batching
            if policy is None:
                continue
            account = hook.tenant_id
            n, oldest = await self.store.pending(account, policy.size)
            if n == 0 or oldest is None:
                continue
            due = now if n >= policy.size else oldest + policy.max_wait
            if due > now:
                nxt = due if nxt is None else min(nxt, due)
                continue
            made = await self.store.form_batch(account_id=account, config_id=hook.id, config_version=hook.version,
                                               size=policy.size, now=now, id_key=self._id_key)
            if made is not None:
                bid, did, size = made
                self.log.info("event_batch.created", account_id=account, batch_id=bid, size=size)
                self.log.info("delivery.created", delivery_id=did, batch_id=bid, config_id=hook.id,
                              queue=hook.id, status=Status.READY)
        return nxt
