"""The store contract: every named operation the engine, serve mode and the status report use.

One abstract class per store (as saq's ``queue/base.py`` and procrastinate's connectors do): the
SQLite store implements it, and a second backend (PostgreSQL) implements the same list, so nothing
above the store asks which one it has. ``tests/test_store_contract.py`` runs every operation,
transition and guard against each backend; ``test_the_contract_lists_every_operation`` fails when a
store grows a public operation that is not listed here.

Every operation is a coroutine (``await store.claim(...)``, ``async with store.tx():``) because a
network database must not block the event loop while it answers: the dispatcher's attempts, the
API and the console share that loop. The SQLite backend is still synchronous underneath: its
``async def`` operations call ``sqlite3`` directly and never suspend (no threads, no executors),
so an awaited SQLite operation runs to its end in one step of the loop, the virtual clock
(looptime) sees no thread to wait for, and a transaction cannot interleave with another task's
statements. Only factories that do no I/O (``wal_checkpointer``, ``events_store``,
``idempotency_store``) are plain methods. Opening a store, and whatever only a file needs (its
checks, its owner lock), is the backend's business: see ``store_open``.

Times are seconds on the engine's clock. Guards are part of the contract: a status change happens
only from the statuses the transition table allows and only under the caller's lease; a refused
change returns False (dispatch cycle) or raises :class:`InvalidTransition` (manual actions), and a
missing object raises :class:`NotFound`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import InvalidTransition
from .jsontext import encode_body
from .states import Status

if TYPE_CHECKING:
    from .config import ConfigKind
    from .states import Circuit
    from .store import AttemptResult, Claim
    from .store_idempotency import StoredAnswer
    from .store_console import DeliveryCursor, DeliveryFilter, QueueRow
    from .store_queries import ActivityFilter, Metrics, WalCheckpointer
    from .store_rows import (Activity, ApiKey, Attempt, Configuration, ConsoleSession, Delivery, EndpointHealth,
                             EventBatch,                             Notification, Provider, StoredActivity, Streak, Tenant)


#: True in the dispatch loop and the tasks it starts (attempts, group commits: a task inherits it), set by
#: :meth:`~dispatchsim.engine.dispatcher.Dispatcher.run`. A store may serve their statements apart from the
#: API's: PostgreSQL gives them connections of their own, which plan each statement once (see ``PgStore``).
#: SQLite has nothing to set apart.
DISPATCH_LOOP: ContextVar[bool] = ContextVar("dispatchsim_dispatch_loop", default=False)


class Finish(NamedTuple):
    """One finished attempt of a group commit (:meth:`StoreContract.finish_attempts`): the claim,
    what the try produced, and where the retry policy sends the delivery. A named tuple for the reason
    :class:`~dispatchsim.engine.store.Claim` is one; build it by keyword (a named tuple also takes its
    fields in order, and ``next_at``, ``error``, ``reason``, ``ordered``, ``block`` are easy to swap)."""

    claim: Claim
    result: AttemptResult
    status: Status  #: DISPATCHED, RETRYING or FAILED
    next_at: float | None = None  #: RETRYING: when it is due again
    error: str = ""  #: RETRYING and FAILED: the delivery's last error
    reason: str = ""  #: FAILED: why (the policy's decision kind, ``mapping_error``…)
    ordered: bool = False  #: its configuration keeps each queue in order
    block: bool = False  #: FAILED: its ordered queue waits for a manual action


@dataclass(frozen=True, slots=True)
class NewActivity:
    """One activity of :meth:`StoreContract.insert_activities`: what :meth:`~StoreContract.insert_activity` takes."""

    activity_id: str
    tenant_id: str
    typ: str
    channel: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewDelivery:
    """One delivery of :meth:`StoreContract.insert_deliveries`: what :meth:`~StoreContract.insert_delivery` takes."""

    webhook_id: str
    config_id: str
    config_version: int
    queue: str
    ordered: bool
    activity_id: str | None = None
    batch_id: int | None = None


@dataclass(frozen=True, slots=True)
class CycleView:
    """What a dispatch cycle reads before it claims (:meth:`StoreContract.cycle_view`)."""

    #: some lease may have ended: :meth:`StoreContract.release_expired_leases` has work (True when not asked)
    leases_ended: bool
    #: :meth:`StoreContract.paused_configs`
    paused: list[str]
    #: :meth:`StoreContract.config` of each configuration asked for (None: no such configuration)
    configs: dict[str, Configuration | None]
    #: :meth:`StoreContract.health_rows`, when asked for
    health: list[EndpointHealth] | None


class StoreContract(ABC):
    """What a dispatchsim store backend provides."""

    # -- plumbing ---------------------------------------------------------------------------

    @abstractmethod
    async def schema_version(self) -> int:
        """The migration the database is at."""

    @abstractmethod
    def tx(self) -> AbstractAsyncContextManager[Any]:
        """One transaction around the operations awaited inside it (``async with store.tx():``; nested
        calls join the outer one). Only store operations are awaited inside: nothing else may run
        in the middle of a transaction."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""

    @abstractmethod
    async def ping(self) -> None:
        """A round trip to the database (health checks); raises when it cannot answer."""

    @abstractmethod
    async def latest_time(self) -> float | None:
        """The latest time at which the database recorded something happening (a creation, an update,
        an attempt, a notification), or None when it holds nothing: the virtual clock of a reopened
        database continues from there instead of starting again at the virtual epoch."""

    # -- tenants and providers --------------------------------------------------------------

    @abstractmethod
    async def add_tenant(self, tenant_id: str, name: str, now: float) -> bool:
        """Insert a tenant; False (and nothing changed) when the id is taken. One statement, so two
        workers registering the same tenant at once both succeed, one of them with False."""

    @abstractmethod
    async def add_provider(self, provider_id: str, name: str, now: float) -> bool:
        """Insert a provider; False (and nothing changed) when the id is taken (see :meth:`add_tenant`)."""

    @abstractmethod
    async def tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""

    @abstractmethod
    async def provider(self, provider_id: str) -> Provider | None:
        """The provider with this id, or None."""

    @abstractmethod
    async def tenants(self) -> list[Tenant]:
        """All tenants by id."""

    @abstractmethod
    async def providers(self) -> list[Provider]:
        """All providers by id."""

    # -- configurations -----------------------------------------------------------------------

    @abstractmethod
    async def insert_config(self, config_id: str, tenant_id: str, provider_id: str | None, channel: str | None,
                      snapshot: dict[str, Any], now: float, *, kind: ConfigKind = ...) -> None:
        """A new, inactive configuration at version 1 with its first snapshot."""

    @abstractmethod
    async def new_config_version(self, config_id: str, snapshot: dict[str, Any], now: float) -> int:
        """The next version with its snapshot; earlier versions stay as they were. NotFound when deleted."""

    @abstractmethod
    async def set_config_active(self, config_id: str, active: bool, now: float, reason: str | None = None) -> None:
        """Activate, or pause with a reason (pending deliveries wait). NotFound when deleted."""

    @abstractmethod
    async def delete_config(self, config_id: str, now: float) -> None:
        """Mark deleted (and inactive); its id is never reused. NotFound when already deleted.

        Until the transaction ends, no fan-out (:meth:`active_configs`) creates deliveries for it, and
        those that read it before have committed theirs: a check for pending deliveries made after this
        call, in the same transaction, sees every one (the caller refuses the delete, rolling it back)."""

    @abstractmethod
    async def config(self, config_id: str) -> Configuration | None:
        """The configuration, deleted ones included."""

    async def configs_by_id(self, config_ids: Sequence[str]) -> dict[str, Configuration | None]:
        """:meth:`config` of each id (None: no such configuration), in the order asked. Here one call
        after the other; a network backend sends them together and waits once."""
        return {cid: await self.config(cid) for cid in config_ids}

    @abstractmethod
    async def configs(self, tenant_id: str | None = None, *, kind: ConfigKind | None = ...) -> list[Configuration]:
        """Configurations not deleted, oldest first, of one tenant and kind (``kind=None``: every kind)."""

    @abstractmethod
    async def snapshot(self, config_id: str, version: int) -> dict[str, Any]:
        """The immutable settings of one configuration version. NotFound when there is no such version."""

    @abstractmethod
    async def active_configs(self, tenant_id: str, channel: str) -> list[tuple[str, int]]:
        """(id, version) of the active configurations a new activity fans out to, oldest first; called
        in the fan-out's transaction, which no :meth:`delete_config` of them overtakes."""

    @abstractmethod
    async def paused_configs(self) -> list[str]:
        """Inactive or deleted configurations: their pending deliveries are not sent."""

    @abstractmethod
    async def inactive_configs(self) -> list[tuple[str, str | None, float | None]]:
        """(id, reason, since) of paused configurations that are not deleted."""

    # -- activities ---------------------------------------------------------------------------

    @abstractmethod
    async def insert_activity(self, activity_id: str, tenant_id: str, typ: str, channel: str,
                        payload: dict[str, Any], now: float) -> None:
        """Insert an activity (its deliveries are created separately, in the same transaction)."""

    async def insert_activities(self, activities: Sequence[NewActivity], now: float) -> None:
        """Insert several activities, in order, as :meth:`insert_activity` one after the other would
        (a burst: a backend may insert them with fewer statements)."""
        for a in activities:
            await self.insert_activity(a.activity_id, a.tenant_id, a.typ, a.channel, a.payload, now)

    @abstractmethod
    async def activity(self, activity_id: str) -> Activity:
        """The activity (NotFound when missing); ``can_force_retry`` is true while a delivery of it is FAILED."""

    @abstractmethod
    async def stored_activities(self, activity_ids: Sequence[str]) -> dict[str, StoredActivity]:
        """What deliveries of these activities send, as stored (text, not decoded), in one read: the
        attempts of one claim build their bodies from it (:meth:`StoredActivity.body` is exactly
        :meth:`activity_body`). Unknown ids are left out."""

    async def activity_body(self, activity_id: str) -> bytes:
        """The encoded default payload a delivery of the activity sends (no mapping): exactly
        ``encode_body(activity.to_json())``. A backend may build it more cheaply from what it stores."""
        return encode_body((await self.activity(activity_id)).to_json())

    @abstractmethod
    async def set_result(self, activity_id: str, result: Any) -> Any | None:
        """Store the result unless one is there: None when stored, else the stored one (unchanged)."""

    @abstractmethod
    async def next_activity_seq(self) -> int:
        """The sequence number the next activity gets (deterministic ids derive from it)."""

    @abstractmethod
    async def activity_ids(self) -> list[str]:
        """Every activity id in creation order."""

    @abstractmethod
    async def activity_page(self, f: ActivityFilter, *, after_seq: int = 0, limit: int = 100) -> list[tuple[int, str]]:
        """(seq, id) of up to ``limit`` activities matching ``f`` after ``after_seq``, oldest first."""

    @abstractmethod
    async def activity_tenant(self, activity_id: str) -> str:
        """The tenant of an activity (NotFound when missing)."""

    # -- deliveries and attempts --------------------------------------------------------------

    @abstractmethod
    async def insert_delivery(self, *, webhook_id: str, config_id: str, config_version: int, queue: str, ordered: bool,
                        now: float, activity_id: str | None = None, batch_id: int | None = None) -> int:
        """A READY delivery at the tail of its queue; in an ordered queue it is claimable only as the head."""

    async def insert_deliveries(self, deliveries: Sequence[NewDelivery], now: float) -> list[int]:
        """Insert several deliveries, in order, as :meth:`insert_delivery` one after the other would
        (the same ids, heads and tails); returns their ids in that order."""
        return [await self.insert_delivery(webhook_id=d.webhook_id, config_id=d.config_id,
                                           config_version=d.config_version, queue=d.queue, ordered=d.ordered,
                                           now=now, activity_id=d.activity_id, batch_id=d.batch_id)
                for d in deliveries]

    @abstractmethod
    async def delivery(self, delivery_id: int) -> Delivery:
        """The delivery (NotFound when missing)."""

    @abstractmethod
    async def deliveries(self, *, activity_id: str | None = None, config_id: str | None = None,
                   status: Status | str | None = None, queue: str | None = None,
                   after_id: int = 0, limit: int | None = None) -> list[Delivery]:
        """Deliveries matching every given filter, in creation order."""

    @abstractmethod
    async def delivery_tenant(self, delivery_id: int) -> str:
        """The tenant of an activity's delivery (NotFound when missing)."""

    @abstractmethod
    async def delivery_by_public_id(self, public_id: str) -> tuple[int, str, str] | None:
        """(id, webhook-id, tenant) of the activity delivery with that webhook-id."""

    @abstractmethod
    async def public_delivery_ids(self, delivery_ids: list[int]) -> dict[int, str]:
        """Delivery id -> webhook-id."""

    @abstractmethod
    async def attempts(self, delivery_id: int | None = None) -> list[Attempt]:
        """Attempts in order: of one delivery, or all."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Deliveries per status, every status present (0 when none)."""

    @abstractmethod
    async def failed_ids(self, *, config_id: str | None = None, since: float | None = None, until: float | None = None,
                   reason: str | None = None) -> list[int]:
        """FAILED deliveries matching the filter (creation time range, failed reason), in creation order."""

    # -- the dispatch cycle -------------------------------------------------------------------

    async def cycle_view(self, now: float, config_ids: Sequence[str], *, health: bool) -> CycleView:
        """The reads that open a dispatch cycle, none of which depends on another: whether a lease ended
        by ``now``, the paused configurations, the configurations ``config_ids`` (their limits) and, with
        ``health``, the endpoint health. Here one call after the other, as the operations named in
        :class:`CycleView` answer them (``leases_ended`` is True: the release checks for itself); a
        network backend sends them together and waits once."""
        paused = await self.paused_configs()
        configs = {cid: await self.config(cid) for cid in config_ids}
        return CycleView(leases_ended=True, paused=paused, configs=configs,
                         health=await self.health_rows() if health else None)

    @abstractmethod
    async def due_candidates(self, now: float, limit: int, *, exclude_configs: Sequence[str] = (),
                             skip_paused: bool = False) -> list[tuple[int, str, int]]:
        """(id, config id, config version) of claimable deliveries due by ``now``: queue heads and
        unordered deliveries, not leased, earliest first. ``skip_paused``: not those of paused (or
        deleted) configurations, read in the same statement rather than with :meth:`paused_configs`
        first (one round trip fewer for a group commit's claims)."""

    @abstractmethod
    async def queue_head(self, queue: str, now: float) -> tuple[int, str, int] | None:
        """(id, config id, config version) of the claimable delivery of ``queue`` due by ``now`` (for an
        ordered queue, its head), earliest first; None while an attempt of it is in flight, its head's
        retry is not due yet, or nothing waits."""

    async def queue_heads(self, queues: Sequence[str], now: float) -> dict[str, tuple[int, str, int] | None]:
        """:meth:`queue_head` of each queue, in the order asked. Here one call after the other; a network
        backend sends them together and waits once."""
        return {queue: await self.queue_head(queue, now) for queue in queues}

    @abstractmethod
    async def claim(self, leases: Sequence[tuple[int, float]], *, token: str, now: float,
                    limit: int | None = None) -> list[Claim]:
        """Lease each (delivery id, lease end) that is still claimable and open its attempt; others are
        skipped. ``limit``: lease at most that many, the first ones (in the order given) still claimable:
        the later leases stand in for earlier ones another claim took meanwhile."""

    @abstractmethod
    async def mark_dispatched(self, claim: Claim, res: AttemptResult, *, ordered: bool) -> bool:
        """2xx: DISPATCHED, and an ordered queue's next delivery becomes its head. False when the lease is lost."""

    @abstractmethod
    async def schedule_retry(self, claim: Claim, res: AttemptResult, next_at: float, error: str, *,
                             ordered: bool = False) -> bool:
        """A failed try with budget left: RETRYING until ``next_at``. False when the lease is lost.

        ``ordered``: it stays the head of its queue, unless an earlier delivery was force-retried back
        into the queue while this attempt was in flight (the promotion waited for it): that one is
        the head now, as it would have been had nothing been in flight."""

    @abstractmethod
    async def mark_failed(self, claim: Claim, res: AttemptResult, reason: str, error: str, *,
                    ordered: bool, block: bool) -> bool:
        """No budget left or unfixable: FAILED; with ``block`` its ordered queue waits. False when the lease is lost."""

    async def finish_attempts(self, finishes: Sequence[Finish]) -> list[bool | InvalidTransition]:
        """The group commit of finished attempts, in the caller's transaction: each is recorded and
        its delivery moved exactly as :meth:`mark_dispatched`, :meth:`schedule_retry` or
        :meth:`mark_failed` would, in order. Per attempt: True; False when the lease was lost
        (nothing written); or the :class:`InvalidTransition` the table raised (the attempt is
        recorded, status and lease stay). A backend may do it in fewer round trips."""
        done: list[bool | InvalidTransition] = []
        for f in finishes:
            try:
                done.append(await self._finish_one(f))
            except InvalidTransition as exc:
                done.append(exc)
        return done

    async def _finish_one(self, f: Finish) -> bool:
        if f.status is Status.DISPATCHED:
            return await self.mark_dispatched(f.claim, f.result, ordered=f.ordered)
        if f.status is Status.RETRYING:
            assert f.next_at is not None
            return await self.schedule_retry(f.claim, f.result, f.next_at, f.error, ordered=f.ordered)
        return await self.mark_failed(f.claim, f.result, f.reason, f.error, ordered=f.ordered, block=f.block)

    @abstractmethod
    async def force_retry(self, delivery_id: int, now: float, *, ordered: bool,
                    config_version: int | None = None) -> Delivery:
        """FAILED -> READY with a fresh budget, back at its place in its queue; InvalidTransition otherwise,
        and ConfigDeleted when its configuration is deleted: checked in the same transaction, which no
        :meth:`delete_config` overtakes (a delete waits for it, then sees a delivery waiting to be sent)."""

    @abstractmethod
    async def skip(self, delivery_id: int, now: float) -> Delivery:
        """A blocked queue moves past its FAILED head (which stays FAILED); InvalidTransition otherwise."""

    @abstractmethod
    async def start_replay(self, delivery_id: int, now: float) -> int:
        """Open a replay attempt of a DISPATCHED delivery (its status does not change); InvalidTransition otherwise."""

    @abstractmethod
    async def finish_replay(self, attempt_id: int, res: AttemptResult) -> None:
        """Record the outcome of a replay attempt opened by :meth:`start_replay`."""

    @abstractmethod
    async def release_expired_leases(self, now: float) -> list[int]:
        """Leases that ended: their attempts become INTERRUPTED and the deliveries are due ``now``."""

    @abstractmethod
    async def release_leases(self, now: float, *, ending_by: float, error: str, owner: str | None = None) -> list[int]:
        """Leases ending by ``ending_by`` (of one ``owner``, the prefix of its tokens, when given) released."""

    @abstractmethod
    async def release_own_leases(self, now: float, owner: str) -> list[int]:
        """After a graceful stop: this engine's leases released at once, nobody else's."""

    @abstractmethod
    async def release_dead_owners_leases(self, now: float) -> list[int]:
        """At start, as the database's only owner: every lease left belongs to a dead process."""

    @abstractmethod
    async def register_owner(self, owner: str) -> None:
        """Mark this lease owner (a dispatcher's lease-token prefix) alive while this store stays open, so
        the other workers of a shared database can tell when it stops (:meth:`dead_owners`). Nothing to do
        on SQLite: a file has one owner, which releases a dead predecessor's leases when it starts."""

    @abstractmethod
    async def dead_owners(self) -> list[str]:
        """Owners of leases held now whose mark is gone: their process died or their store was closed
        without releasing them. Always empty on SQLite."""

    @abstractmethod
    async def next_wakeup(self, exclude_configs: Sequence[str] = ()) -> float | None:
        """The earliest due time of a claimable delivery or lease end (None: nothing will happen)."""

    @abstractmethod
    async def in_flight(self) -> int:
        """Deliveries holding a lease."""

    # -- endpoint health and notifications ----------------------------------------------------

    @abstractmethod
    async def health_rows(self) -> list[EndpointHealth]:
        """The persisted endpoint health of every configuration that has one."""

    @abstractmethod
    async def save_circuit(self, config_id: str, *, circuit: Circuit, circuit_until: float | None, now: float) -> None:
        """Store the circuit state of the configuration's endpoint (insert or update); its failure streak
        is not touched (see :meth:`count_outcome`)."""

    @abstractmethod
    async def count_outcome(self, config_id: str, *, ok: bool, now: float) -> Streak:
        """Add one finished attempt to the endpoint's failure streak in one atomic statement, so the
        failures of several workers add up: a success ends the streak, a failure adds one (and starts
        ``failing_since`` at ``now`` if unset). Returns the streak as stored afterwards."""

    @abstractmethod
    async def take_probe(self, config_id: str, *, now: float, until: float) -> bool:
        """Half-open: take the endpoint's one probe until ``until`` (the probe attempt's lease end), in
        one conditional statement. Only a circuit open past its cool-down, or half-open with no probe
        taken or with an expired one, can be taken; it is then stored half-open until ``until``. True
        for the one caller that took it: across all workers, one probe at a time."""

    @abstractmethod
    async def move_circuit(self, config_id: str, *, source: Circuit, circuit: Circuit, circuit_until: float | None,
                           now: float) -> EndpointHealth | None:
        """Move the endpoint's circuit from ``source`` to ``circuit`` (until ``circuit_until``) in one
        conditional statement, only if ``source`` is what is stored (no row counts as closed). None
        when this call moved it: of workers making one change at once (a trip, a probe's end), one
        does, and records it once for the cluster; the others get the health as stored, to adopt
        without recording the change again."""

    @abstractmethod
    async def pause_if_active(self, config_id: str, now: float, reason: str) -> bool:
        """Pause the configuration with a reason if it is active (one conditional statement). True for
        the one caller that paused it: an auto-disable that several workers reach at once happens,
        and is notified, once."""

    @abstractmethod
    async def recent_outcomes(self, config_id: str, since: float, *,
                              exclude_attempt: int = 0) -> list[tuple[float, bool]]:
        """(finished at, success) of the configuration's finished, counted attempts since ``since``."""

    @abstractmethod
    async def add_notification(self, *, at: float, kind: str, config_id: str | None, message: str) -> int:
        """Record an operator notification (e.g. a configuration was auto-disabled); returns its id."""

    @abstractmethod
    async def set_notification_delivery(self, notification_id: int, delivery: str) -> None:
        """How the operator webhook of a notification went."""

    @abstractmethod
    async def notifications(self, config_id: str | None = None) -> list[Notification]:
        """Notifications in order: of one configuration, or all."""

    @abstractmethod
    async def latest_notifications(self, limit: int) -> list[Notification]:
        """The ``limit`` newest notifications, oldest of them first."""

    # -- reports, metrics, keys, housekeeping -------------------------------------------------

    @abstractmethod
    async def metrics(self) -> Metrics:
        """The aggregates behind ``/metrics``: deliveries per status, attempts per outcome, queue depths, latencies (seconds)."""

    @abstractmethod
    async def attempt_count(self, outcome: str | None = None) -> int:
        """Attempts recorded (with that outcome, when given)."""

    @abstractmethod
    async def queue_status_counts(self) -> list[tuple[str, str, int]]:
        """(queue, status, deliveries) for every queue and status present."""

    @abstractmethod
    async def oldest_pending(self) -> tuple[int, str, float] | None:
        """(id, queue, created at) of the oldest READY or RETRYING delivery."""

    @abstractmethod
    async def blocked_heads(self) -> list[tuple[int, str]]:
        """(id, queue) of FAILED deliveries that keep their queue waiting."""

    @abstractmethod
    async def recent_failures(self, limit: int = 5) -> list[tuple[int, str, str | None, str | None]]:
        """(id, queue, reason, last error) of the latest FAILED deliveries, newest first."""

    @abstractmethod
    async def add_api_key(self, key_id: str, digest: str, *, tenant_id: str | None, name: str | None,
                          now: float) -> None:
        """Store a key's hash (never the key)."""

    @abstractmethod
    async def api_keys(self) -> list[ApiKey]:
        """Every key's id, owner, label and dates (never a hash), oldest first."""

    @abstractmethod
    async def api_key_by_hash(self, digest: str) -> tuple[str, str | None] | None:
        """(key id, tenant or None for admin) of the unrevoked key with that hash."""

    @abstractmethod
    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        """Revoke an unrevoked key (False: no such key, or revoked already)."""

    @abstractmethod
    async def replace_api_key(self, old_id: str, new_id: str, digest: str, now: float) -> bool:
        """Rotation in one transaction: a new key (hash ``digest``) with the old one's owner and
        label, and the old one revoked (False, nothing changed: no such unrevoked key)."""

    # -- console sessions ------------------------------------------------------------------

    @abstractmethod
    async def open_console_session(self, token_digest: str, session: ConsoleSession, now: float) -> None:
        """Keep a console session under the SHA-256 of its cookie token (never the token itself), so
        every worker on the database knows it."""

    @abstractmethod
    async def console_session(self, token_digest: str, now: float) -> ConsoleSession | None:
        """The session whose token has this digest, unless it ended by ``now`` (or was closed)."""

    @abstractmethod
    async def close_console_session(self, token_digest: str) -> None:
        """End a session (signing out, a revoked key) on every worker at once; nothing if none."""

    @abstractmethod
    async def expire_console_sessions(self, now: float) -> int:
        """Delete the sessions that ended by ``now`` (a recurring job); returns how many."""

    @abstractmethod
    async def delete_old_attempts(self, before: float) -> int:
        """Retention: finished attempts of finished deliveries, except each delivery's last one."""

    @abstractmethod
    def wal_checkpointer(self) -> WalCheckpointer:
        """Serve mode's checkpoint job (``enabled`` False where the backend needs none). A factory: no I/O."""

    @abstractmethod
    def events_store(self) -> EventsStoreContract:
        """The message-event operations on this store's database (sharing its transactions). A factory: no I/O."""

    @abstractmethod
    def idempotency_store(self) -> IdempotencyStoreContract:
        """The Idempotency-Key operations on this store's database (sharing its transactions). A factory: no I/O."""

    @abstractmethod
    async def batch_events(self, batch_id: int) -> list[dict[str, Any]]:
        """The message events a batch delivery sends, in arrival order."""

    # -- the web console's read models (store_console) --------------------------------------

    @abstractmethod
    async def console_deliveries(self, f: DeliveryFilter, *, cursor: DeliveryCursor | None = None,
                           limit: int = 50) -> tuple[list[Delivery], DeliveryCursor | None]:
        """A page of deliveries, FAILED first, then RETRYING, READY, DISPATCHED, newest created first
        in each; and the next page's cursor (None at the end). Answers from an index, whatever the size."""

    @abstractmethod
    async def ordered_queues(self, config_ids: Sequence[str]) -> list[QueueRow]:
        """Every ordered queue of these configurations that holds something, with its head."""

    @abstractmethod
    async def bench_fill_deliveries(self, *, tenant_id: str, config_id: str, config_version: int, count: int,
                                    failed_every: int, now: float, pending: bool = False) -> None:
        """Benchmark only: ``count`` finished deliveries (and activities) written in bulk; with
        ``pending``, READY unordered ones instead, due from ``now`` on (claim benchmarks)."""


