"""Timeline actions: each kind is one class that parses its value from the file and applies it to a run.

A timeline event is ``at`` plus exactly one action (``- at: 10m`` / ``  endpoint: {...}``). To add an action,
write a class here with ``key`` (its name in the file), ``parse`` and ``apply``, and add it to
:data:`ACTIONS`. An action that fans out into several steps (``create: {count: 100, every: 1s}``)
lists their offsets; the runner plays every step in time order.
"""
from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from dispatchsim.engine import ActivityError, Status
from dispatchsim.engine.payload import build_stored_payload
from dispatchsim.engine.clock import fmt_offset
from dispatchsim.mapping.activity import example_activity
from dispatchsim.providers import ProviderConfigError, parse_behaviour

from dispatchsim.errors import Collector, ReportedAlready, misspelt

from .errors import ScenarioError
from .parsing import EDITABLE_KEYS, KeyPath, ParseContext

if TYPE_CHECKING:
    from .runner import ScenarioRun

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
#: Most steps one generator may make (a typo such as ``rate: 5000/s`` for a day stays refused).
MAX_GENERATED = 200_000
#: activities of one burst created per transaction (see ``Create.apply_batch``)
CREATE_CHUNK = 500


@dataclass(frozen=True, kw_only=True)
class Action(ABC):
    """One kind of timeline action: its parse (from the file) and its apply (to a running scenario)."""

    key: ClassVar[str]  #: its name in a timeline event

    @classmethod
    @abstractmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        """Validate the value written under the action's key; errors name ``file:line: key``."""

    @property
    def offsets(self) -> Sequence[float]:
        """When its steps happen, relative to the event's ``at``: one step, at once, unless it generates."""
        return (0.0,)

    @abstractmethod
    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        """Do step ``step`` (of :attr:`offsets`) of the event at offset ``at`` to the running scenario."""


