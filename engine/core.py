"""The engine: the library API that the CLI, the scenario runner and the HTTP API call."""
from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dispatchsim.mapping.activity import DISPATCHED_TYPES

from .arguments import ENGINE_OPTIONS, checked_calls, open_problem, options_problem
from .clock import Clock, RealClock, VirtualClock, iso, virtual_loop
from .config import CONFIG_FIELDS, ConfigKind, Snapshot, build_snapshot
from .dispatcher import Dispatcher, Prepared, request_body
from .errors import (ActivationRefused, ActivityError, ActivityExists, AlreadyExists, ConfigDeleted, ConfigError, ConfigInUse,
                     DispatchsimError, InvalidArgument, NotFound, PayloadUnmappable, ResultConflict)
from .events import MessageEvents
from .log import make_logger
from .payload import build_stored_payload
from .redact import Redactor, redact_url
from .sender import Sender
from .states import Circuit, Status
from .store import AttemptResult
from .store_contract import NewActivity, NewDelivery, StoreContract
from .store_file import OwnerLock
from .store_open import is_url, open_store, owner_lock, refuse_mistyped_url
from .store_rows import Attempt, Configuration, Delivery, Provider, Tenant
from .store_queries import ActivityFilter

#: What an id (tenant, provider, configuration name) may be; also the pattern the HTTP API documents.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)


@dataclass(frozen=True)
class RunSummary:
    """Where a drain ended."""

    started_at: float
    finished_at: float
    counts: dict[str, int]
    idle: bool  #: False when the deadline stopped it with work left

    @property
    def elapsed(self) -> float:
        """Clock seconds the run took (virtual seconds on a virtual clock)."""
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class ActivityPage:
    """One page of an activity listing, oldest first."""

    items: list[dict[str, Any]]
    next_after: int | None  #: pass as ``after`` for the next page; None on the last page


@dataclass(frozen=True)
class ResultSubmission:
    """What a result submission did: ``created`` is False when the same result was already there."""

    activity: dict[str, Any]
    created: bool


_SCOPED_RE = re.compile(r"^(.+)~[0-9a-f]{8}$")


def scoped_config_id(tenant_id: str, name: str) -> str:
    """The stored id of a configuration a tenant names ``name`` (serve mode): names are per tenant,
    so two tenants may both have ``crm`` and neither learns of the other's. The suffix is derived
    from the tenant only ('~' never appears in a name), so it says nothing about other tenants."""
    return name + scope_suffix(tenant_id)


def scope_suffix(tenant_id: str) -> str:
    """What :func:`scoped_config_id` appends to a tenant's configuration names (``~`` and 8 hex)."""
    return f"~{hashlib.sha256(tenant_id.encode()).hexdigest()[:8]}"


def config_name(config_id: str) -> str:
    """The name a tenant knows a configuration by (its id without the tenant scope)."""
    m = _SCOPED_RE.match(config_id)
    return m.group(1) if m else config_id


def queue_name(queue: str) -> str:
    """An ordered queue as a tenant knows it: its configuration by name, then ``/partition`` if any (a
    configuration id has no ``/``; see ``_queue``)."""
    config_id, slash, partition = queue.partition("/")
    return config_name(config_id) + slash + partition