class EventsStoreContract(ABC):
    """Message events and their batches (a batch is sent as a delivery of the account's webhook)."""

    @abstractmethod
    async def insert_events(self, account_id: str, events: list[dict[str, Any]], now: float) -> list[int]:
        """Store an account's message events (one row each); returns their ids in order."""

    @abstractmethod
    async def has_webhooks(self) -> bool:
        """Whether any message-event webhook was ever configured (none: no batch can ever form)."""

    @abstractmethod
    async def webhooks_free(self) -> list[Configuration]:
        """Active message-event webhooks with events waiting and no batch holding their queue."""

    @abstractmethod
    async def pending(self, account_id: str, limit: int) -> tuple[int, float | None]:
        """Unbatched events (counted up to ``limit``) and when the oldest arrived."""

    @abstractmethod
    async def form_batch(self, *, account_id: str, config_id: str, config_version: int, size: int, now: float,
                         id_key: str) -> tuple[int, int, int] | None:
        """The oldest ``size`` unbatched events as a batch with its READY delivery: (batch, delivery, events).
        The delivery's webhook-id is :func:`~dispatchsim.engine.events_store.batch_webhook_id` of
        ``id_key`` and the batch's number. None when no event waits, or when the webhook is no longer
        active (paused or deleted since :meth:`webhooks_free` read it): checked in this transaction,
        which no :meth:`StoreContract.delete_config` overtakes."""

    @abstractmethod
    async def batches(self, account_id: str, *, after_id: int = 0, limit: int = 50) -> list[EventBatch]:
        """An account's batches in order, ``limit`` at a time after ``after_id``, with the state of the delivery that sends each."""

    @abstractmethod
    async def batch(self, batch_id: int) -> EventBatch:
        """The batch (NotFound when missing)."""

    @abstractmethod
    async def counts(self, account_id: str | None = None) -> dict[str, int]:
        """Batches per status and ``unbatched_events``."""



class IdempotencyStoreContract(ABC):
    """Idempotency keys of serve mode: the first answer to a request sent with an ``Idempotency-Key``."""

    @abstractmethod
    async def reserve(self, scope: str, key: str, fingerprint: str, now: float, *, expired_before: float,
                      abandoned_before: float) -> StoredAnswer | None:
        """Reserve ``key`` for a request (None: go ahead), or what the key already holds; a key older
        than ``expired_before``, or reserved before ``abandoned_before`` and never answered, is free."""

    @abstractmethod
    async def complete(self, scope: str, key: str, *, status: int, body: str, location: str | None) -> None:
        """Keep the answer of the request that reserved ``key``."""

    @abstractmethod
    async def release(self, scope: str, key: str, *, reserved_at: float | None = None) -> None:
        """Free an unanswered reservation (its request created nothing), so the client may try again;
        with ``reserved_at``, only the reservation made at that time: once abandoned, the key may have
        been reserved again by another request, whose reservation this must not free."""

    @abstractmethod
    async def delete_expired(self, before: float) -> int:
        """Forget keys created before ``before``; returns how many."""

    @abstractmethod
    async def count(self) -> int:
        """Keys held (answered or in progress), expired ones included until they are forgotten."""