@dataclass(frozen=True, kw_only=True)
class Create(Action):
    """Create activities: one, ``count`` (optionally ``every``), a ``rate`` ``for`` a span, or a ``cron``."""

    key: ClassVar[str] = "create"
    KEYS: ClassVar[set[str]] = {"tenant", "channel", "count", "every", "rate", "for", "cron", "until", "activity",
                                "generate"}
    tenant: str
    channel: str
    activity: dict[str, Any]
    generate: bool
    steps: tuple[float, ...]

    @property
    def offsets(self) -> Sequence[float]:
        return self.steps

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        P, tenants = ctx.reader, ctx.tenants
        arg = P.mapping({} if value is None else value, path, cls.KEYS, "an activity generator")
        found = Collector()  # the tenant, the channel, the activity, generate and the steps: each on its own
        tenant, channel, activity, generate, offsets = "", "SALESMAN", {}, True, [0.0]
        with found.guard():
            tenant = arg.get("tenant")
            if tenant is None:
                if len(tenants) != 1:
                    if misspelt("tenant", P.unknown.get(path, ())):
                        raise ReportedAlready()
                    raise P.fail(path, "missing 'tenant' (required when the scenario has several tenants)")
                tenant = next(iter(tenants))
            elif tenant not in tenants:
                raise P.fail(path + ("tenant",), f"unknown tenant {tenant!r} (tenants: {', '.join(tenants)})")
        with found.guard():
            channel = P.string(arg.get("channel", "SALESMAN"), path + ("channel",))
        with found.guard():
            activity = arg.get("activity", {})
            if not isinstance(activity, dict):
                raise P.fail(path + ("activity",), "expected a mapping of activity fields (seed payload names)")
            _check_activity({"channel": channel, **activity}, path + ("activity",), P)
        with found.guard():
            generate = arg.get("generate", True)
            if not isinstance(generate, bool):
                raise P.fail(path + ("generate",), "expected true or false")
        with found.guard():
            offsets = cls._offsets(ctx, arg, path)
        found.raise_if_any(ScenarioError)
        return cls(tenant=tenant, channel=channel, activity=activity, generate=generate, steps=tuple(offsets))

    @classmethod
    def _offsets(cls, ctx: ParseContext, arg: dict[str, Any], path: KeyPath) -> list[float]:
        """When the steps happen: one, ``count`` (``every``), a ``rate`` ``for`` a span, or a ``cron``."""
        P = ctx.reader
        modes = [k for k in ("count", "rate", "cron") if k in arg]
        if len(modes) > 1:
            raise P.fail(path, f"use one of count, rate, cron — not {' and '.join(modes)}")
        offsets: list[float]
        if "rate" in arg:
            m = _RATE.match(str(arg["rate"]))
            if not m:
                raise P.fail(path + ("rate",), f"expected a rate like 5/s or 30/m, got {arg['rate']!r}")
            per_second = float(m.group(1)) / _RATE_UNITS[m.group(2)]
            if "for" not in arg:
                raise P.fail(path, "a rate needs 'for' (how long, e.g. for: 10m)")
            span = P.duration(arg["for"], path + ("for",))
            n = int(round(span * per_second))
            if per_second <= 0 or n > MAX_GENERATED:
                raise P.fail(path + ("rate",), f"makes {n} activities; the limit is {MAX_GENERATED}")
            offsets = [k / per_second for k in range(n)]
        elif "cron" in arg:
            offsets = _cron(ctx, arg, path, ctx.duration - ctx.at)
        else:
            n = P.integer(arg.get("count", 1), path + ("count",), lo=1)
            if n > MAX_GENERATED:
                raise P.fail(path + ("count",), f"at most {MAX_GENERATED} activities per event")
            every = P.duration(arg.get("every", 0), path + ("every",))
            offsets = [k * every for k in range(n)]
        for key in ("for", "until", "every"):
            if key in arg and key not in {"rate": ("for",), "cron": ("until",)}.get(modes[0] if modes else "", ()) \
                    and not (key == "every" and not modes or key == "every" and modes == ["count"]):
                raise P.fail(path + (key,), f"'{key}' does not apply here")
        return offsets

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        await self.apply_batch(run, at, [step])

    async def apply_batch(self, run: ScenarioRun, at: float, steps: Sequence[int]) -> None:
        """Steps that fall on the same instant, created :data:`CREATE_CHUNK` to a transaction (see
        Engine.create_activities). A burst of 25,000 in one call held every input and stored payload
        at once (about 55 MB, the peak of a 100,000-activity run); between chunks nothing else runs
        (the calls never suspend), so the events and ids are those of one call."""
        for start in range(0, len(steps), CREATE_CHUNK):
            chunk = min(CREATE_CHUNK, len(steps) - start)
            await run.engine.create_activities(self.tenant, [self._data(run) for _ in range(chunk)])
        n = len(self.steps)
        if steps[0] == 0:
            run.note(f"create {n} activit{'y' if n == 1 else 'ies'} for {self.tenant}/{self.channel}"
                     + ("" if n == 1 else f" (until {fmt_offset(at + self.steps[-1])})"))

    def _data(self, run: ScenarioRun) -> dict[str, Any]:
        data = example_activity(run.rng, channel=self.channel) if self.generate else {"channel": self.channel}
        data.update(self.activity)
        data.setdefault("channel", self.channel)
        return data


def _check_activity(data: dict[str, Any], path: KeyPath, P: Any) -> None:
    """The engine's own check of an activity's fields, each problem on the line that holds the field, so a
    wrong inline activity is refused when the file is read, not half-way through the run."""
    try:
        build_stored_payload(data, activity_id="check", created_at=0.0)
    except ActivityError as exc:
        raise ScenarioError.of([P.fail(path + tuple(field.split(".")) if field else path, message)
                                for field, message in exc.problems or ((None, str(exc)),)]) from None