def check_id(kind: str, value: Any) -> str:
    """``value`` when it is a valid id (:data:`ID_PATTERN`), else a ConfigError saying the rule: the one
    check of tenant, provider and configuration ids, whether they come from the API, a file or the CLI."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):  # fullmatch: no trailing newline
        shown = repr(value) if not isinstance(value, str) or len(value) <= 64 else \
            f"{value[:64]!r}… ({len(value)} characters)"
        raise ConfigError(f"{kind} id {shown}: use 1-64 letters, digits, '_', '-', '.', ':', starting with a letter "
                          "or digit")
    return value


@checked_calls
class Engine:
    """A dispatch engine on one database (a SQLite file, or PostgreSQL shared with other engines).

    Open it with :meth:`open` (or ``async with Engine.open(...)``); everything is an async call.
    ``seed`` makes ids deterministic (and a virtual run byte-for-byte reproducible); without
    one, ids are random UUIDs. Every public call checks its arguments first (:func:`checked_calls`):
    a wrong one raises :class:`InvalidArgument` naming it, and nothing is done.
    """

    def __init__(self, store: StoreContract, *, clock: Clock, seed: int | None = None,
                 log_stream: TextIO | None = None, log_format: str = "json", concurrency: int = 100,
                 lease_margin: float = 30.0, sender: Sender | None = None) -> None:
        """``sender``: the HTTP side to use instead of a plain :class:`Sender` (a scenario against a
        team's own URL passes one that records and caps what reaches that URL)."""
        problem = options_problem({"log_stream": log_stream, "log_format": log_format, "concurrency": concurrency,
                                   "lease_margin": lease_margin, "sender": sender})
        if problem is not None:
            raise InvalidArgument(f"{problem[1]} (Engine)", field=problem[0])
        self.store = store
        self.clock = clock
        self.seed = seed
        #: one redaction for the logs and for what the sender brings back (an injected sender's, if any)
        self.redactor = sender.redactor if sender is not None else Redactor()
        self._sinks: list[Any] = []
        self.log = make_logger(now=clock.now, redactor=self.redactor, stream=log_stream, fmt=log_format,
                               sinks=self._sinks)
        self.sender = sender if sender is not None else Sender(now=clock.now, limit=max(concurrency, 10),
                                                               redactor=self.redactor)
        self._prepared: dict[tuple[str, int], Prepared] = {}
        self.instance = uuid.uuid4().hex[:8] if seed is None else f"e{seed}"
        #: Reteno message events: account webhooks and batching; the batches are deliveries
        self.events = MessageEvents(self)
        self.dispatcher = Dispatcher(store=store, sender=self.sender, clock=clock, log=self.log,
                                     prepared=self._prepare, instance=self.instance, concurrency=concurrency,
                                     lease_margin=lease_margin, produce=self.events.form_due_batches,
                                     known=self._prepared.get)
        self._task: asyncio.Task[None] | None = None
        #: the owner lock of the SQLite file this engine took itself (see :meth:`open`)
        self._lock: OwnerLock | None = None

    async def _load(self) -> None:
        """Read what the database already holds: the secrets to redact, endpoint health, webhooks; and
        mark this engine's leases as held by a live owner (other workers of a shared database release
        them at once when it dies, see ``StoreContract.dead_owners``)."""
        await self.store.register_owner(self.instance)
        for cfg in await self.store.configs(kind=None):
            self.redactor.add(*Snapshot.from_dict(await self.store.snapshot(cfg.id, cfg.version)).secrets())
        await self.dispatcher.load()
        await self.events.load()

    @classmethod
    async def open(cls, path: str | Path = ":memory:", *, clock: Clock | None = None, virtual: bool = False,
                   seed: int | None = None, durable: bool | None = None, pool_size: int = 10,
                   scratch: bool = False, owner: OwnerLock | None = None, **kw: Any) -> Engine:
        """Open (creating or migrating) the database at ``path``; ``virtual=True`` uses the virtual clock.

        ``path`` is a SQLite file, or a PostgreSQL database as a ``postgresql://`` URL (with
        ``pool_size`` connections): several engines, in several processes or machines, may share a
        PostgreSQL database. A network database runs on the real clock: ``virtual=True`` with a
        URL is a ConfigError, and so is a ``seed`` (seeded ids would repeat across the engines sharing it).

        A virtual clock starts at the virtual epoch on a new database, and at the latest time recorded
        in an existing one, so simulated time continues where it stopped (never runs backwards).
        ``durable``: commits wait for the disk (see :class:`Store`); by default they do on the real
        clock and do not in a simulation (a virtual clock), where the fsyncs were most of a run's time.
        ``scratch``: a SQLite file nobody keeps after this process (a scenario's temporary database):
        not durable, its journal in memory (see :class:`Store`).

        A SQLite file has one owner process at a time, as in serve mode: the engine takes the file's
        owner lock (:class:`OwnerLock`) until it is closed, or until :meth:`crash` (a dead process drops
        it), so a library engine cannot dispatch the deliveries of a running serve, nor one of them send
        the other's twice (DatabaseInUse, naming the holder's pid). ``owner``: a lock the caller already
        holds (serve takes it before it opens anything), kept by the caller.
        """
        unknown = sorted(set(kw) - set(ENGINE_OPTIONS))
        if unknown:  # what Python says of a keyword it does not know, before anything is opened
            raise TypeError(f"Engine.open() got an unexpected keyword argument {unknown[0]!r} (it takes path, "
                            f"clock, virtual, seed, durable, pool_size, scratch, owner, {', '.join(ENGINE_OPTIONS)})")
        problem = open_problem(path, clock=clock, virtual=virtual, seed=seed, durable=durable, pool_size=pool_size,
                               scratch=scratch, owner=owner, options=kw)
        if problem is not None:
            raise InvalidArgument(f"{problem[1]} (Engine.open)", field=problem[0])
        if virtual and is_url(path):
            raise ConfigError("the virtual clock runs on a SQLite database (a file or :memory:); a PostgreSQL "
                              "database runs on the real clock", field="db")
        if seed is not None and is_url(path):
            # a seed makes this engine's ids and lease tokens reproducible, so two seeded engines on one
            # shared database would make the same ones: an activity id taken twice, one lease for two workers
            raise ConfigError("a seed makes ids reproducible for one engine on its own SQLite database; engines "
                              "sharing a PostgreSQL database need unique ids: open it without a seed", field="seed")
        simulated = (clock.virtual if clock is not None else virtual)
        refuse_mistyped_url(path)  # before the lock file, whose name would quote it
        if clock is None and virtual:
            virtual_loop()  # a loop the virtual clock cannot run on: refused before the file is made
        lock = owner_lock(path) if owner is None else None
        if lock is not None:
            lock.acquire()
        store: StoreContract | None = None
        try:
            store = await open_store(path, durable=not simulated if durable is None else durable,
                                     pool_size=pool_size, scratch=scratch)
            if clock is None:
                if virtual:
                    latest = await store.latest_time()
                    clock = VirtualClock() if latest is None else VirtualClock(epoch=latest)
                else:
                    clock = RealClock()
            engine = cls(store, clock=clock, seed=seed, **kw)
            engine._lock = lock
            await engine._load()
            await engine.sender.start()
        except BaseException:
            # nothing of a failed open stays held: the next open in this process must not find it in use
            if store is not None:
                await store.close()
            if lock is not None:
                lock.release()
            raise
        return engine

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self, *, deadline: float = 10.0) -> int:
        """Graceful stop: no new claims, wait for in-flight attempts up to ``deadline`` s."""
        try:
            abandoned = await self.stop(deadline=deadline)
            await self.sender.close()
            await self.store.close()
        finally:
            self._release_lock()
        return abandoned

    async def crash(self) -> None:
        """Simulate sudden death (tests, scenarios): in-flight attempts vanish, leases stay."""
        self.dispatcher.abandon()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await asyncio.sleep(0)
        await self.sender.close()
        self._release_lock()  # as the operating system would for a dead process
        await self.store.close()

    def subscribe(self, sink: Any) -> None:
        """Receive every event (a dict, secrets redacted) as it is logged. A sink that raises is
        unsubscribed, its error passed to the event loop's exception handler; the engine goes on."""
        if not callable(sink):  # it would fail at the next event, far from this call
            raise InvalidArgument(f"must be a function taking each event (a dict), got {type(sink).__name__} "
                                  "(Engine.subscribe)", field="sink")
        self._sinks.append(sink)

    # -- tenants, providers, configurations ---------------------------------------------

    async def add_tenant(self, tenant_id: str, name: str | None = None) -> Tenant:
        """Register a tenant (the owner of activities and configurations) and return it.

        Raises ConfigError when the id is malformed or already taken.
        """
        check_id("tenant", tenant_id)
        if not await self.store.add_tenant(tenant_id, name or tenant_id, self.clock.now()):
            raise AlreadyExists(f"tenant {tenant_id!r} already exists")
        self.log.info("tenant.created", tenant_id=tenant_id)
        tenant = await self.store.tenant(tenant_id)
        assert tenant is not None
        return tenant

    async def add_provider(self, provider_id: str, name: str | None = None) -> Provider:
        """Register a provider (the receiving side of configurations) and return it.

        Raises ConfigError when the id is malformed or already taken.
        """
        check_id("provider", provider_id)
        if not await self.store.add_provider(provider_id, name or provider_id, self.clock.now()):
            raise AlreadyExists(f"provider {provider_id!r} already exists")
        self.log.info("provider.registered", provider_id=provider_id)
        provider = await self.store.provider(provider_id)
        assert provider is not None
        return provider

    async def add_config(self, tenant_id: str, provider_id: str, channel: str, *, config_id: str | None = None,
                         activate: bool = False, scoped: bool = False, **fields: Any) -> dict[str, Any]:
        """Create a dispatch configuration (inactive unless ``activate``); validated before storing.

        ``scoped`` (serve mode): ``config_id`` is a name within the tenant, stored as
        :func:`scoped_config_id`, so a name taken by another tenant is no obstacle and no clue."""
        if await self.store.tenant(tenant_id) is None:
            raise NotFound(f"tenant {tenant_id!r} not found; add it first")
        if await self.store.provider(provider_id) is None:
            raise NotFound(f"provider {provider_id!r} is not registered; providers are registered centrally")
        if not isinstance(channel, str) or not channel.strip():
            raise ConfigError("required, e.g. SALESMAN", field="channel")
        snap, warnings = build_snapshot(fields)
        if scoped:
            name = check_id("configuration", config_id) if config_id else \
                await self._new_config_id(tenant_id, provider_id, channel, scoped=True)
            cid = scoped_config_id(tenant_id, name)
        else:
            name = cid = check_id("configuration", config_id) if config_id else \
                await self._new_config_id(tenant_id, provider_id, channel)
        existing = await self.store.config(cid)
        if existing is not None:
            raise AlreadyExists(f"configuration id {name!r} belonged to a deleted configuration; ids are not reused"
                                if existing.deleted else f"configuration {name!r} already exists")
        self.redactor.add(*snap.secrets())
        await self.store.insert_config(cid, tenant_id, provider_id, channel, snap.to_dict(redact=False),
                                       self.clock.now())
        self.log.info("config.created", config_id=cid, tenant_id=tenant_id, provider_id=provider_id,
                      channel=channel, endpoint=redact_url(snap.endpoint_url), warnings=warnings or None)
        if activate:
            await self.activate(cid)
        view = await self.config_view(cid)
        view["warnings"] = warnings
        return view

    async def _new_config_id(self, tenant_id: str, provider_id: str, channel: str, *, scoped: bool = False) -> str:
        """A free id (a free name within the tenant when ``scoped``: counting the tenant's own only)."""
        n = len(await self.store.configs(tenant_id if scoped else None)) + 1
        base = f"{tenant_id}.{provider_id}.{channel}".lower()[:56]
        cid = base

        async def taken(c: str) -> bool:
            return await self.store.config(scoped_config_id(tenant_id, c) if scoped else c) is not None

        while await taken(cid):
            n += 1
            cid = f"{base}.{n}"
        return cid

    async def edit_config(self, config_id: str, **changes: Any) -> dict[str, Any]:
        """New immutable version; deliveries already created keep the version they were made with.

        An active configuration whose endpoint or auth changes is verified again first.
        """
        if not changes:
            raise ConfigError(f"nothing to change; send one or more of {', '.join(CONFIG_FIELDS)}")
        cfg = await self.config(config_id)
        if cfg.kind is not ConfigKind.ACTIVITIES:
            raise ConfigError(f"configuration {config_id!r} is an account's message-event webhook: save the webhook"
                              " again (PUT /api/accounts/{account}/webhook) to change it")
        current = Snapshot.from_dict(await self.store.snapshot(config_id, cfg.version)).to_dict(redact=False)
        for key in ("mapping_digest",):
            current.pop(key, None)
        merged = {**current, **changes}
        snap, warnings = build_snapshot(merged)
        if cfg.active and ("endpoint_url" in changes or "auth" in changes):
            await self._verify(config_id, snap)
        self.redactor.add(*snap.secrets())
        version = await self.store.new_config_version(config_id, snap.to_dict(redact=False), self.clock.now())
        self.log.info("config.edited", config_id=config_id, version=version, changed=sorted(changes))
        view = await self.config_view(config_id)
        view["warnings"] = warnings
        return view

    async def activate(self, config_id: str) -> dict[str, Any]:
        """Send the verification GET; only a 2xx activates (as Reteno does on save)."""
        cfg = await self.config(config_id)
        snap = Snapshot.from_dict(await self.store.snapshot(config_id, cfg.version))
        await self._verify(config_id, snap)
        await self.store.set_config_active(config_id, True, self.clock.now())
        await self.dispatcher.reset_streak(config_id)  # re-enabled: auto-disable counts new failures from zero
        self.log.info("config.activated", config_id=config_id, endpoint=redact_url(snap.endpoint_url))
        self.dispatcher.wake()
        return await self.config_view(config_id)

    async def verification_failure(self, snap: Snapshot) -> str | None:
        """Send the verification GET to the snapshot's endpoint; why it failed (secrets hidden), or None."""
        out = await self.sender.verify(snap.endpoint_url, snap.auth, connect=snap.timeouts.connect,
                                       total=snap.timeouts.total)
        if out.ok:
            return None
        reason = (f"HTTP {out.status} (expected 2xx)" if out.status is not None
                  else f"{out.kind.value.lower()}: {out.error}")
        return reason  # the sender already scrubbed what the endpoint sent back

    async def _verify(self, config_id: str, snap: Snapshot) -> None:
        reason = await self.verification_failure(snap)
        if reason is not None:
            self.log.warning("config.activation_refused", config_id=config_id, reason=reason)
            raise ActivationRefused(f"configuration {config_id!r} not activated: verification GET to "
                                    f"{redact_url(snap.endpoint_url)} failed: {reason}")

    async def deactivate(self, config_id: str, reason: str = "manual") -> dict[str, Any]:
        """Pause: no new deliveries, and those already created wait (nothing is sent) until re-activation."""
        await self.config(config_id)
        await self.store.set_config_active(config_id, False, self.clock.now(), reason)
        self.log.info("config.deactivated", config_id=config_id, reason=reason)
        return await self.config_view(config_id)

    async def delete_config(self, config_id: str) -> None:
        """Delete a configuration: it stops dispatching and can no longer be read or changed.

        Raises NotFound when it does not exist or was already deleted, and ConfigInUse while it has
        deliveries waiting to be sent (deactivate it and let them end, or wait until they have: a
        deleted configuration's pending deliveries would never be sent nor end). Its deliveries and
        attempts stay in the store for the record.
        """
        await self.config(config_id)
        async with self.store.tx():
            # deleted first: from here no fan-out creates a delivery for it (see StoreContract.delete_config),
            # so the check below sees them all; refusing rolls the delete back
            await self.store.delete_config(config_id, self.clock.now())
            for status in (Status.READY, Status.RETRYING):
                if await self.store.deliveries(config_id=config_id, status=status, limit=1):
                    raise ConfigInUse(f"the configuration has deliveries waiting to be sent ({status.value}):"
                                      " deleting it would strand them; let them be delivered or fail first")
        self.log.info("config.deleted", config_id=config_id)

    async def config(self, config_id: str) -> Configuration:
        """The stored configuration row (NotFound when it does not exist or was deleted)."""
        cfg = await self.store.config(config_id)
        if cfg is None or cfg.deleted:
            raise NotFound(f"configuration {config_id!r} not found")
        return cfg

    async def config_view(self, config_id: str) -> dict[str, Any]:
        """The configuration as any read API shows it: secrets replaced by ``***``."""
        cfg = await self.config(config_id)
        return cfg.to_json(Snapshot.from_dict(await self.store.snapshot(config_id, cfg.version)).to_dict(redact=True))

    async def prepared(self, config_id: str, version: int) -> Prepared:
        """Snapshot and compiled mapping of one configuration version (cached; versions are immutable)."""
        return await self._prepare(config_id, version)

    async def _prepare(self, config_id: str, version: int) -> Prepared:
        """:meth:`prepared` without the check of a public call's arguments: what the engine and its
        dispatcher call with the ids the store gave them, several times per attempt (with the check, a
        coroutine and two rules each time, the throughput benchmark ran 12,800 instructions more per
        delivery: 1.1 %)."""
        key = (config_id, version)
        prep = self._prepared.get(key)
        if prep is None:
            snap = Snapshot.from_dict(await self.store.snapshot(config_id, version))
            prep = self._prepared[key] = Prepared(snapshot=snap, mapper=_mapper(snap))
        return prep

    # -- activities ---------------------------------------------------------------------

    async def create_activity(self, tenant_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Store an activity and fan it out: one delivery per active configuration of its tenant and channel."""
        aid = (await self.create_activities(tenant_id, [data]))[0]
        return (await self.store.activity(aid)).to_json()

    async def create_activities(self, tenant_id: str, items: list[dict[str, Any]]) -> list[str]:
        """Several activities at one instant in one transaction (all or none); returns their ids.

        What a burst costs is mostly its commits: a scenario creating 2,500 activities at once
        commits once instead of 2,500 times. Events are the same as for one call per activity.
        Every activity is checked and its deliveries planned before anything is inserted; then the
        store inserts them together (:meth:`~StoreContract.insert_activities`), in the same order,
        with the same ids and sequence numbers as one insert after the other.
        """
        if await self.store.tenant(tenant_id) is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        now = self.clock.now()
        created: list[tuple[str, dict[str, Any], list[tuple[int, str, str]]]] = []
        async with self.store.tx():
            configs: dict[str, list[tuple[str, int]]] = {}
            taken: set[str] = set()
            activities: list[NewActivity] = []
            deliveries: list[NewDelivery] = []
            first_seq: int | None = None  # the sequence number of this burst's first activity, read once
            for data in items:
                aid, data = await self._activity_id(data, taken)
                if aid is None:
                    if self.seed is not None and first_seq is None:
                        first_seq = await self.store.next_activity_seq()
                    aid = self._new_activity_id(None if first_seq is None else first_seq + len(activities))
                    taken.add(aid)  # a caller's id equal to it, later in the burst, exists already
                payload = build_stored_payload(data, activity_id=aid, created_at=now)
                activities.append(NewActivity(aid, tenant_id, payload["type"], payload["channel"], payload))
                made = []
                if payload["type"] in DISPATCHED_TYPES:
                    channel = payload["channel"]
                    if channel not in configs:
                        configs[channel] = await self.store.active_configs(tenant_id, channel)
                    for cid, version in configs[channel]:
                        prep = await self._prepare(cid, version)
                        queue = _queue(cid, prep.snapshot, payload)
                        deliveries.append(NewDelivery(webhook_id=self._webhook_id(aid, cid), activity_id=aid,
                                                      config_id=cid, config_version=version, queue=queue,
                                                      ordered=prep.snapshot.ordering.ordered))
                        made.append((len(deliveries) - 1, cid, queue))
                created.append((aid, payload, made))
            await self.store.insert_activities(activities, now)
            ids = await self.store.insert_deliveries(deliveries, now)
        created = [(aid, payload, [(ids[at], cid, queue) for at, cid, queue in made])
                   for aid, payload, made in created]
        for aid, payload, made in created:
            for did, cid, queue in made:
                self.log.info("delivery.created", delivery_id=did, activity_id=aid, config_id=cid, queue=queue,
                              status=Status.READY)
            if not made:
                why = ("dispatch of MESSAGE activities is not available yet (seed: 'available soon')"
                       if payload["type"] not in DISPATCHED_TYPES
                       else f"no active configuration for tenant {tenant_id} and channel {payload['channel']}")
                self.log.info("activity.not_dispatched", activity_id=aid, reason=why)
        if any(made for _, _, made in created):
            self.dispatcher.wake()
        return [aid for aid, _, _ in created]

    async def _activity_id(self, data: dict[str, Any], taken: set[str]) -> tuple[str | None, dict[str, Any]]:
        """The id the caller chose (a UUID, the payload's ``id``; None when it chose none), and the
        fields without it.

        A caller that chooses its ids can retry a create after a timeout without making a second
        activity: the second try is refused (:class:`ActivityExists`) instead."""
        if not isinstance(data, dict) or "id" not in data:
            return None, data
        given = data["id"]
        try:
            aid = str(uuid.UUID(given)) if isinstance(given, str) else None
        except ValueError:
            aid = None
        if aid is None:
            message = f"a UUID such as {uuid.UUID(int=1)}, got {given!r}"
            raise ActivityError(f"invalid activity: id: {message}", fields=("id",), problems=(("id", message),))
        exists = aid in taken
        if not exists:
            try:
                await self.store.activity_tenant(aid)
                exists = True
            except NotFound:
                pass
        if exists:
            raise ActivityExists(f"activity {aid} exists already; choose another id (nothing was stored)")
        taken.add(aid)
        return aid, {k: v for k, v in data.items() if k != "id"}

    def _new_activity_id(self, seq: int | None) -> str:
        """A new id: random, or with a seed made from it and the activity's sequence number ``seq``."""
        if self.seed is None or seq is None:
            return str(uuid.uuid4())
        digest = hashlib.sha256(f"{self.seed}:activity:{seq}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def _webhook_id(self, activity_id: str, config_id: str) -> str:
        digest = hashlib.sha256(f"{activity_id}:{config_id}".encode()).hexdigest()
        return "msg_" + digest[:24]

    async def activity(self, activity_id: str) -> dict[str, Any]:
        """One activity as JSON-ready data (NotFound when the id is unknown)."""
        return (await self.store.activity(activity_id)).to_json()

    async def list_activities(self, *, tenant_id: str | None = None, channel: str | None = None,
                              status: str | None = None, dispatch_status: Status | None = None,
                              created_from: float | None = None, created_to: float | None = None,
                              after: int = 0, limit: int = 100) -> ActivityPage:
        """Activities matching every given filter, oldest first, ``limit`` at a time after ``after``.

        ``status`` is the payload's status (e.g. PENDING); ``dispatch_status`` keeps activities with
        at least one delivery in that status; ``created_from`` is inclusive, ``created_to`` exclusive.
        """
        f = ActivityFilter(tenant_id=tenant_id, channel=channel, status=status, dispatch_status=dispatch_status,
                           created_from=created_from, created_to=created_to)
        rows = await self.store.activity_page(f, after_seq=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return ActivityPage(items=[(await self.store.activity(aid)).to_json() for _, aid in rows],
                            next_after=rows[-1][0] if more and rows else None)

    async def submit_result(self, activity_id: str, result: dict[str, Any]) -> ResultSubmission:
        """``POST /api/integration/activity-results/tasks``: fills ``activityResult`` once.

        The same result again is a no-op (``created`` False); a different one raises
        :class:`ResultConflict` and changes nothing. ``submittedAt`` is stamped here.
        """
        stamped = {**result, "submittedAt": iso(self.clock.now())}
        current = await self.store.set_result(activity_id, stamped)
        if current is not None:
            if {k: v for k, v in current.items() if k != "submittedAt"} != result:
                raise ResultConflict(f"activity {activity_id} already has a different result; results are"
                                     " accepted once per activity", current=current)
            return ResultSubmission(activity=(await self.store.activity(activity_id)).to_json(), created=False)
        self.log.info("activity.result", activity_id=activity_id)
        return ResultSubmission(activity=(await self.store.activity(activity_id)).to_json(), created=True)

    async def deliveries(self, *, activity_id: str | None = None, config_id: str | None = None,
                         status: Status | None = None, queue: str | None = None, after_id: int = 0,
                         limit: int | None = None) -> list[Delivery]:
        """Deliveries matching every given filter, in id order (``to_json()`` gives what the API shows);
        ``limit`` at a time after the delivery id ``after_id``."""
        return await self.store.deliveries(activity_id=activity_id, config_id=config_id, status=status, queue=queue,
                                           after_id=after_id, limit=limit)

    async def delivery(self, delivery_id: int) -> Delivery:
        """One delivery (NotFound when the id is unknown)."""
        return await self.store.delivery(delivery_id)

    async def attempts(self, delivery_id: int | None = None) -> list[Attempt]:
        """Attempts of one delivery (or of all deliveries), in id order."""
        return await self.store.attempts(delivery_id)

    async def force_retry(self, delivery_id: int) -> Delivery:
        """FAILED -> READY with a fresh attempt budget (the only way out of FAILED).

        The retried delivery moves to the configuration's current version, so fixing a mapping
        or an endpoint and then force-retrying sends the fixed request.
        """
        d = await self.store.delivery(delivery_id)
        cfg = await self.store.config(d.config_id)
        if cfg is None or cfg.deleted:  # nothing would ever send it: it would wait for ever
            raise ConfigDeleted(delivery_id)
        return await self._force_retry(d, cfg)

    async def _force_retry(self, d: Delivery, cfg: Configuration) -> Delivery:
        """:meth:`force_retry` of a delivery and its configuration, read already (and not deleted)."""
        # a manual retry uses the configuration as it is now (e.g. a fixed mapping or URL)
        version = cfg.version
        prep = await self._prepare(d.config_id, version)
        row = await self.store.force_retry(d.id, self.clock.now(), ordered=prep.snapshot.ordering.ordered,
                                           config_version=version)
        self.log.info("delivery.force_retry", delivery_id=d.id, queue=row.queue, status=Status.READY,
                      config_version=version)
        self.dispatcher.wake()
        return row

    async def force_retry_where(self, *, config_id: str | None = None, since: float | None = None,
                                until: float | None = None, reason: str | None = None) -> list[int]:
        """Force-retry every FAILED delivery matching the filter (creation time range, failed reason),
        in creation order, so ordered queues get them back in their original sequence. A deleted
        configuration's deliveries stay FAILED (nothing would send them). Each delivery is read once,
        and each configuration once for all its deliveries."""
        ids: list[int] = []
        configs: dict[str, Configuration | None] = {}
        for did in await self.store.failed_ids(config_id=config_id, since=since, until=until, reason=reason):
            d = await self.store.delivery(did)
            if d.config_id not in configs:
                configs[d.config_id] = await self.store.config(d.config_id)
            cfg = configs[d.config_id]
            if cfg is not None and not cfg.deleted:
                await self._force_retry(d, cfg)
                ids.append(did)
        self.log.info("recovery.force_retry", config_id=config_id, count=len(ids),
                      since=iso(since) if since is not None else None, reason=reason)
        return ids

    async def recover_since(self, config_id: str, since: float) -> list[int]:
        """Re-queue every FAILED delivery of ``config_id`` created since ``since``, in original order."""
        await self.config(config_id)
        return await self.force_retry_where(config_id=config_id, since=since)

    async def replay(self, delivery_id: int) -> Attempt:
        """Send a DISPATCHED delivery again (same ``webhook-id``); recorded as a replay attempt.

        History is never changed: the delivery keeps its status and counters.
        """
        d = await self.store.delivery(delivery_id)
        prep = await self._prepare(d.config_id, d.config_version)
        attempt_id = await self.store.start_replay(delivery_id, self.clock.now())
        from .sender import Request
        snap = prep.snapshot
        try:
            body = await request_body(self.store, prep, activity_id=d.activity_id, batch_id=d.batch_id)
        except PayloadUnmappable as exc:
            await self.store.finish_replay(attempt_id, AttemptResult(
                finished_at=self.clock.now(), outcome="MAPPING_ERROR", error=str(exc)))
            raise
        out = await self.sender.send(Request(
            url=snap.endpoint_url, body=body, webhook_id=d.webhook_id, timestamp=int(self.clock.now()),
            auth=snap.auth, signing_secret=snap.signing_secret, connect_timeout=snap.timeouts.connect,
            total_timeout=snap.timeouts.total))
        await self.store.finish_replay(attempt_id, AttemptResult(
            finished_at=self.clock.now(), outcome=out.kind.value, status_code=out.status,
            error=out.error, retry_after=out.retry_after, latency=out.latency, excerpt=out.excerpt))
        self.log.info("delivery.replayed", delivery_id=delivery_id, queue=d.queue, code=out.status,
                      outcome=out.kind.value, status=d.status.value)
        return [a for a in await self.store.attempts(delivery_id) if a.id == attempt_id][0]

    async def notifications(self, config_id: str | None = None, *,
                            tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Operator notifications (auto-disable, circuit changes), oldest first: of one configuration,
        or of a tenant's configurations, or all."""
        mine = {c.id for c in await self.store.configs(tenant_id, kind=None)} if tenant_id is not None else None
        return [n.to_json() for n in await self.store.notifications(config_id) if mine is None or n.config_id in mine]

    async def record_operator_action(self, action: str, *, who: str, why: str, target: str,
                                     config_id: str | None) -> dict[str, Any]:
        """Keep a person's manual action (force retry, skip, recover, re-enable, replay) in the record:
        an ``operator.<action>`` notification (who, when, why) beside the automatic ones, and one
        ``operator.action`` event in the log, so an audit reads both without asking the console."""
        why = " ".join(why.split())
        if not why:
            raise ConfigError("reason: say why (it is kept with the action)")
        now = self.clock.now()
        message = f"{action} {target} by {who}: {why}"
        nid = await self.store.add_notification(at=now, kind=f"operator.{action}", config_id=config_id, message=message)
        self.log.info("operator.action", action=action, who=who, why=why, target=target, config_id=config_id,
                      notification_id=nid)
        return {"id": nid, "at": iso(now), "kind": f"operator.{action}", "config_id": config_id, "message": message}

    async def health(self, config_id: str) -> dict[str, Any]:
        """Circuit state and failure streak of a configuration's endpoint."""
        await self.config(config_id)
        st = self.dispatcher._health.get(config_id)
        if st is None:
            return {"circuit": Circuit.CLOSED, "circuit_until": None, "consecutive_failures": 0, "failing_since": None}
        return {"circuit": st.circuit, "circuit_until": iso(st.circuit_until) if st.circuit_until else None,
                "consecutive_failures": st.consecutive_failures,
                "failing_since": iso(st.failing_since) if st.failing_since else None}

    async def skip(self, delivery_id: int) -> Delivery:
        """Unblock a queue held by a FAILED head (``on_exhausted: block``); the delivery stays FAILED."""
        row = await self.store.skip(delivery_id, self.clock.now())
        self.log.info("delivery.skipped", delivery_id=delivery_id, queue=row.queue, status=Status.FAILED)
        self.dispatcher.wake()
        return row

    async def counts(self) -> dict[str, int]:
        """Number of deliveries per status; every status is present, zero included."""
        return await self.store.counts()

    # -- running ------------------------------------------------------------------------

    async def run_until_idle(self, *, max_time: float | None = None) -> RunSummary:
        """Drain: dispatch (advancing through retry waits) until nothing is pending or in flight.

        ``max_time`` bounds the run in clock seconds (needed when an endpoint never recovers
        and the policy never gives up).
        """
        if self._task is not None:
            raise DispatchsimError("the engine is already running in the background; use stop() first")
        start = self.clock.now()
        deadline = None if max_time is None else start + max_time
        self.dispatcher.arm()
        await self.dispatcher.run(until_idle=True, deadline=deadline)
        idle = await self.dispatcher.idle()
        return RunSummary(started_at=start, finished_at=self.clock.now(), counts=await self.counts(), idle=idle)

    async def run_for(self, seconds: float) -> RunSummary:
        """Dispatch for ``seconds`` of clock time (attempts still in flight keep going)."""
        start = self.clock.now()
        self.dispatcher.arm()
        await self.dispatcher.run(until_idle=False, deadline=start + seconds)
        return RunSummary(start, self.clock.now(), await self.counts(), idle=await self.dispatcher.idle())

    @property
    def dispatching(self) -> bool:
        """Whether the background dispatcher of :meth:`start` is running (readiness)."""
        return self._task is not None and not self._task.done()

    def start(self, *, on_crash: Callable[[BaseException], object] | None = None) -> None:
        """Dispatch in the background until :meth:`stop` (serve mode).

        The dispatcher waits out an unavailable database by itself; should it end on any other error
        (a bug), that is logged (``dispatcher.crashed``) and ``on_crash`` is called with it, so that a
        service does not go on accepting work nobody sends. :meth:`stop` raises it again."""
        if self._task is None:
            self.dispatcher.arm()
            self._task = asyncio.create_task(self.dispatcher.run(), name="dispatcher")
            self._task.add_done_callback(lambda task: self._ended(task, on_crash))

    def _ended(self, task: asyncio.Task[None], on_crash: Callable[[BaseException], object] | None) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        self.log.error("dispatcher.crashed", error=f"{type(exc).__name__}: {exc}")
        if on_crash is not None:
            on_crash(exc)

    async def stop(self, *, deadline: float = 10.0) -> int:
        """Stop a started engine: attempts in flight get ``deadline`` seconds to finish.

        Returns how many were abandoned; their leases stay, so the next engine on the same file
        re-sends them (at-least-once, never lost).
        """
        abandoned = await self.dispatcher.stop(deadline=deadline)
        if self._task is not None:
            task, self._task = self._task, None  # raised once: a later stop (or close) finds it gone
            await task
        return abandoned


def _mapper(snap: Snapshot) -> Any:
    if snap.mapping is None:
        return None
    import dispatchsim.mapping as mapping

    compiled = mapping.compile_mapping(snap.mapping)

    def apply(payload: dict[str, Any]) -> Any:
        try:
            return compiled.apply(payload)
        except mapping.MappingApplyError as exc:
            raise PayloadUnmappable(str(exc)) from None

    return apply


def _queue(config_id: str, snap: Snapshot, payload: dict[str, Any]) -> str:
    if snap.ordering.mode != "partitioned":
        return config_id
    value: Any = payload
    for part in (snap.ordering.partition_key or "").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return f"{config_id}/{'' if value is None else value}"
