"""Reteno message events: one webhook URL per account, JSON arrays in batches, ordered, never given up.

The Reteno webhooks seed: events (DELIVERED, UNDELIVERED, READ, CLICKED, UNSUBSCRIBED, SPAM,
SUBSCRIPTION_CHANGED) go to the account's URL as POSTed JSON arrays; a non-2xx answer is retried
after 1, 2, 4, 8 … minutes up to one try per hour, and "the following requests are postponed until
the successful delivery of the first one and then they are delivered in their sequence". Saving
the URL sends a test GET. Here an account is a tenant; a batch is formed when ``batch_size``
events wait or the oldest has waited ``max_wait`` seconds, and its contents never change, so a
retry sends the same array with the same ``webhook-id``.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .clock import iso
from .config import REDACTED, Auth, _check_url, redact_url
from .errors import ActivationRefused, ConfigError, NotFound
from .policy import RetryPolicy, Timeouts, retry_policy_from, timeouts_from
from .sender import Outcome, OutcomeKind, Request, encode_body
from .events_store import BatchClaim, EventsStore

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
_ONLY_WITH = {"statusDescription": "UNDELIVERED", "hardBounce": "UNDELIVERED", "clickEventLink": "CLICKED"}
_REQUIRED_WITH = {"UNDELIVERED": ("statusDescription", "hardBounce"), "CLICKED": ("clickEventLink",)}

MAX_BATCH_SIZE = 1000
WEBHOOK_FIELDS = ("url", "auth", "signing_secret", "batch_size", "max_wait", "retry", "timeouts")


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
    unknown = sorted(k for k in data if k not in EVENT_PARAMS)
    if unknown:
        problems.append(f"{where}: unknown parameter(s) {', '.join(unknown)}")
    for key, value in data.items():
        kind = EVENT_PARAMS.get(key)
        if kind and value is not None and not _type_ok(kind, value):
            problems.append(f"{where}.{key}: must be {kind.replace('_', ' ')}, got {type(value).__name__}")
    status = data.get("activityStatus")
    if status not in EVENT_STATUSES:
        problems.append(f"{where}.activityStatus: required, one of {', '.join(EVENT_STATUSES)}")
    else:
        for key, only in _ONLY_WITH.items():
            if key in data and status != only:
                problems.append(f"{where}.{key}: only sent with activityStatus {only}")
        for key in _REQUIRED_WITH.get(status, ()):
            if data.get(key) is None:
                problems.append(f"{where}.{key}: required with activityStatus {status}")
    out = dict(data)
    if out.get("activityDateTime") is None:
        out["activityDateTime"] = seed_time(now)
    return out, problems


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    auth: Auth
    signing_secret: str | None
    batch_size: int
    max_wait: float
    retry: RetryPolicy
    timeouts: Timeouts

    @classmethod
    def parse(cls, data: dict[str, Any]) -> WebhookSettings:
        if not isinstance(data, dict):
            raise ConfigError("webhook: expected an object")
        unknown = sorted(set(data) - set(WEBHOOK_FIELDS))
        if unknown:
            raise ConfigError(f"webhook: unknown field(s) {', '.join(unknown)} (known: {', '.join(WEBHOOK_FIELDS)})")
        size = data.get("batch_size", 100)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BATCH_SIZE:
            raise ConfigError(f"webhook.batch_size: an integer from 1 to {MAX_BATCH_SIZE}")
        wait = data.get("max_wait", 60.0)
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 86400:
            raise ConfigError("webhook.max_wait: seconds from 0 to 86400")
        secret = data.get("signing_secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ConfigError("webhook.signing_secret: a non-empty string or null")
        for value in (secret, *(Auth.parse(data.get("auth")).secrets())):
            if value == REDACTED:
                raise ConfigError("webhook: secrets are write-only; send the real value, not ***")
        retry = data.get("retry", "reteno")
        return cls(url=_check_url(data.get("url")), auth=Auth.parse(data.get("auth")), signing_secret=secret,
                   batch_size=size, max_wait=float(wait), retry=retry_policy_from(retry),
                   timeouts=timeouts_from(data.get("timeouts")))

    def to_dict(self, *, redact: bool) -> dict[str, Any]:
        return {"url": redact_url(self.url) if redact else self.url, "auth": self.auth.to_dict(redact=redact),
                "signing_secret": REDACTED if (redact and self.signing_secret) else self.signing_secret,
                "batch_size": self.batch_size, "max_wait": self.max_wait, "retry": self.retry.to_dict(),
                "timeouts": self.timeouts.to_dict()}

    def secrets(self) -> list[str]:
        return self.auth.secrets() + ([self.signing_secret] if self.signing_secret else [])


class MessageEvents:
    """Batches and sends an engine's message events; shares its store, clock, sender and log."""

    def __init__(self, engine: Any, *, lease_margin: float = 30.0) -> None:
        self.engine = engine
        self.store = EventsStore(engine.store)
        self.clock = engine.clock
        self.log = engine.log
        self._lease_margin = lease_margin
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        for acc in self.store.accounts():
            engine.redactor.add(*WebhookSettings.parse(acc["settings"]).secrets())

    # -- configuration and input --------------------------------------------------------

    async def configure_webhook(self, account_id: str, data: dict[str, Any], *, verify: bool = True) -> dict[str, Any]:
        """Save the account's webhook; the test GET must answer 2xx first (as Reteno does on save)."""
        if self.engine.store.tenant(account_id) is None:
            raise NotFound(f"account {account_id!r} not found (accounts are tenants; add the tenant first)")
        settings = WebhookSettings.parse(data)
        self.engine.redactor.add(*settings.secrets())
        if verify:
            out = await self.engine.sender.verify(settings.url, settings.auth, connect=settings.timeouts.connect,
                                                  total=settings.timeouts.total)
            if not out.ok:
                reason = self.engine.redactor.scrub(f"HTTP {out.status} (expected 2xx)" if out.status is not None
                                                    else f"{out.kind.value.lower()}: {out.error}")
                self.log.warning("webhook.refused", account_id=account_id, reason=reason)
                raise ActivationRefused(f"webhook of account {account_id!r} not saved: test GET to "
                                        f"{redact_url(settings.url)} failed: {reason}")
        self.store.upsert_account(account_id, settings.url, settings.to_dict(redact=False), self.clock.now())
        self.log.info("webhook.saved", account_id=account_id, url=redact_url(settings.url),
                      batch_size=settings.batch_size, max_wait=settings.max_wait)
        self._wake.set()
        return self.webhook(account_id)

    def _settings(self, account_id: str) -> WebhookSettings:
        acc = self.store.account(account_id)
        if acc is None or not acc["active"]:
            raise NotFound(f"account {account_id!r} has no webhook; configure it with PUT /api/accounts/"
                           f"{account_id}/webhook")
        return WebhookSettings.parse(acc["settings"])

    def webhook(self, account_id: str) -> dict[str, Any]:
        """The account's webhook as read APIs show it (secrets ``***``) with batch counts."""
        acc = self.store.account(account_id)
        if acc is None:
            raise NotFound(f"account {account_id!r} has no webhook")
        return {"account_id": account_id, **WebhookSettings.parse(acc["settings"]).to_dict(redact=True),
                "updated_at": iso(acc["updated_at"]), "counts": self.store.counts(account_id)}

    def validate(self, events: Any) -> list[dict[str, Any]]:
        """All or nothing: every problem of every event, or the events ready to store."""
        if not isinstance(events, list) or not events:
            raise ConfigError("events: a non-empty JSON array of events")
        if len(events) > MAX_BATCH_SIZE:
            raise ConfigError(f"events: at most {MAX_BATCH_SIZE} per request")
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
        """Queue events for the account's webhook (validated first; nothing is stored on error)."""
        self._settings(account_id)
        checked = self.validate(events)
        seqs = self.store.insert_events(account_id, checked, self.clock.now())
        self.log.info("events.queued", account_id=account_id, count=len(seqs), first_seq=seqs[0])
        self._wake.set()
        return {"account_id": account_id, "accepted": len(seqs)}

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="message-events")

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def stop(self, *, deadline: float = 10.0) -> int:
        """Stop forming and claiming; wait for batches in flight up to ``deadline``; returns abandoned."""
        self._stopping = True
        self._wake.set()
        abandoned = 0
        if self._inflight:
            done, not_done = await asyncio.wait(list(self._inflight.values()), timeout=deadline)
            for t in not_done:
                t.cancel()
            if not_done:
                await asyncio.wait(not_done)
            abandoned = len(not_done)
        if self._task is not None:
            await self._task
            self._task = None
        return abandoned

    async def run_until_idle(self, *, max_time: float | None = None) -> None:
        """Drain (tests, scenarios): send until nothing waits, advancing through backoff and max_wait."""
        now = self.clock.now()
        self._stopping = False
        await self.run(until_idle=True, deadline=None if max_time is None else now + max_time)

    async def run(self, *, until_idle: bool = False, deadline: float | None = None) -> None:
        while not self._stopping:
            self._wake.clear()
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                break
            for bid in self.store.release_leases(before=now, now=now):
                self.log.warning("event_batch.interrupted", batch_id=bid, reason="lease expired; re-sent now")
            nxt = self._fill(now)
            lease = self.store.next_lease_expiry() if not self._inflight else None
            if lease is not None:
                nxt = lease if nxt is None else min(nxt, lease)
            if until_idle and nxt is None and not self._inflight:
                break
            timeout = None if nxt is None else max(0.0, nxt - now)
            if deadline is not None:
                left = deadline - now
                timeout = left if timeout is None else min(timeout, left)
            await self.clock.wait(self._wake, timeout)
        if until_idle and self._inflight:
            await asyncio.wait(list(self._inflight.values()))

    def _fill(self, now: float) -> float | None:
        """Start what is due; returns the next moment something becomes due (None: nothing waits)."""
        nxt: float | None = None
        for acc in self.store.accounts():
            aid = acc["id"]
            if aid in self._inflight:
                continue
            settings = WebhookSettings.parse(acc["settings"])
            head = self.store.head(aid)
            if head is None:
                n, oldest = self.store.pending(aid)
                if n == 0:
                    continue
                due = now if n >= settings.batch_size else oldest + settings.max_wait
                if due > now:
                    nxt = due if nxt is None else min(nxt, due)
                    continue
                bid = self.store.form_batch(aid, settings.batch_size, now)
                head = self.store.batch(bid) if bid is not None else None
                if head is None:
                    continue
                self.log.info("event_batch.created", account_id=aid, batch_id=bid, size=head["size"])
            if head["lease_until"] is not None:
                continue  # left by a dead sender: released when the lease ends
            if head["next_attempt_at"] > now:
                nxt = head["next_attempt_at"] if nxt is None else min(nxt, head["next_attempt_at"])
                continue
            claim = self.store.claim(head["id"], now + settings.timeouts.total + self._lease_margin, now)
            if claim is not None:
                self._inflight[aid] = asyncio.create_task(self._attempt(claim, settings),
                                                          name=f"event-batch-{claim.batch_id}")
        return nxt

    async def _attempt(self, claim: BatchClaim, settings: WebhookSettings) -> None:
        try:
            body = encode_body(self.store.batch_events(claim.batch_id))
            now = self.clock.now()
            req = Request(url=settings.url, body=body, webhook_id=f"evb_{claim.account_id}_{claim.batch_id}",
                          timestamp=int(now), auth=settings.auth, signing_secret=settings.signing_secret,
                          connect_timeout=settings.timeouts.connect, total_timeout=settings.timeouts.total)
            out = await self.engine.sender.send(req)
            self._finish(claim, settings, out)
        finally:
            self._inflight.pop(claim.account_id, None)
            self._wake.set()

    def _finish(self, claim: BatchClaim, settings: WebhookSettings, out: Outcome) -> None:
        now = self.clock.now()
        common = dict(now=now, outcome=out.kind.value, status_code=out.status, latency=out.latency,
                      excerpt=out.excerpt)
        fields = {"account_id": claim.account_id, "batch_id": claim.batch_id, "attempt": claim.number,
                  "code": out.status, "outcome": out.kind.value}
        if out.kind is OutcomeKind.SUCCESS:
            if self.store.finish(claim, status="DISPATCHED", error=None, next_at=None, **common):
                self.log.info("event_batch.dispatched", **fields, status="DISPATCHED")
            return
        decision = settings.retry.decide(attempt=claim.number, now=now, budget_started_at=claim.created_at,
                                         retry_after=out.retry_after, delivery_key=f"{claim.batch_id}")
        error = out.describe()
        if decision.retry:
            if self.store.finish(claim, status="RETRYING", error=error, next_at=decision.at, **common):
                self.log.warning("event_batch.retrying", **fields, status="RETRYING", error=out.error,
                                 next_attempt_at=iso(decision.at or now), delay=decision.delay)
        elif self.store.finish(claim, status="FAILED", error=f"{error}; {decision.reason}", next_at=None, **common):
            self.log.error("event_batch.failed", **fields, status="FAILED", detail=decision.reason)

    def release_all_leases(self) -> list[int]:
        """After a graceful stop (this process is the only sender): abandoned batches are due again now."""
        now = self.clock.now()
        return self.store.release_leases(before=float("inf"), now=now)