def _cron(ctx: ParseContext, arg: dict[str, Any], path: KeyPath, room: float) -> list[float]:
    """Fire times of a crontab expression, computed with APScheduler's trigger (on the scenario's clock)."""
    from datetime import datetime, timedelta, timezone

    from apscheduler.triggers.cron import CronTrigger

    P = ctx.reader
    expr = arg["cron"]
    try:
        trigger = CronTrigger.from_crontab(str(expr), timezone=timezone.utc)
    except ValueError as exc:
        raise P.fail(path + ("cron",), f"not a crontab expression ({exc}); e.g. '*/15 * * * *'") from None
    until = P.duration(arg["until"], path + ("until",)) if "until" in arg else room
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)  # offsets only; the real start is added at run time
    out: list[float] = []
    prev = None
    now = t0 - timedelta(microseconds=1)
    while True:
        nxt = trigger.get_next_fire_time(prev, now)
        if nxt is None:
            break
        off = (nxt - t0).total_seconds()
        if off > until:
            break
        out.append(off)
        if len(out) > MAX_GENERATED:
            raise P.fail(path + ("cron",), f"fires more than {MAX_GENERATED} times before 'until'")
        prev, now = nxt, nxt
    return out


@dataclass(frozen=True, kw_only=True)
class Endpoint(Action):
    """Change what a simulated endpoint does from now on (``{name, behaviour}``)."""

    key: ClassVar[str] = "endpoint"
    name: str
    behaviour: Any

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        P = ctx.reader
        value = P.mapping(value, path, {"name", "behaviour"}, "an endpoint change")
        found = Collector()  # the name and the behaviour are checked each on its own
        name = ""
        with found.guard():
            name = P.string(P.required(value, path, "name"), path + ("name",))
            if ctx.endpoints is not None and name not in ctx.endpoints:
                raise P.fail(path + ("name",), f"unknown simulated endpoint {name!r} (simulated: "
                                               f"{', '.join(sorted(ctx.endpoints)) or 'none'})")
        with found.guard():
            try:
                parse_behaviour(P.required(value, path, "behaviour"), source=P.source)
            except ProviderConfigError as exc:
                raise ScenarioError.of([P.fail(path + ("behaviour",), f"{e.field}: {e.message}" if e.field
                                               else e.message) for e in exc.errors]) from None
        found.raise_if_any(ScenarioError)
        return cls(name=name, behaviour=value["behaviour"])

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        run.endpoints.set_behaviour(self.name, self.behaviour)
        run.note(f"endpoint {self.name} -> {_short(self.behaviour)}")


def _short(behaviour: Any) -> str:
    text = json.dumps(behaviour, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, kw_only=True)
class _OnConfig(Action):
    """An action on one configuration, written as its id."""

    config: str

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        return cls(config=ctx.reader.config_ref(value, path, ctx.configs))


@dataclass(frozen=True, kw_only=True)
class Activate(_OnConfig):
    """Activate a configuration (its verification GET decides)."""

    key: ClassVar[str] = "activate"

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        await run.activate(self.config)


@dataclass(frozen=True, kw_only=True)
class Deactivate(_OnConfig):
    """Pause a configuration: pending deliveries are kept, nothing is sent."""

    key: ClassVar[str] = "deactivate"

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        await run.engine.deactivate(self.config, reason="scenario")
        run.note(f"configuration {self.config} deactivated")


@dataclass(frozen=True, kw_only=True)
class Edit(Action):
    """Change configuration fields (``{config, retry: …, mapping: …}``), validated before the run."""

    key: ClassVar[str] = "edit"
    config: str
    changes: dict[str, Any]

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        P = ctx.reader
        value = P.mapping(value, path, {"config"} | EDITABLE_KEYS, "a configuration edit")
        found = Collector()  # the configuration and each field are checked on their own
        cid = ""
        with found.guard():
            cid = P.config_ref(P.required(value, path, "config"), path + ("config",), ctx.configs)
        changes: dict[str, Any] = {}
        for key in value.keys() - {"config"}:
            with found.guard():
                change = P.durations({key: value[key]}, path)
                P.config_fields(change, path)
                changes.update(change)
        if not found.errors:
            P.config_fields(changes, path)  # fields that are valid alone but not together
        found.raise_if_any(ScenarioError)
        return cls(config=cid, changes=changes)

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        await run.engine.edit_config(self.config, **self.changes)
        run.note(f"configuration {self.config} edited: {', '.join(sorted(self.changes))}")


