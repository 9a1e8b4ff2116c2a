"""The PostgreSQL store: the same named operations as the SQLite one, for many workers on one database.

Every operation of :class:`~dispatchsim.engine.store_contract.StoreContract` with the same guards,
on psycopg 3 with an async connection pool, so many ``dispatchsim serve`` processes (on one machine
or many) share the work. What changes with many writers:

- Claims lock the rows they lease with ``FOR UPDATE SKIP LOCKED``: two workers never lease one
  delivery, and neither waits for the other. The lease token starts with the worker's identity.
- An ordered queue's head is kept by the same ``holds``/``eligible`` columns as in SQLite; every
  operation that may move a head (a new delivery of an ordered queue, a finish that promotes the
  next one, force retry, skip) first takes a transaction-scoped advisory lock on the queue, so two
  workers never both decide who is next. A claim never waits for that lock: it locks the head row
  itself, and a promotion locks the current head rows (``FOR UPDATE``) before it decides, so a
  head that is being leased is seen as in flight. Exactly one attempt per ordered queue is in
  flight across all workers.
- A lost connection, a deadlock or a serialization failure is a :class:`StorageUnavailable`: the
  transaction rolled back, nothing is half-written, and the caller tries again (the dispatcher
  keeps finished results in memory meanwhile, as it does when a SQLite disk is full).

Nested operations join the transaction of :meth:`PgStore.tx` through a context variable, so
concurrent tasks (API requests, the dispatch loop) each have their own transaction and connection.
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from .config import ConfigKind
from .jsontext import dumps as _dumps
from .errors import ConfigDeleted, InvalidTransition, NotFound, StorageUnavailable, StoreError
from .states import ACTIVE, Circuit, Status, sources_of
from .store import AttemptResult, Claim, _split_sql, latest_schema_version, migrations, status_in
from .store_contract import DISPATCH_LOOP, CycleView, Finish, StoreContract
from .store_open import display_url, scrub_url_secrets
from .store_pg_queries import FAILED_ONLY as _FAILED_ONLY, PgQueryOps
from .store_sql import attempts_query, deliveries_query, first_leases, latest_time_query
from .store_rows import (Activity, Attempt, Configuration, Delivery, EndpointHealth, Notification, Provider,
                         StoredActivity, Streak, Tenant, columns)

if TYPE_CHECKING:
    from .events_store_pg import PgEventsStore
    from .store_idempotency_pg import PgIdempotencyStore

#: advisory lock namespaces (the first key of the two-key form): queue heads, migrations, cluster jobs
QUEUE_LOCK = 0x44530001
MIGRATION_LOCK = 0x44530002
JOB_LOCK = 0x44530003
#: held (shared) by every open store for each lease owner registered on it: see ``register_owner``
OWNER_LOCK = 0x44530004
#: the channel a worker LISTENs on: something became claimable now (see ``store_pg_cluster``)
WORK_CHANNEL = "dispatchsim_work"

_ACTIVE_SQL = status_in(ACTIVE)
#: what the due read, a queue's head and the claim all ask of a delivery they may lease (followed by
#: each one's due-time condition): one text, so a claim re-checks exactly what the read chose by
_CLAIMABLE = f"eligible AND lease_until IS NULL AND status IN {_ACTIVE_SQL}"
#: the transaction (and its connection) the current task runs in, with the store it belongs to
_CURRENT: ContextVar[_Tx | None] = ContextVar("dispatchsim_pg_tx", default=None)
#: a session inside a transaction block (a failed one included): what a transaction that ends must roll back
_IN_TRANSACTION = (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR)




class _Tx:
    """The transaction the current task runs in (:meth:`PgStore.tx`): its store, its connection, and its
    pipelined start while that lasts. Mutable, one per transaction, never shared between tasks.

    The start saves the round trip of BEGIN: BEGIN is sent in pipeline mode and not waited for; the
    statements that follow go after it until one needs an answer (a fetch, a row count), and then the
    pipeline ends: its Sync (which ends no transaction begun by BEGIN) brings every answer in one wait,
    and the transaction goes on outside pipeline mode, where a statement costs one message each way (in
    pipeline mode psycopg writes each statement, and each request for answers, on its own)."""

    __slots__ = ("store", "conn", "_start")

    def __init__(self, store: PgStore, conn: psycopg.AsyncConnection[Any]) -> None:
        self.store = store
        self.conn = conn
        self._start: AsyncExitStack | None = None

    @property
    def pipelined(self) -> bool:
        """Still in its pipelined start: statements sent now wait with BEGIN (see :meth:`answered`)."""
        return self._start is not None

    async def begin(self) -> None:
        self._start = AsyncExitStack()
        await self._start.enter_async_context(self.conn.pipeline())
        await self.conn.execute("BEGIN", prepare=False)

    async def answered(self, exc: BaseException | None = None) -> None:
        """End the pipelined start if it lasts (one wait for every answer), raising the first error of its
        statements; with ``exc`` (the transaction failed already) only ending it, whatever it answers."""
        start, self._start = self._start, None
        if start is None:
            return
        if exc is None:
            await start.aclose()
        else:
            await start.__aexit__(type(exc), exc, exc.__traceback__)


def _any_config_left(*, excluded: bool, active: bool) -> str:
    """The condition of a due read that leaves configurations out: some configuration is left in (not
    ``excluded``: one parameter, the ids left out; ``active``: an active one). Every delivery belongs to
    a configuration, so it changes no answer; it reads no delivery, so PostgreSQL checks it once, before
    the scan, and skips the scan when it is false. Without it, a read that leaves out the only
    configuration with due work (its attempts at its limit, or paused) walks the due index through all
    of that configuration's pending deliveries and finds none: every dispatch cycle and group commit,
    at a cost that grows with the backlog."""
    conds = ["NOT (id = ANY(%s))"] if excluded else []
    conds += ["active"] if active else []
    return f" AND EXISTS (SELECT 1 FROM configurations WHERE {' AND '.join(conds)})"


def _sources_sql(dst: Status) -> str:
    return status_in(sources_of(dst))


def _unavailable(exc: psycopg.Error) -> StorageUnavailable:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return StorageUnavailable(f"storage unavailable: {first[:200]}; nothing was stored, retry later")


async def _keep_prepared(conn: psycopg.AsyncConnection[Any]) -> None:
    """Keep every statement prepared on the connection: psycopg forgets the least recently used one
    past 100 (and a statement is one per parameter types: an id list of small numbers is a smallint
    array, of larger ones an integer array), and a statement prepared again is planned again."""
    conn.prepared_max = _PREPARED_MAX


#: prepared statements kept per connection (psycopg's default is 100)
_PREPARED_MAX = 1000
#: the dispatch loop's connections (see ``PgStore.open``): each statement planned once, at its first use
_DISPATCH_OPTIONS = "-c plan_cache_mode=force_generic_plan"


class PgStore(PgQueryOps, StoreContract):
    """A dispatchsim database on PostgreSQL. Open it with :meth:`open` (it migrates, unless
    ``readonly``); ``close`` it when done. ``pool_size`` bounds the connections of this process."""

    def __init__(self, pool: AsyncConnectionPool, url: str, *, readonly: bool, attempt_sequence: str,
                 dispatch_pool: AsyncConnectionPool | None = None) -> None:
        self.pool = pool
        #: the dispatch loop's connections (:data:`~.store_contract.DISPATCH_LOOP`; see :meth:`open`)
        self._dispatch_pool = dispatch_pool or pool
        #: the claim, with the attempts' id sequence named in it (see :func:`_claim_sql`)
        self._claim_sql = _claim_sql(attempt_sequence)
        self.url = url
        self.path = display_url(url)
        self.readonly = readonly
        self._snapshots: dict[tuple[str, int], dict[str, Any]] = {}
        #: the connection holding this process's owner locks (outside the pool: a session lock lives
        #: as long as its session, and dies with it when the process does)
        self._owners: psycopg.AsyncConnection[Any] | None = None
        #: every owner registered on this store, and those whose lock the current ``_owners`` session holds
        self._owner_names: set[str] = set()
        self._owners_locked: set[str] = set()

    # -- plumbing -----------------------------------------------------------------------

    @classmethod
    async def open(cls, url: str, *, readonly: bool = False, pool_size: int = 10,
                   connect_timeout: float = 10.0) -> PgStore:
        """Connect, check the schema (refusing another application's database and a newer schema,
        naming both versions) and migrate it unless ``readonly``. A database that cannot be reached
        is one :class:`StoreError` naming it (without its password)."""
        shown = display_url(url)
        if not psycopg.capabilities.has_pipeline():  # transactions and the dispatch cycle's reads use it
            raise StoreError(f"{shown}: the PostgreSQL client library (libpq {psycopg.pq.version()}) has no"
                             " pipeline mode (libpq 14 or later): install psycopg[binary], which ships its own")
        async with _clock_held():
            try:
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                             connect_timeout=int(connect_timeout))
            except psycopg.Error as exc:
                # a driver's message may quote the URL's password (e.g. a badly percent-encoded one)
                raise StoreError(f"{shown}: cannot connect to PostgreSQL: {scrub_url_secrets(_first_line(exc), url)}"
                                 ) from None
            try:
                await _migrate(conn, shown, readonly=readonly)
                sequence = await _attempt_sequence(conn)
            except psycopg.errors.InsufficientPrivilege as exc:  # e.g. a database owned by postgres, on 15+
                raise StoreError(f"{shown}: {scrub_url_secrets(_first_line(exc), url)}: the role may not create or"
                                 " change dispatchsim's tables in this database; make it the database's owner, or"
                                 " GRANT USAGE, CREATE ON SCHEMA public TO it (docs/postgres.md: Creating the role"
                                 " and the database)") from None
            except psycopg.Error as exc:
                raise StoreError(f"{shown}: {scrub_url_secrets(_first_line(exc), url)}") from None
            finally:
                await conn.close()
            # prepared at the first use (psycopg's default waits for five): the dispatch cycle's few
            # statements, planned once per connection instead of at every one of its first uses
            kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0}
            if readonly:
                kwargs["options"] = "-c default_transaction_read_only=on"
            pool = AsyncConnectionPool(url, min_size=1, max_size=max(1, pool_size), kwargs=kwargs, open=False,
                                       timeout=connect_timeout, name="dispatchsim", configure=_keep_prepared)
            # The dispatch loop's statements run on connections of their own, opened at its first use, where
            # PostgreSQL plans each prepared statement once (a generic plan) instead of planning it anew for
            # its first five executions on every connection: each of those statements settles on its generic
            # plan by the sixth anyway (they are written for one: primary-key and index look-ups whose shape
            # does not depend on the values), and the five custom plans per statement and connection were
            # about a tenth of the database's CPU per delivery in a 6,000-delivery run of two workers. The
            # API's and the jobs' statements, some of which need plans for their values (see
            # ``activity_page_query``), keep the default on the other pool.
            dispatch = None if readonly else AsyncConnectionPool(
                url, min_size=0, max_size=max(1, pool_size), kwargs={**kwargs, "options": _DISPATCH_OPTIONS},
                open=False, timeout=connect_timeout, name="dispatchsim-dispatch", configure=_keep_prepared)
            await pool.open(wait=True, timeout=connect_timeout)
            if dispatch is not None:
                await dispatch.open(wait=True, timeout=connect_timeout)
        return cls(pool, url, readonly=readonly, attempt_sequence=sequence, dispatch_pool=dispatch)

    async def schema_version(self) -> int:
        """The migration number the database is at (the ``dispatchsim_schema`` table)."""
        row = await self._one("SELECT COALESCE(MAX(version), 0) FROM dispatchsim_schema")
        return int(row[0]) if row else 0

    def events_store(self) -> PgEventsStore:
        """The message-event operations on this database (sharing this store's transactions)."""
        from .events_store_pg import PgEventsStore

        return PgEventsStore(self)

    def idempotency_store(self) -> PgIdempotencyStore:
        """The Idempotency-Key operations on this database (sharing this store's transactions)."""
        from .store_idempotency_pg import PgIdempotencyStore

        return PgIdempotencyStore(self)

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One transaction (nested calls, in the same task, join the outer one) whose BEGIN costs no
        round trip of its own: it starts in pipeline mode (psycopg's), BEGIN waits there for the first
        statement that needs an answer, and both are answered together (see :class:`_Tx`). A
        transaction whose statements never needed an answer before its end sends them with its COMMIT.

        A failed statement in the pipeline aborts the transaction on the server; psycopg raises its
        error when the pipeline is answered (the error the statement raises outside a pipeline), from
        the operation that waited, and the transaction is rolled back."""
        current = _CURRENT.get()
        if current is not None and current.store is self:
            yield current.conn
            return
        try:
            async with _clock_held(), self._pool().connection() as conn:
                state = _Tx(self, conn)
                try:
                    await state.begin()
                    token = _CURRENT.set(state)
                    try:
                        yield conn
                    finally:
                        _CURRENT.reset(token)
                    await conn.execute("COMMIT", prepare=False)
                    await state.answered()
                except BaseException as exc:
                    await state.answered(exc)
                    # not committed: the server keeps the transaction (aborted or not) until it is rolled back
                    if conn.info.transaction_status in _IN_TRANSACTION:
                        await conn.execute("ROLLBACK", prepare=False)
                    raise
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from None

    @asynccontextmanager
    async def _use(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The current transaction's connection, or a pooled one in autocommit for one statement."""
        current = _CURRENT.get()
        if current is not None and current.store is self:
            yield current.conn
            return
        try:
            async with _clock_held(), self._pool().connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from None

    def _pool(self) -> AsyncConnectionPool:
        """The pool the current task takes its connections from: the dispatch loop's, or the other one."""
        return self._dispatch_pool if DISPATCH_LOOP.get() else self.pool

    async def _answered(self) -> None:
        """The statements sent so far are answered: in a transaction still in its pipelined start, that
        start ends here (one wait for its BEGIN and every statement sent since)."""
        current = _CURRENT.get()
        if current is not None and current.store is self:
            await current.answered()

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        async with self._use() as c:
            cur = await c.execute(sql, params)
            await self._answered()
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] = (), *, prepare: bool | None = None) -> list[tuple[Any, ...]]:
        """``prepare=False``: planned anew with its parameters' values at every execution, never as a
        prepared statement's generic plan (see :func:`~.store_pg_queries.activity_page_query`)."""
        async with self._use() as c:
            cur = await c.execute(sql, params, prepare=prepare)
            await self._answered()
            return await cur.fetchall()

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; returns its row count."""
        async with self._use() as c:
            return await self._rowcount(await c.execute(sql, params))

    async def _rowcount(self, cur: psycopg.AsyncCursor[Any]) -> int:
        """The row count of the statement ``cur`` ran (known once it is answered: see :meth:`_answered`)."""
        await self._answered()
        return cur.rowcount

    async def _together(self, c: psycopg.AsyncConnection[Any],
                        statements: Sequence[tuple[str, Sequence[Any]]]) -> list[psycopg.AsyncCursor[Any]]:
        """Send ``statements`` together and wait once for all their answers (psycopg's pipeline mode; in a
        transaction still in its pipelined start, with its BEGIN); returns their cursors, answered. Read
        their rows once the pipeline has ended: a fetch inside it asks the server for the answers so far,
        one more wait. A failure is raised here, as the same error as outside a pipeline."""
        current = _CURRENT.get()
        if current is not None and current.store is self and current.pipelined:
            curs = [await c.execute(sql, params) for sql, params in statements]
            await current.answered()
            return curs
        if len(statements) == 1:  # one needs no pipeline: it waits for its answer anyway
            return [await c.execute(*statements[0])]
        async with c.pipeline():
            curs = [await c.execute(sql, params) for sql, params in statements]
        return curs

    async def close(self) -> None:
        """Close every connection of its pools; the store is unusable afterwards."""
        async with _clock_held():
            if self._owners is not None:
                await self._owners.close()  # its owners' leases are theirs to release first (release_own_leases)
                self._owners = None
            if self._dispatch_pool is not self.pool:
                await self._dispatch_pool.close()
            await self.pool.close()

    async def ping(self) -> None:
        """A round trip to the database (health checks)."""
        await self._one("SELECT 1")

    async def latest_time(self) -> float | None:
        row = await self._one(latest_time_query())
        return None if row is None or row[0] is None else float(row[0])

    async def _notify_work(self, c: psycopg.AsyncConnection[Any]) -> None:
        """Wake every worker when this transaction commits (identical notifications of one
        transaction are delivered once)."""
        await c.execute(f"NOTIFY {WORK_CHANNEL}")

    async def lock_queue(self, queue: str) -> None:
        """Serialize head changes of one ordered queue until the current transaction ends."""
        await self._run(_QUEUE_LOCK_SQL, (QUEUE_LOCK, queue))

    # -- tenants and providers ----------------------------------------------------------

    async def add_tenant(self, tenant_id: str, name: str, now: float) -> bool:
        return await self._run("INSERT INTO tenants (id, name, created_at) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                               (tenant_id, name, now)) == 1

    async def add_provider(self, provider_id: str, name: str, now: float) -> bool:
        return await self._run("INSERT INTO providers (id, name, created_at) VALUES (%s, %s, %s) "
                               "ON CONFLICT (id) DO NOTHING", (provider_id, name, now)) == 1

    async def tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._one(f"SELECT {_TENANT} FROM tenants WHERE id = %s", (tenant_id,))
        return Tenant(*row) if row else None

    async def provider(self, provider_id: str) -> Provider | None:
        row = await self._one(f"SELECT {_PROVIDER} FROM providers WHERE id = %s", (provider_id,))
        return Provider(*row) if row else None

    async def tenants(self) -> list[Tenant]:
        return [Tenant(*r) for r in await self._all(f"SELECT {_TENANT} FROM tenants ORDER BY id")]

    async def providers(self) -> list[Provider]:
        return [Provider(*r) for r in await self._all(f"SELECT {_PROVIDER} FROM providers ORDER BY id")]

    # -- configurations -----------------------------------------------------------------

    async def insert_config(self, config_id: str, tenant_id: str, provider_id: str | None, channel: str | None,
                            snapshot: dict[str, Any], now: float, *,
                            kind: ConfigKind = ConfigKind.ACTIVITIES) -> None:
        async with self.tx() as c:
            await c.execute(
                "INSERT INTO configurations (id, kind, tenant_id, provider_id, channel, version, active, deleted,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 1, false, false, %s, %s)",
                (config_id, kind.value, tenant_id, provider_id, channel, now, now))
            await c.execute("INSERT INTO config_versions (config_id, version, snapshot, created_at)"
                            " VALUES (%s, 1, %s, %s)", (config_id, _dumps(snapshot), now))

    async def new_config_version(self, config_id: str, snapshot: dict[str, Any], now: float) -> int:
        async with self.tx() as c:
            row = await (await c.execute("SELECT version FROM configurations WHERE id = %s AND NOT deleted"
                                         " FOR UPDATE", (config_id,))).fetchone()
            if row is None:
                raise NotFound(f"configuration {config_id!r} not found")
            version = row[0] + 1
            await c.execute("INSERT INTO config_versions (config_id, version, snapshot, created_at)"
                            " VALUES (%s, %s, %s, %s)", (config_id, version, _dumps(snapshot), now))
            await c.execute("UPDATE configurations SET version = %s, updated_at = %s WHERE id = %s",
                            (version, now, config_id))
        return version

    async def set_config_active(self, config_id: str, active: bool, now: float, reason: str | None = None) -> None:
        async with self.tx() as c:
            cur = await c.execute(
                "UPDATE configurations SET active = %s, inactive_reason = %s, inactive_since = %s, updated_at = %s"
                " WHERE id = %s AND NOT deleted",
                (active, None if active else reason, None if active else now, now, config_id))
            if await self._rowcount(cur) != 1:
                raise NotFound(f"configuration {config_id!r} not found")
            if active:
                await self._notify_work(c)

    async def delete_config(self, config_id: str, now: float) -> None:
        """The row is locked ``FOR UPDATE`` (a plain UPDATE's lock does not conflict with the fan-out's
        ``FOR KEY SHARE``, see :meth:`active_configs`): it waits for the fan-outs that read the
        configuration as active to commit, and holds later ones until this transaction ends."""
        n = await self._run("WITH held AS (SELECT id FROM configurations WHERE id = %s AND NOT deleted FOR UPDATE)"
                            " UPDATE configurations c SET deleted = true, active = false, inactive_reason = 'deleted',"
                            " updated_at = %s FROM held WHERE c.id = held.id", (config_id, now))
        if n != 1:
            raise NotFound(f"configuration {config_id!r} not found")

    async def config(self, config_id: str) -> Configuration | None:
        row = await self._one(_CONFIG_BY_ID, (config_id,))
        return Configuration.from_row(row) if row else None

    async def configs_by_id(self, config_ids: Sequence[str]) -> dict[str, Configuration | None]:
        """Several in one pipeline (:meth:`_together`): one wait, each read as :meth:`config` reads it."""
        if len(config_ids) < 2:
            return await super().configs_by_id(config_ids)
        async with self._use() as c:
            curs = await self._together(c, [(_CONFIG_BY_ID, (cid,)) for cid in config_ids])
            rows = [await cur.fetchone() for cur in curs]
        return {cid: None if row is None else Configuration.from_row(row) for cid, row in zip(config_ids, rows)}

    async def configs(self, tenant_id: str | None = None, *,
                      kind: ConfigKind | None = ConfigKind.ACTIVITIES) -> list[Configuration]:
        where, params = ["NOT deleted"], []
        for clause, val in (("tenant_id = %s", tenant_id), ("kind = %s", kind.value if kind else None)):
            if val is not None:
                where.append(clause)
                params.append(val)
        rows = await self._all(f"SELECT {_CONFIG} FROM configurations WHERE " + " AND ".join(where)
                               + " ORDER BY created_at, id", params)
        return [Configuration.from_row(r) for r in rows]

    async def snapshot(self, config_id: str, version: int) -> dict[str, Any]:
        """The immutable snapshot of one configuration version (cached: versions never change)."""
        key = (config_id, version)
        snap = self._snapshots.get(key)
        if snap is None:
            row = await self._one("SELECT snapshot FROM config_versions WHERE config_id = %s AND version = %s", key)
            if row is None:
                raise NotFound(f"configuration {config_id!r} version {version} not found")
            snap = self._snapshots[key] = json.loads(row[0])
        return snap

    async def active_configs(self, tenant_id: str, channel: str) -> list[tuple[str, int]]:
        """Read ``FOR KEY SHARE``, the lock the deliveries' foreign key takes anyway: from the read to the
        end of the fan-out's transaction, a :meth:`delete_config` waits (and then sees its deliveries),
        and a fan-out reading while a delete holds the row waits for it and skips it once deleted. Other
        changes to the row (pausing, health) do not wait."""
        rows = await self._all("SELECT id, version FROM configurations WHERE tenant_id = %s AND channel = %s"
                               " AND active AND NOT deleted ORDER BY created_at, id FOR KEY SHARE",
                               (tenant_id, channel))
        return [(r[0], r[1]) for r in rows]

    async def paused_configs(self) -> list[str]:
        return [r[0] for r in await self._all(_PAUSED)]

    # -- activities and deliveries ------------------------------------------------------

    async def insert_activity(self, activity_id: str, tenant_id: str, typ: str, channel: str,
                              payload: dict[str, Any], now: float) -> None:
        await self._run("INSERT INTO activities (id, tenant_id, type, channel, payload, created_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s)", (activity_id, tenant_id, typ, channel, _dumps(payload), now))

    async def insert_delivery(self, *, webhook_id: str, config_id: str, config_version: int, queue: str,
                              ordered: bool, now: float, activity_id: str | None = None,
                              batch_id: int | None = None) -> int:
        """A READY delivery at the tail of its queue; under the queue's lock when it is ordered, so it
        becomes the head exactly when nothing holds the queue."""
        async with self.tx() as c:
            if ordered:
                await self.lock_queue(queue)
                held = await (await c.execute("SELECT 1 FROM deliveries WHERE queue = %s AND holds LIMIT 1",
                                              (queue,))).fetchone()
                holds, eligible = True, held is None
            else:
                holds, eligible = False, True
            row = await (await c.execute(
                "INSERT INTO deliveries (webhook_id, activity_id, batch_id, config_id, config_version, queue, status,"
                " holds, eligible, budget_started_at, next_attempt_at, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (webhook_id, activity_id, batch_id, config_id, config_version, queue, Status.READY.value, holds,
                 eligible, now, now, now, now))).fetchone()
            if eligible:
                await self._notify_work(c)
        assert row is not None
        return int(row[0])

    async def activity(self, activity_id: str) -> Activity:
        row = await self._one(
            "SELECT seq, id, tenant_id, type, channel, payload, result, created_at, EXISTS (SELECT 1 FROM"
            " deliveries d WHERE d.activity_id = a.id AND d.status = %s) FROM activities a WHERE a.id = %s",
            (Status.FAILED.value, activity_id))
        if row is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return Activity.from_row(row)

    async def stored_activities(self, activity_ids: Sequence[str]) -> dict[str, StoredActivity]:
        rows = await self._all(
            "SELECT id, payload, result, EXISTS (SELECT 1 FROM deliveries d WHERE d.activity_id = a.id"
            " AND d.status = %s) FROM activities a WHERE a.id = ANY(%s)",
            (Status.FAILED.value, list(dict.fromkeys(activity_ids))))
        return {r[0]: StoredActivity(r[1], r[2], r[3]) for r in rows}

    async def batch_events(self, batch_id: int) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in await self._all(
            "SELECT payload FROM message_events WHERE batch_id = %s ORDER BY seq", (batch_id,))]

    async def set_result(self, activity_id: str, result: Any) -> Any | None:
        async with self.tx() as c:
            cur = await c.execute("UPDATE activities SET result = %s WHERE id = %s AND result IS NULL",
                                  (_dumps(result), activity_id))
            if await self._rowcount(cur) == 1:
                return None
            row = await (await c.execute("SELECT result FROM activities WHERE id = %s", (activity_id,))).fetchone()
        if row is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return json.loads(row[0])

    async def delivery(self, delivery_id: int) -> Delivery:
        row = await self._one(f"SELECT {_DELIVERY} FROM deliveries WHERE id = %s", (delivery_id,))
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return Delivery.from_row(row)

    async def deliveries(self, *, activity_id: str | None = None, config_id: str | None = None,
                         status: Status | str | None = None, queue: str | None = None,
                         after_id: int = 0, limit: int | None = None) -> list[Delivery]:
        sql, params = deliveries_query(_DELIVERY, "%s", activity_id=activity_id, config_id=config_id, status=status,
                                       queue=queue, after_id=after_id, limit=limit)
        return [Delivery.from_row(r) for r in await self._all(sql, params)]

    async def attempts(self, delivery_id: int | None = None) -> list[Attempt]:
        if delivery_id is None:
            return [Attempt.from_row(r) for r in await self._all(attempts_query(_ATTEMPT))]
        return [Attempt.from_row(r) for r in await self._all(attempts_query(_ATTEMPT, "delivery_id = %s"),
                                                             (delivery_id, delivery_id))]

    async def _rows(self, table: str, cols: str, column: str, value: Any) -> list[tuple[Any, ...]]:
        if value is None:
            return await self._all(f"SELECT {cols} FROM {table} ORDER BY id")
        return await self._all(f"SELECT {cols} FROM {table} WHERE {column} = %s ORDER BY id", (value,))

    async def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for status, n in await self._all("SELECT status, COUNT(*) FROM deliveries GROUP BY status"):
            out[status] = n
        return out

    # -- the dispatch cycle -------------------------------------------------------------

    async def due_candidates(self, now: float, limit: int, *, exclude_configs: Sequence[str] = (),
                             skip_paused: bool = False) -> list[tuple[int, str, int]]:
        """Claimable deliveries due by ``now``, earliest first, read without locking them: the claim
        locks and re-checks the rows it leases (``SKIP LOCKED``), so a row another worker claims
        meanwhile is skipped there. (A lock here would last only this statement, since no transaction
        is open, yet cost a write of each row read: the dispatcher reads twice the rows it claims.)"""
        excl, params = "", [now]
        if exclude_configs:
            excl = " AND NOT (config_id = ANY(%s))"
            params.append(list(exclude_configs))
        if skip_paused:  # one hashed subplan of the few paused configurations, not a join per row
            excl += " AND config_id NOT IN (SELECT id FROM configurations WHERE NOT active)"
        if exclude_configs or skip_paused:
            excl += _any_config_left(excluded=bool(exclude_configs), active=skip_paused)
            params += [list(exclude_configs)] if exclude_configs else []
        rows = await self._all(
            "SELECT id, config_id, config_version FROM deliveries"
            f" WHERE {_CLAIMABLE} AND next_attempt_at <= %s{excl}"
            " ORDER BY next_attempt_at, id LIMIT %s", (*params, limit))
        return [(r[0], r[1], r[2]) for r in rows]

    async def queue_head(self, queue: str, now: float) -> tuple[int, str, int] | None:
        row = await self._one(_QUEUE_HEAD, (queue, now))
        return (row[0], row[1], row[2]) if row else None

    async def queue_heads(self, queues: Sequence[str], now: float) -> dict[str, tuple[int, str, int] | None]:
        """Several in one pipeline (:meth:`_together`): one wait, each read as :meth:`queue_head` reads it."""
        if len(queues) < 2:
            return await super().queue_heads(queues, now)
        async with self._use() as c:
            curs = await self._together(c, [(_QUEUE_HEAD, (queue, now)) for queue in queues])
            rows = [await cur.fetchone() for cur in curs]
        return {queue: None if row is None else (row[0], row[1], row[2]) for queue, row in zip(queues, rows)}

    async def claim(self, leases: Sequence[tuple[int, float]], *, token: str, now: float,
                    limit: int | None = None) -> list[Claim]:
        """Lease each (delivery id, lease end) that is still claimable and open its attempt, in one
        statement (one round trip, atomic on its own); with ``limit``, only the first ``limit`` of them
        (in the order given) that are still claimable.

        The rows are locked with ``FOR UPDATE SKIP LOCKED`` and re-checked (claimable and due: the
        candidates were read without locks, so another worker may have sent one and scheduled its
        retry meanwhile): a row another worker holds or has leased is skipped, never waited for, and
        with ``limit`` the next one asked for takes its place (two workers that read the same
        candidates then split them in one claim each). Only the rows leased are locked. Claims come
        back in the order asked."""
        if not leases:
            return []
        once = first_leases(leases)
        ids = list(once)
        rows = await self._all(
            self._claim_sql,
            # the limit always a number: a NULL would be a parameter of another type, so a statement of
            # its own on each connection, planned anew for its first executions
            {"ids": ids, "until": list(once.values()), "token": token, "now": now,
             "limit": len(ids) if limit is None else limit,
             "failed": Status.FAILED.value})
        by_id = {r[0]: r for r in rows}
        return [Claim(delivery_id=d, attempt_id=r[11], number=r[7], webhook_id=r[1], activity_id=r[2],
                      batch_id=r[3], config_id=r[4], config_version=r[5], queue=r[6], budget_attempts=r[8],
                      budget_started_at=r[9], lease_token=token, due_at=r[10], started_at=now,
                      activity=StoredActivity(r[12], r[13], r[14]) if r[2] is not None else None)
                for d in ids if d in by_id for r in (by_id[d],)]

    async def _finish(self, claim: Claim, res: AttemptResult, next_at: float | None, dst: Status, sets: str,
                      params: Sequence[Any], *, ordered: bool = False, promote: bool = False,
                      deferred: list[tuple[str, Sequence[Any]]] | None = None) -> bool:
        """Record the attempt's outcome and move the claimed delivery to ``dst`` (with ``sets``): both or
        neither, as SQLite's. The usual case is one statement: the status changes only under the
        caller's lease and from a status the table allows, and the attempt is written only when it
        did (the outcome reads the move's RETURNING). Otherwise the row is locked and read: a lost
        lease is False with nothing written (the late outcome must not overwrite the attempt the
        lease sweep marked INTERRUPTED); a lease still ours means the table refuses, and the attempt
        is recorded (it happened) before InvalidTransition.

        ``ordered`` (in the caller's transaction): the queue's lock is taken first, and with ``promote``
        the queue's next head is made eligible once the delivery moved (see :meth:`_promote`); the
        lock, the move and the promotion's reads go in one pipeline, executed in that order by the
        server, so an ordered finish waits twice (those, then the promotion's writes) instead of five
        times. ``deferred`` (a group commit's ordered finishes, in one transaction): statements sent first
        (the previous finish's promotion, its queue still locked by this transaction), and where this
        promotion's writes are left for the next statements instead of waiting on their own."""
        record = _RECORD_SQL
        outcome = (claim.attempt_id, claim.delivery_id, claim.number, claim.started_at, claim.config_id, res.finished_at,
                   res.outcome, res.status_code, res.error, res.retry_after, res.latency, res.excerpt, next_at)
        statements = list(deferred or ())
        if deferred:
            deferred.clear()
        statements += [(_QUEUE_LOCK_SQL, (QUEUE_LOCK, claim.queue))] if ordered else []
        move_at = len(statements)
        statements.append((
            f"WITH moved AS (UPDATE deliveries SET status = %s, lease_until = NULL, lease_token = NULL, {sets}"
            f" WHERE id = %s AND lease_token = %s AND status IN {_sources_sql(dst)} RETURNING id),"
            f" outcome AS ({record} WHERE EXISTS (SELECT 1 FROM moved))"
            " SELECT count(*) FROM moved",
            (dst.value, *params, claim.delivery_id, claim.lease_token, *outcome)))
        statements += _promote_reads(claim.queue) if promote else []
        async with self._use() as c:
            answered = await self._together(c, statements)
            moved = await answered[move_at].fetchone()
            if moved[0] == 1:
                if promote:
                    current, head = answered[-2:]
                    writes = _promotion(res.finished_at, await current.fetchall(), await head.fetchone())
                    if deferred is not None:
                        deferred.extend(writes)
                    elif writes:
                        await self._together(c, writes)
                return True
            row = await (await c.execute("SELECT status, lease_token FROM deliveries WHERE id = %s FOR UPDATE",
                                         (claim.delivery_id,))).fetchone()
            if row is None or row[1] != claim.lease_token:
                return False
            await c.execute(record, outcome)
        raise InvalidTransition(f"delivery {claim.delivery_id} is {row[0]}; {row[0]} -> {dst} is not"
                                " an allowed transition")

    async def finish_attempts(self, finishes: Sequence[Finish]) -> list[bool | InvalidTransition]:
        """The group commit in one statement for the attempts of unordered configurations (the usual
        case); those of ordered queues, and any the statement did not move (a lost lease, a refused
        transition: rare), one by one as before, each under its queue's lock."""
        done: list[bool | InvalidTransition | None] = [None] * len(finishes)
        batch = [i for i, f in enumerate(finishes) if not f.ordered]
        if batch:
            fs = [finishes[i] for i in batch]
            res = [f.result for f in fs]
            nexts = [f.next_at if f.status is Status.RETRYING else None for f in fs]
            rows = await self._all(_finish_many_sql(), {
                "id": [f.claim.delivery_id for f in fs], "token": [f.claim.lease_token for f in fs],
                "dst": [f.status.value for f in fs], "at": [r.finished_at for r in res], "next": nexts,
                "error": [f.error for f in fs], "reason": [f.reason for f in fs],
                "attempt": [f.claim.attempt_id for f in fs], "number": [f.claim.number for f in fs],
                "started": [f.claim.started_at for f in fs], "config": [f.claim.config_id for f in fs],
                "outcome": [r.outcome for r in res],
                "code": [r.status_code for r in res], "aerror": [r.error for r in res],
                "retry_after": [r.retry_after for r in res], "latency": [r.latency for r in res],
                "excerpt": [r.excerpt for r in res]})
            moved = {r[0] for r in rows}  # by attempt: a stale result of a delivery moved by its current one is not
            for i in batch:
                if finishes[i].claim.attempt_id in moved:
                    done[i] = True
        out: list[bool | InvalidTransition] = []
        # in the caller's transaction, an ordered finish's promotion writes go with the next finish's statements
        # (its queue stays locked until the transaction ends); alone, each finish is a transaction of its own
        current = _CURRENT.get()
        deferred: list[tuple[str, Sequence[Any]]] | None = [] if current is not None and current.store is self else None
        for f, d in zip(finishes, done):
            if d is None:
                try:
                    d = await self._move(f, deferred)
                except InvalidTransition as exc:
                    d = exc
            out.append(d)
        if deferred:
            async with self._use() as c:
                await self._together(c, deferred)
        return out

    async def _move(self, f: Finish, deferred: list[tuple[str, Sequence[Any]]] | None = None) -> bool:
        """:meth:`mark_dispatched`, :meth:`schedule_retry` or :meth:`mark_failed` of one finish (see
        :meth:`_finish` for ``deferred``). An ordered retry is a promotion too (see
        :meth:`StoreContract.schedule_retry`): usually the head stays, and the promotion writes nothing."""
        res = f.result
        if f.status is Status.DISPATCHED:
            sets, params, promote = _DISPATCHED_SETS, (res.finished_at, res.finished_at), True
        elif f.status is Status.RETRYING:
            # the head stays, unless an earlier delivery was force-retried while this attempt was in flight
            sets, params, promote = _RETRY_SETS, (f.next_at, f.error, res.finished_at), True
        else:
            holds = f.ordered and f.block
            sets, params, promote = _FAILED_SETS, (holds, holds, f.reason, f.error, res.finished_at), not f.block
        next_at = f.next_at if f.status is Status.RETRYING else None
        if not f.ordered:
            return await self._finish(f.claim, res, next_at, f.status, sets, params, deferred=deferred)
        async with self.tx():
            return await self._finish(f.claim, res, next_at, f.status, sets, params, ordered=True, promote=promote,
                                      deferred=deferred)

    async def mark_dispatched(self, claim: Claim, res: AttemptResult, *, ordered: bool) -> bool:
        return await self._move(Finish(claim=claim, result=res, status=Status.DISPATCHED, ordered=ordered))

    async def schedule_retry(self, claim: Claim, res: AttemptResult, next_at: float, error: str, *,
                             ordered: bool = False) -> bool:
        return await self._move(Finish(claim=claim, result=res, status=Status.RETRYING, next_at=next_at, error=error,
                                       ordered=ordered))

    async def mark_failed(self, claim: Claim, res: AttemptResult, reason: str, error: str, *,
                          ordered: bool, block: bool) -> bool:
        return await self._move(Finish(claim=claim, result=res, status=Status.FAILED, reason=reason, error=error,
                                       ordered=ordered, block=block))

    async def _promote(self, c: psycopg.AsyncConnection[Any], queue: str, now: float) -> None:
        """Make the earliest holder of ``queue`` its head, unless an attempt of the queue is in flight.
        The caller holds the queue's lock; the current heads are row-locked first, so a head another
        worker is leasing right now is seen with its lease (the two reads go together: one wait; the
        writes, when there are two, too)."""
        current, head = await self._together(c, _promote_reads(queue))
        writes = _promotion(now, await current.fetchall(), await head.fetchone())
        if writes:
            await self._together(c, writes)

    async def _queue_of(self, c: psycopg.AsyncConnection[Any], delivery_id: int) -> str | None:
        row = await (await c.execute("SELECT queue FROM deliveries WHERE id = %s", (delivery_id,))).fetchone()
        return row[0] if row else None

    async def force_retry(self, delivery_id: int, now: float, *, ordered: bool,
                          config_version: int | None = None) -> Delivery:
        async with self.tx() as c:
            queue = await self._queue_of(c, delivery_id)
            if queue is None:
                raise NotFound(f"delivery {delivery_id} not found")
            # held as a fan-out holds it (see active_configs): a delete waits, then sees it READY
            if await (await c.execute("SELECT 1 FROM configurations WHERE id = (SELECT config_id FROM deliveries"
                                      " WHERE id = %s) AND NOT deleted FOR KEY SHARE", (delivery_id,))).fetchone() is None:
                raise ConfigDeleted(delivery_id)
            if ordered:
                await self.lock_queue(queue)
            cur = await c.execute(
                "UPDATE deliveries SET status = %s, budget_attempts = 0, budget_started_at = %s,"
                " next_attempt_at = %s, failed_reason = NULL, holds = %s, eligible = %s, updated_at = %s,"
                " config_version = COALESCE(%s, config_version)"
                f" WHERE id = %s AND status IN {_sources_sql(Status.READY)}",
                (Status.READY.value, now, now, ordered, not ordered, now, config_version, delivery_id))
            if await self._rowcount(cur) != 1:
                await self._refuse(c, delivery_id, Status.READY)
            if ordered:
                await self._promote(c, queue, now)
            await self._notify_work(c)
        return await self.delivery(delivery_id)

    async def skip(self, delivery_id: int, now: float) -> Delivery:
        async with self.tx() as c:
            queue = await self._queue_of(c, delivery_id)
            if queue is None:
                raise NotFound(f"delivery {delivery_id} not found")
            await self.lock_queue(queue)
            cur = await c.execute("UPDATE deliveries SET holds = false, eligible = false, updated_at = %s"
                                  " WHERE id = %s AND status = %s AND holds", (now, delivery_id, Status.FAILED.value))
            if await self._rowcount(cur) != 1:
                row = await (await c.execute("SELECT status FROM deliveries WHERE id = %s",
                                             (delivery_id,))).fetchone()
                assert row is not None
                raise InvalidTransition(f"delivery {delivery_id} is {row[0]} and does not block its queue;"
                                        " only a FAILED head of a blocked queue can be skipped")
            await self._promote(c, queue, now)
            await self._notify_work(c)
        return await self.delivery(delivery_id)

    async def _refuse(self, c: psycopg.AsyncConnection[Any], delivery_id: int, target: Status) -> None:
        row = await (await c.execute("SELECT status FROM deliveries WHERE id = %s", (delivery_id,))).fetchone()
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        allowed_from = ", ".join(s.value for s in sources_of(target)) or "no status"
        raise InvalidTransition(f"delivery {delivery_id} is {row[0]}; {row[0]} -> {target} is not"
                                f" allowed (force retry applies to {allowed_from} deliveries only)")

    async def release_expired_leases(self, now: float) -> list[int]:
        return await self.release_leases(now, ending_by=now,
                                         error="lease expired: the worker stopped during this attempt")

    async def release_leases(self, now: float, *, ending_by: float, error: str,
                             owner: str | None = None) -> list[int]:
        """Leases ending by ``ending_by`` (of one ``owner`` when given) released: their open attempts
        become INTERRUPTED and the deliveries are due ``now``. Rows another worker is finishing or
        releasing at this moment are skipped (``SKIP LOCKED``); the next sweep sees them if needed."""
        mine, params = "", [ending_by]
        if owner is not None:
            mine = " AND starts_with(lease_token, %s)"
            params.append(owner + ":")
        if await self._one(_lease_ended(mine), params) is None:
            return []
        async with self.tx() as c:
            rows = await (await c.execute(
                "SELECT id FROM deliveries WHERE lease_until IS NOT NULL AND lease_until <= %s" + mine
                + " ORDER BY id FOR UPDATE SKIP LOCKED", params)).fetchall()
            ids = [r[0] for r in rows]
            if ids:
                # the interrupted attempts' rows, from what their leases hold (schema v10); none for an attempt
                # recorded already (a refused transition keeps the lease)
                await c.execute("INSERT INTO attempts (id, delivery_id, number, started_at, config_id, finished_at,"
                                " outcome, error) SELECT lease_attempt, id, attempts, lease_started_at, config_id, %s,"
                                " 'INTERRUPTED', %s FROM deliveries WHERE id = ANY(%s) AND lease_attempt IS NOT NULL"
                                " ON CONFLICT (id) DO NOTHING", (now, error, ids))
                await c.execute("UPDATE deliveries SET lease_until = NULL, lease_token = NULL, next_attempt_at = %s,"
                                " updated_at = %s WHERE id = ANY(%s)", (now, now, ids))
                await self._notify_work(c)
        return ids

    async def release_own_leases(self, now: float, owner: str) -> list[int]:
        return await self.release_leases(now, ending_by=float("inf"), owner=owner,
                                         error="shutdown deadline passed during this attempt")

    async def release_dead_owners_leases(self, now: float) -> list[int]:
        """Every lease released at once. Only for a database with one owner (a process that knows
        no other worker runs); serve on PostgreSQL never calls it: other workers' leases expire."""
        return await self.release_leases(now, ending_by=float("inf"),
                                         error="the previous owner of the database stopped during this attempt")

    async def register_owner(self, owner: str) -> None:
        """A shared session-level advisory lock named by the owner, on a connection of its own: PostgreSQL
        drops it when that session ends, however the process ends (kill -9 and a lost machine included,
        once the server notices the connection is gone).

        Called again (serve does, every lease sweep) it checks that session and, when it was lost while
        this process lives (a restarted server, a dropped connection), opens a new one and takes every
        registered owner's lock again: without that the other workers would take this live worker for
        dead and release its leases at every sweep. A lock is taken once per session."""
        self._owner_names.add(owner)
        try:
            async with _clock_held():
                if self._owners is not None and not self._owners.closed:
                    try:
                        await self._owners.execute("SELECT 1")
                    except psycopg.OperationalError:
                        await self._owners.close()
                if self._owners is None or self._owners.closed:
                    self._owners = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                    self._owners_locked = set()
                for name in sorted(self._owner_names - self._owners_locked):
                    await self._owners.execute("SELECT pg_advisory_lock_shared(%s, hashtext(%s))", (OWNER_LOCK, name))
                    self._owners_locked.add(name)
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from None

    async def dead_owners(self) -> list[str]:
        """The lease owners (token prefixes) of which no session holds the owner lock (pg_locks shows
        a two-key advisory lock as classid, objid, objsubid 2)."""
        rows = await self._all(
            "SELECT o FROM (SELECT DISTINCT split_part(lease_token, ':', 1) AS o FROM deliveries"
            " WHERE lease_until IS NOT NULL) l WHERE NOT EXISTS (SELECT 1 FROM pg_locks k WHERE"
            " k.locktype = 'advisory' AND k.database = (SELECT oid FROM pg_database WHERE datname ="
            " current_database()) AND k.classid = %s::bigint::oid AND k.objid = hashtext(l.o)::oid"
            " AND k.objsubid = 2 AND k.granted) ORDER BY o", (OWNER_LOCK,))
        return [r[0] for r in rows]

    async def cycle_view(self, now: float, config_ids: Sequence[str], *, health: bool) -> CycleView:
        """Its statements in one pipeline (:meth:`_together`): one wait for the server and one connection
        from the pool, where one after the other cost a round trip (and a checkout) each. They only read,
        each on its own (in autocommit the server runs a pipeline's statements in one implicit
        transaction until its Sync). Each configuration is read by id, as :meth:`config` reads it (a list
        in one statement, ``id = ANY(…)``, is planned anew at every execution: its generic plan never
        looks cheaper than a custom one)."""
        statements: list[tuple[str, Sequence[Any]]] = [(_lease_ended(), (now,)), (_PAUSED, ())]
        statements += [(_CONFIG_BY_ID, (cid,)) for cid in config_ids]
        statements += [(_HEALTH, ())] if health else []
        async with self._use() as c:
            ended, paused, *rest = await self._together(c, statements)
            configs = {cid: await cur.fetchone() for cid, cur in zip(config_ids, rest)}
            return CycleView(leases_ended=await ended.fetchone() is not None,
                             paused=[r[0] for r in await paused.fetchall()],
                             configs={cid: None if row is None else Configuration.from_row(row)
                                      for cid, row in configs.items()},
                             health=[EndpointHealth.from_row(r) for r in await rest[-1].fetchall()] if health
                             else None)

    async def next_wakeup(self, exclude_configs: Sequence[str] = ()) -> float | None:
        excl, params = "", []
        if exclude_configs:
            excl = " AND NOT (config_id = ANY(%s))" + _any_config_left(excluded=True, active=False)
            params += [list(exclude_configs)] * 2
        row = await self._one("SELECT (SELECT next_attempt_at FROM deliveries WHERE eligible AND lease_until IS NULL"
                              f" AND status IN {_ACTIVE_SQL}{excl} ORDER BY next_attempt_at, id LIMIT 1),"
                              " (SELECT MIN(lease_until) FROM deliveries WHERE lease_until IS NOT NULL)", params)
        times = [t for t in (row or ()) if t is not None]
        return min(times) if times else None

    async def in_flight(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM deliveries WHERE lease_until IS NOT NULL")
        assert row is not None
        return int(row[0])

    # -- endpoint health, notifications -------------------------------------------------

    async def health_rows(self) -> list[EndpointHealth]:
        return [EndpointHealth.from_row(r) for r in await self._all(_HEALTH)]

    async def save_circuit(self, config_id: str, *, circuit: Circuit, circuit_until: float | None, now: float) -> None:
        await self._run(
            "INSERT INTO endpoint_health (config_id, circuit, circuit_until, updated_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (config_id) DO UPDATE SET circuit = excluded.circuit, circuit_until = excluded.circuit_until,"
            " updated_at = excluded.updated_at", (config_id, circuit.value, circuit_until, now))

    async def count_outcome(self, config_id: str, *, ok: bool, now: float) -> Streak:
        """One statement: the row's lock orders concurrent workers, each adding to what the last stored."""
        row = await self._one(
            "INSERT INTO endpoint_health (config_id, consecutive_failures, failing_since, updated_at)"
            " VALUES (%(c)s, CASE WHEN %(ok)s THEN 0 ELSE 1 END, CASE WHEN %(ok)s THEN NULL ELSE %(now)s END, %(now)s)"
            " ON CONFLICT (config_id) DO UPDATE SET"
            " consecutive_failures = CASE WHEN %(ok)s THEN 0 ELSE endpoint_health.consecutive_failures + 1 END,"
            " failing_since = CASE WHEN %(ok)s THEN NULL ELSE COALESCE(endpoint_health.failing_since, %(now)s) END,"
            " updated_at = %(now)s RETURNING consecutive_failures, failing_since",
            {"c": config_id, "ok": ok, "now": now})
        assert row is not None
        return Streak(row[0], row[1])

    async def take_probe(self, config_id: str, *, now: float, until: float) -> bool:
        """A conditional UPDATE: of workers asking at once, the row lock lets one in; the others
        re-check the condition against its write and find the probe taken."""
        return await self._run(
            "UPDATE endpoint_health SET circuit = %s, circuit_until = %s, updated_at = %s WHERE config_id = %s"
            " AND circuit IN (%s, %s) AND COALESCE(circuit_until, 0) <= %s",
            (Circuit.HALF_OPEN.value, until, now, config_id, Circuit.OPEN.value, Circuit.HALF_OPEN.value, now)) == 1

    async def move_circuit(self, config_id: str, *, source: Circuit, circuit: Circuit, circuit_until: float | None,
                           now: float) -> EndpointHealth | None:
        """The row's lock orders workers changing it at once: the first moves it, the others re-check
        ``source`` against its write and move nothing; they then read what it stored (a statement of
        its own, whose snapshot sees that write)."""
        values = (circuit.value, circuit_until, now, config_id, source.value)
        if source is Circuit.CLOSED:
            moved = await self._run(
                "INSERT INTO endpoint_health (circuit, circuit_until, updated_at, config_id) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (config_id) DO UPDATE SET circuit = excluded.circuit,"
                " circuit_until = excluded.circuit_until, updated_at = excluded.updated_at"
                " WHERE endpoint_health.circuit = %s", values)
        else:
            moved = await self._run("UPDATE endpoint_health SET circuit = %s, circuit_until = %s, updated_at = %s"
                                    " WHERE config_id = %s AND circuit = %s", values)
        if moved == 1:
            return None
        row = await self._one(_HEALTH_OF, (config_id,))
        return EndpointHealth.from_row(row) if row else EndpointHealth(config_id, Circuit.CLOSED, None, 0, None, now)

    async def pause_if_active(self, config_id: str, now: float, reason: str) -> bool:
        return await self._run(
            "UPDATE configurations SET active = false, inactive_reason = %s, inactive_since = %s, updated_at = %s"
            " WHERE id = %s AND active AND NOT deleted", (reason, now, now, config_id)) == 1

    async def recent_outcomes(self, config_id: str, since: float, *,
                              exclude_attempt: int = 0) -> list[tuple[float, bool]]:
        rows = await self._all(
            "SELECT finished_at, outcome FROM attempts WHERE config_id = %s AND finished_at >= %s AND NOT replay"
            " AND outcome IS NOT NULL AND outcome NOT IN ('INTERRUPTED', 'MAPPING_ERROR') AND id <> %s"
            " ORDER BY finished_at, id", (config_id, since, exclude_attempt))
        return [(r[0], r[1] == "SUCCESS") for r in rows]

    async def add_notification(self, *, at: float, kind: str, config_id: str | None, message: str) -> int:
        row = await self._one("INSERT INTO notifications (at, kind, config_id, message) VALUES (%s, %s, %s, %s)"
                              " RETURNING id", (at, kind, config_id, message))
        assert row is not None
        return int(row[0])

    async def set_notification_delivery(self, notification_id: int, delivery: str) -> None:
        await self._run("UPDATE notifications SET delivery = %s WHERE id = %s", (delivery, notification_id))

    async def notifications(self, config_id: str | None = None) -> list[Notification]:
        return [Notification(*r) for r in await self._rows("notifications", _NOTIFICATION, "config_id", config_id)]

    async def failed_ids(self, *, config_id: str | None = None, since: float | None = None,
                         until: float | None = None, reason: str | None = None) -> list[int]:
        where, params = [_FAILED_ONLY], []
        for clause, val in (("config_id = %s", config_id), ("created_at >= %s", since), ("created_at <= %s", until),
                            ("failed_reason = %s", reason)):
            if val is not None:
                where.append(clause)
                params.append(val)
        return [r[0] for r in await self._all("SELECT id FROM deliveries WHERE " + " AND ".join(where)
                                              + " ORDER BY id", params)]

    async def start_replay(self, delivery_id: int, now: float) -> int:
        async with self.tx() as c:
            row = await (await c.execute(
                "SELECT config_id, (SELECT COALESCE(MAX(number), 0) + 1 FROM attempts WHERE delivery_id = d.id)"
                " FROM deliveries d WHERE id = %s AND status = %s FOR UPDATE",
                (delivery_id, Status.DISPATCHED.value))).fetchone()
            if row is None:
                cur = await (await c.execute("SELECT status FROM deliveries WHERE id = %s",
                                             (delivery_id,))).fetchone()
                if cur is None:
                    raise NotFound(f"delivery {delivery_id} not found")
                raise InvalidTransition(f"delivery {delivery_id} is {cur[0]}; only a DISPATCHED delivery can be"
                                        " replayed (use force retry for FAILED ones)")
            made = await (await c.execute(
                "INSERT INTO attempts (delivery_id, number, started_at, config_id, replay)"
                " VALUES (%s, %s, %s, %s, true) RETURNING id", (delivery_id, row[1], now, row[0]))).fetchone()
        assert made is not None
        return int(made[0])

    async def finish_replay(self, attempt_id: int, res: AttemptResult) -> None:
        await self._run(
            "UPDATE attempts SET finished_at = %s, outcome = %s, status_code = %s, error = %s, retry_after = %s,"
            " latency = %s, excerpt = %s WHERE id = %s",
            (res.finished_at, res.outcome, res.status_code, res.error, res.retry_after, res.latency, res.excerpt,
             attempt_id))


#: the paused (or deleted) configurations
_PAUSED = "SELECT id FROM configurations WHERE NOT active ORDER BY id"
_HEALTH = f"SELECT {columns(EndpointHealth)} FROM endpoint_health ORDER BY config_id"
_HEALTH_OF = f"SELECT {columns(EndpointHealth)} FROM endpoint_health WHERE config_id = %s"
_TENANT = columns(Tenant)
_PROVIDER = columns(Provider)
_CONFIG = columns(Configuration)
_DELIVERY = columns(Delivery)
_ATTEMPT = columns(Attempt)
_NOTIFICATION = columns(Notification)
_CONFIG_BY_ID = f"SELECT {_CONFIG} FROM configurations WHERE id = %s"
#: what a finish sets besides its status and lease (``PgStore._move``), by destination
_DISPATCHED_SETS = ("holds = false, eligible = false, budget_attempts = budget_attempts + 1, dispatched_at = %s,"
                    " last_error = NULL, updated_at = %s")
_RETRY_SETS = "budget_attempts = budget_attempts + 1, next_attempt_at = %s, last_error = %s, updated_at = %s"
_FAILED_SETS = ("holds = %s, eligible = %s, budget_attempts = budget_attempts + 1, failed_reason = %s,"
                " last_error = %s, updated_at = %s")
#: an ordered queue's lock, held until the transaction ends (see ``PgStore.lock_queue``)
_QUEUE_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
#: an ordered queue's head (any queue's earliest claimable delivery), due by the time given
_QUEUE_HEAD = (f"SELECT id, config_id, config_version FROM deliveries WHERE queue = %s AND holds AND {_CLAIMABLE}"
               " AND next_attempt_at <= %s ORDER BY id LIMIT 1")


def _promote_reads(queue: str) -> list[tuple[str, Sequence[Any]]]:
    """What a promotion of ``queue``'s head reads (``PgStore._promote``): its current heads, row-locked
    (id, lease end), then its first holder."""
    return [("SELECT id, lease_until FROM deliveries WHERE queue = %s AND eligible AND holds ORDER BY id"
             " FOR UPDATE", (queue,)),
            ("SELECT id FROM deliveries WHERE queue = %s AND holds ORDER BY id LIMIT 1", (queue,))]


def _promotion(now: float, current: list[tuple[Any, ...]], head: tuple[Any, ...] | None
               ) -> list[tuple[str, Sequence[Any]]]:
    """The writes of a promotion (``PgStore._promote``) from its reads (``_promote_reads``): the current
    heads (id, lease end) and the queue's first holder; none while an attempt of the queue is in flight."""
    if any(r[1] is not None for r in current):
        return []
    head_id = head[0] if head else None
    others = [r[0] for r in current if r[0] != head_id]
    writes: list[tuple[str, Sequence[Any]]] = []
    if others:
        writes.append(("UPDATE deliveries SET eligible = false WHERE id = ANY(%s)", (others,)))
    if head_id is not None and head_id not in {r[0] for r in current}:  # not the head already
        writes.append(("UPDATE deliveries SET eligible = true, updated_at = %s WHERE id = %s AND NOT eligible",
                       (now, head_id)))
    return writes


def _lease_ended(owner: str = "") -> str:
    """A lease (with ``owner``: a condition on its token) ended by the time given. ORDER BY: the index on
    lease_until, not a scan of the table that finds nothing (the LIMIT alone made the planner expect an
    early match, and every dispatch cycle asks this)."""
    return ("SELECT 1 FROM deliveries WHERE lease_until IS NOT NULL AND lease_until <= %s" + owner
            + " ORDER BY lease_until LIMIT 1")


def _claim_sql(sequence: str) -> str:
    """:meth:`PgStore.claim`'s statement. ``sequence``: the attempts' id sequence, as the store read it when
    it opened (:func:`_attempt_sequence`), named in the statement as a constant: written as
    ``nextval(pg_get_serial_sequence('attempts', 'id'))`` the name was looked up in the catalog (``pg_depend``)
    once per claimed row, about 3 % of the claim's database CPU."""
    seq = sequence.replace("'", "''").replace("%", "%%")  # a string constant, in a statement with parameters
    return (
        # primary-key look-ups only (id = ANY, array_position): no join whose plan depends on statistics;
        # the conditions are re-checked on the row's latest version once it is locked, and a row that no
        # longer meets them (or is locked: skipped) does not count against the limit
        # (wrapped in IS TRUE, the conditions cannot lead the planner to the due index, whose choice
        # would depend on the statistics of the moment and be planned anew at every execution)
        "WITH wanted AS MATERIALIZED (SELECT id FROM deliveries WHERE id = ANY(%(ids)s) AND"
        f" ({_CLAIMABLE} AND next_attempt_at <= %(now)s) IS TRUE"
        " ORDER BY array_position(%(ids)s::bigint[], id) LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        # no attempt row yet (schema v10): its id is reserved from the attempts' sequence, in id order as the
        # INSERT that opened the rows numbered them, and noted on the lease with its start; the finish writes it
        f" numbered AS (SELECT id, nextval('{seq}'::regclass) AS attempt"
        " FROM (SELECT id FROM wanted ORDER BY id) w),"
        " leased AS (UPDATE deliveries d SET lease_until = (%(until)s::double precision[])"
        "[array_position(%(ids)s::bigint[], d.id)], lease_token = %(token)s, attempts = d.attempts + 1,"
        " updated_at = %(now)s, lease_attempt = n.attempt, lease_started_at = %(now)s FROM numbered n"
        " WHERE d.id = n.id RETURNING d.id, d.webhook_id, d.activity_id,"
        " d.batch_id, d.config_id, d.config_version, d.queue, d.attempts, d.budget_attempts, d.budget_started_at,"
        " d.next_attempt_at, d.lease_attempt)"
        # the activity sent, read here rather than in one more round trip per attempt
        " SELECT leased.*, a.payload, a.result, EXISTS (SELECT 1 FROM deliveries f WHERE"
        " f.activity_id = a.id AND f.status = %(failed)s) FROM leased"
        " LEFT JOIN activities a ON a.id = leased.activity_id")


async def _attempt_sequence(conn: psycopg.AsyncConnection[Any]) -> str:
    """The name of the sequence of the attempts' ids (schema-qualified), read once when a store opens."""
    row = await (await conn.execute("SELECT pg_get_serial_sequence('attempts', 'id')")).fetchone()
    return str(row[0]) if row and row[0] else "attempts_id_seq"


#: a finished attempt's row, written once with its outcome (schema v10: the claim writes none); a SELECT, so a
#: statement can make it conditional (see ``PgStore._finish``)
_RECORD_SQL = ("INSERT INTO attempts (id, delivery_id, number, started_at, config_id, finished_at, outcome, status_code,"
               " error, retry_after, latency, excerpt, next_attempt_at)"
               " SELECT %s::bigint, %s::bigint, %s::integer, %s::float8, %s::text, %s::float8, %s::text, %s::integer,"
               " %s::text, %s::float8, %s::float8, %s::text, %s::float8")


def _finish_many_sql() -> str:
    """The group commit of unordered attempts (see ``PgStore.finish_attempts``): every delivery moved as
    mark_dispatched / schedule_retry / mark_failed move one (under its lease, from a status the
    transition table allows, read at each call), and the attempts of the moved ones recorded; returns
    the attempts whose lease moved their delivery. An attempt is recorded when its own lease moved
    the delivery, not any lease: one batch can hold a stale result of the same delivery (kept through
    an outage while its lease was released, its attempt written INTERRUPTED, and the delivery claimed
    again), whose row exists."""
    return (
        "WITH v AS (SELECT * FROM unnest(%(id)s::bigint[], %(token)s::text[], %(dst)s::text[], %(at)s::float8[],"
        " %(next)s::float8[], %(error)s::text[], %(reason)s::text[]) AS v(id, token, dst, at, next_at, error, reason)),"
        " moved AS (UPDATE deliveries d SET status = v.dst, lease_until = NULL, lease_token = NULL,"
        " budget_attempts = d.budget_attempts + 1, updated_at = v.at,"
        " holds = CASE WHEN v.dst = 'RETRYING' THEN d.holds ELSE false END,"
        " eligible = CASE WHEN v.dst = 'RETRYING' THEN d.eligible ELSE false END,"
        " dispatched_at = CASE WHEN v.dst = 'DISPATCHED' THEN v.at ELSE d.dispatched_at END,"
        " next_attempt_at = CASE WHEN v.dst = 'RETRYING' THEN v.next_at ELSE d.next_attempt_at END,"
        " last_error = CASE WHEN v.dst = 'DISPATCHED' THEN NULL ELSE v.error END,"
        " failed_reason = CASE WHEN v.dst = 'FAILED' THEN v.reason ELSE d.failed_reason END"
        " FROM v WHERE d.id = ANY(%(id)s::bigint[]) AND d.id = v.id AND d.lease_token = v.token AND CASE v.dst"
        + "".join(f" WHEN '{dst.value}' THEN d.status IN {_sources_sql(dst)}"
                  for dst in (Status.DISPATCHED, Status.RETRYING, Status.FAILED))
        + " ELSE false END RETURNING d.id, d.lease_attempt AS attempt),"
        " recorded AS (INSERT INTO attempts (id, delivery_id, number, started_at, config_id, finished_at, outcome,"
        " status_code, error, retry_after, latency, excerpt, next_attempt_at) SELECT * FROM unnest(%(attempt)s::bigint[],"
        " %(id)s::bigint[], %(number)s::integer[], %(started)s::float8[], %(config)s::text[], %(at)s::float8[],"
        " %(outcome)s::text[], %(code)s::integer[], %(aerror)s::text[], %(retry_after)s::float8[],"
        " %(latency)s::float8[], %(excerpt)s::text[], %(next)s::float8[])"
        " AS r(attempt_id, delivery_id, number, started_at, config_id, at, outcome, code, error, retry_after, latency,"
        " excerpt, next_at) WHERE r.attempt_id IN (SELECT attempt FROM moved))"
        " SELECT attempt FROM moved")


@asynccontextmanager
async def _clock_held() -> AsyncIterator[None]:
    """On a time-compacting test loop (looptime, under the virtual clock of the property tests),
    keep simulated time from jumping ahead while the database answers.

    Such a loop moves its clock to the next timer whenever no I/O is ready at once, which would
    make every round trip to the server last until the next retry was due. A pending executor
    future is what tells the loop that something outside it is still working: while one is
    pending it waits for I/O in real time instead. On any other loop this does nothing.
    """
    loop = asyncio.get_running_loop()
    if not getattr(loop, "looptime_on", False):
        yield
        return
    done = threading.Event()
    waiting = loop.run_in_executor(None, done.wait)
    try:
        yield
    finally:
        done.set()
        await waiting


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


async def _migrate(conn: psycopg.AsyncConnection[Any], shown: str, *, readonly: bool) -> int:
    """Bring the database to the latest schema (``NNNN_*.pg.sql`` in order), each migration in its
    own transaction under an advisory lock, so workers starting together migrate once. Refuses a
    database of another application and a newer schema; returns the version it is at."""
    latest = latest_schema_version()
    async with conn.transaction():
        if not readonly:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (MIGRATION_LOCK,))
        version = await _schema_version(conn, shown, latest=latest)
        if readonly:
            if version == 0:
                raise StoreError(f"{shown}: empty, not a dispatchsim database yet")
            return version
        pending = [(n, sql) for n, sql in migrations("postgres") if n > version]
        if version == 0 and pending:
            await conn.execute("CREATE TABLE dispatchsim_schema (version integer PRIMARY KEY,"
                               " applied_at timestamptz NOT NULL DEFAULT now())")
        for number, sql in pending:
            async with conn.transaction():
                for stmt in _split_sql(sql):
                    await conn.execute(stmt)
                await conn.execute("INSERT INTO dispatchsim_schema (version) VALUES (%s)", (number,))
            version = number
    return version


async def _schema_version(conn: psycopg.AsyncConnection[Any], shown: str, *, latest: int) -> int:
    # pg_class, not information_schema.tables: that view lists only the tables the user may use, so
    # another role's tables made another application's database look empty, and it was migrated
    tables = [r[0] for r in await (await conn.execute(
        "SELECT relname FROM pg_catalog.pg_class WHERE relnamespace = current_schema()::regnamespace"
        " AND relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY relname")).fetchall()]
    if "dispatchsim_schema" not in tables:
        if tables:
            raise StoreError(f"{shown}: not a dispatchsim database (it belongs to another application: tables "
                             f"{', '.join(tables[:5])}); use another database or schema")
        return 0
    row = await (await conn.execute("SELECT COALESCE(MAX(version), 0) FROM dispatchsim_schema")).fetchone()
    version = int(row[0]) if row else 0
    if version > latest:
        raise StoreError(f"{shown}: database schema v{version} is newer than this dispatchsim (schema v{latest});"
                         " upgrade dispatchsim to use it")
    return version


__all__ = ["JOB_LOCK", "WORK_CHANNEL", "PgStore"]