@dataclass(frozen=True, kw_only=True)
class _FailedScope(Action):
    """Which FAILED deliveries: ``all`` (or empty), a configuration id, or a mapping of filters."""

    config: str | None = None
    FILTERS: ClassVar[set[str]] = {"config"}

    @classmethod
    def scope(cls, value: Any, path: KeyPath, ctx: ParseContext) -> dict[str, Any]:
        P = ctx.reader
        if value in (None, "all"):
            return {"config": None}
        if isinstance(value, str):
            return {"config": P.config_ref(value, path, ctx.configs)}
        value = P.mapping(value, path, cls.FILTERS, f"a {cls.key}")
        return {"config": P.config_ref(value["config"], path + ("config",), ctx.configs)
                if value.get("config") is not None else None}

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        return cls(**cls.scope(value, path, ctx))


@dataclass(frozen=True, kw_only=True)
class ForceRetry(_FailedScope):
    """Force-retry FAILED deliveries (of a configuration, with a reason, created in a time range)."""

    key: ClassVar[str] = "force_retry"
    FILTERS: ClassVar[set[str]] = {"config", "reason", "since", "until"}
    reason: str | None = None
    since: float | None = None  #: creation time range, as offsets from the scenario start
    until: float | None = None

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        found = Collector()  # the scope and each filter are checked on their own
        args: dict[str, Any] = {"config": None}
        with found.guard():
            args = cls.scope(value, path, ctx)
        if isinstance(value, dict):
            with found.guard():
                reason = value.get("reason")
                if reason is not None and not isinstance(reason, str):
                    raise ctx.reader.fail(path + ("reason",), f"expected text, got {type(reason).__name__}")
                args["reason"] = reason
            for key in ("since", "until"):
                if key in value:
                    with found.guard():
                        args[key] = ctx.reader.duration(value[key], path + (key,))
        found.raise_if_any(ScenarioError)
        return cls(**args)

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        ids = await run.engine.force_retry_where(
            config_id=self.config, reason=self.reason,
            since=run.t0 + self.since if self.since is not None else None,
            until=run.t0 + self.until if self.until is not None else None)
        run.force_retried.update(ids)
        scope = f" created since {fmt_offset(self.since)}" if self.since is not None else ""
        run.note(f"force retry of {len(ids)} FAILED deliver{'y' if len(ids) == 1 else 'ies'}{scope}")


@dataclass(frozen=True, kw_only=True)
class Skip(_FailedScope):
    """Skip the FAILED heads that block their ordered queues (``ordering: {on_exhausted: block}``)."""

    key: ClassVar[str] = "skip"

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        e = run.engine
        blocked = [d for d in await e.store.deliveries(status=Status.FAILED, config_id=self.config) if d.holds]
        for d in blocked:
            await e.skip(d.id)
        run.note(f"skipped {len(blocked)} blocked queue head(s)")


@dataclass(frozen=True, kw_only=True)
class Replay(Action):
    """Send one delivery again as it was (a manual replay; its status does not change)."""

    key: ClassVar[str] = "replay"
    delivery: int

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        P = ctx.reader
        value = P.mapping(value, path, {"delivery"}, "a replay")
        return cls(delivery=P.integer(P.required(value, path, "delivery"), path + ("delivery",), lo=1))

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        attempt = await run.engine.replay(self.delivery)
        run.note(f"replay of delivery {self.delivery}: {attempt.outcome} {attempt.status_code or ''}")


@dataclass(frozen=True, kw_only=True)
class Crash(Action):
    """Kill the engine mid-flight (leases left in the database) and restart it on the same database."""

    key: ClassVar[str] = "crash"
    restart_after: float = 0.0

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        arg = ctx.reader.mapping({} if value is None else value, path, {"restart_after"}, "a crash")
        return cls(restart_after=ctx.reader.duration(arg.get("restart_after", 0), path + ("restart_after",)))

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        await run.crash()
        run.note("engine crashed (in-flight attempts lost, leases left in the database)")
        if self.restart_after:
            await run.clock.sleep(self.restart_after)
        await run.open()
        run.start()
        run.note("engine restarted on the same database")


@dataclass(frozen=True, kw_only=True)
class MessageEvents(Action):
    """Reteno message events for an account's webhook: ``count`` of one ``status`` (or mixed), ``every``."""

    key: ClassVar[str] = "message_events"
    KEYS: ClassVar[set[str]] = {"account", "count", "every", "status", "fields"}
    account: str
    status: str
    fields: dict[str, Any] = field(default_factory=dict)
    steps: tuple[float, ...] = (0.0,)

    @property
    def offsets(self) -> Sequence[float]:
        return self.steps

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        from dispatchsim.engine.events import EVENT_STATUSES, validate_event

        P, accounts = ctx.reader, ctx.accounts
        value = P.mapping(value, path, cls.KEYS, "a batch of message events")
        if accounts is not None and not accounts:
            raise P.fail(path, "no accounts: add a top-level 'accounts:' with the message-event webhook")
        found = Collector()  # each key is checked on its own
        account, status, fields, count, every = "", "DELIVERED", {}, 1, 0.0
        with found.guard():
            account = value.get("account")
            if account is None and accounts is not None and len(accounts) == 1:
                account = next(iter(accounts))
            if account is None and misspelt("account", P.unknown.get(path, ())):
                raise ReportedAlready()
            if accounts is not None and account not in accounts:
                raise P.fail(path + ("account",), f"unknown account {account!r} (accounts: "
                                                  f"{', '.join(sorted(accounts))})")
        with found.guard():
            status = value.get("status", "DELIVERED")
            if status != "mixed" and status not in EVENT_STATUSES:
                raise P.fail(path + ("status",), f"expected one of {', '.join(EVENT_STATUSES)} or mixed, got "
                                                 f"{status!r}")
        with found.guard():
            fields = value.get("fields", {})
            if not isinstance(fields, dict):
                raise P.fail(path + ("fields",), "expected a mapping of the Reteno event parameters")
            if fields:
                _, problems = validate_event({"activityStatus": "DELIVERED", **fields}, now=0.0, where="fields")
                problems = [p for p in problems if "only sent with" not in p]
                if problems:
                    raise P.fail(path + ("fields",), "; ".join(problems))
        with found.guard():
            count = P.integer(value.get("count", 1), path + ("count",), lo=1)
            if count > MAX_GENERATED:  # each is a timeline step, built as the file is read
                raise P.fail(path + ("count",), f"makes {count} message events; the limit is {MAX_GENERATED}")
        with found.guard():
            every = P.duration(value.get("every", 0), path + ("every",))
        found.raise_if_any(ScenarioError)
        return cls(account=account, status=status, fields=fields, steps=tuple(k * every for k in range(count)))

    async def apply(self, run: ScenarioRun, at: float, step: int) -> None:
        """One message event of the seed's shape (Reteno webhooks doc), varied from the seed."""
        from dispatchsim.engine.events import EVENT_STATUSES

        status = self.status if self.status != "mixed" else run.rng.choice(EVENT_STATUSES)
        contact = run.rng.randrange(10_000_000, 2_000_000_000)
        event: dict[str, Any] = {
            "broadcastId": 3459207, "messageName": "test", "iid": str(uuid.UUID(int=run.rng.getrandbits(128))),
            "contactId": contact, "externalCustomerId": str(contact % 1_000_000_000),
            "email": f"contact{contact}@example.test", "mediaType": "email", "activityStatus": status,
            "messageId": 2489300, "messageInstanceId": 4702518 + step, "statusData": {},
        }
        if status == "UNDELIVERED":
            event.update(hardBounce=False, statusDescription="5.1.2 (bad destination system: no such domain)")
        elif status == "CLICKED":
            event["clickEventLink"] = "https://example.test/promo"
        event.update(self.fields)
        await run.engine.events.post(self.account, [event])
        n = len(self.steps)
        if step == 0:
            run.note(f"{n} message event{'s' if n != 1 else ''} ({self.status}) for account {self.account}")


#: Every timeline action, by its key in a timeline event.
ACTIONS: dict[str, type[Action]] = {cls.key: cls for cls in (
    Create, Endpoint, Activate, Deactivate, Edit, ForceRetry, Skip, Replay, Crash, MessageEvents)}

__all__ = ["ACTIONS", "Action", "MAX_GENERATED"]
