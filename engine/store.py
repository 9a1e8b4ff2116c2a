"""All SQL lives here: the store is the source of truth and exposes named operations.

The dispatcher keeps no state a restart cannot rebuild: leases, queue heads and
due times are columns, and every transition is a conditional UPDATE whose rowcount
is checked, so ordering and the transition table hold even if Python code is wrong.
"""
from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from . import store_file
from .jsontext import dumps as _dumps
from .errors import ConfigDeleted, InvalidTransition, NotFound, StoreError
from .config import ConfigKind
from . import states
from .states import ACTIVE, Circuit, Status, sources_of
from .payload import rendered_body
from .store_console import ConsoleOps
from .store_contract import Finish, NewActivity, NewDelivery, StoreContract
from .store_queries import QueryOps
from .store_sql import attempts_query, deliveries_query, first_leases, latest_time_query
from .store_rows import (Activity, Attempt, Configuration, Delivery, EndpointHealth, Notification, Provider,
                         StoredActivity, Streak, Tenant, columns)



def status_in(statuses: Iterable[Status]) -> str:
    """``('READY', 'RETRYING')`` for a ``status IN …`` condition, from enum members (never user input).

    Conditions of status changes are built from the transition table with it at each call, so the
    table in ``states.py`` is the rule the database enforces."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses, key=lambda s: s.value)) + ")"


#: literally the condition of the partial indexes over claimable rows (the planner matches it as text)
_ACTIVE_SQL = status_in(ACTIVE)
#: what the due read, a queue's head and the claim all ask of a delivery they may lease (its due
#: time the last parameter): one text, so a claim re-checks exactly what the read chose by
_CLAIMABLE_DUE = f"eligible = 1 AND lease_until IS NULL AND status IN {_ACTIVE_SQL} AND next_attempt_at <= ?"
#: literally the condition of the index of ordered queues' heads (``deliveries_queue_eligible``, schema
#: v9): an eligible row that holds its queue. Unordered rows are eligible without holding a queue.
_HEAD = "eligible = 1 AND holds = 1"
_SOURCES_SQL: dict[tuple[Status, frozenset[tuple[Status, Status]]], str] = {}


def _sources_sql(dst: Status) -> str:
    """``status_in(sources_of(dst))`` for the table as it is now (memoised per table content)."""
    key = (dst, frozenset(states.TRANSITIONS))
    sql = _SOURCES_SQL.get(key)
    if sql is None:
        sql = _SOURCES_SQL[key] = status_in(sources_of(dst))
    return sql




def latest_schema_version() -> int:
    """The schema version this code migrates a database to."""
    return migrations()[-1][0]


def migrations(dialect: str = "sqlite") -> list[tuple[int, str]]:
    """Numbered migrations of ``engine/migrations`` in order: ``NNNN_name.sql`` for SQLite,
    ``NNNN_name.pg.sql`` for PostgreSQL (same numbers: one schema version, two dialects)."""
    suffix = ".pg.sql" if dialect == "postgres" else ".sql"
    out = []
    for entry in resources.files("dispatchsim.engine.migrations").iterdir():
        name = entry.name
        if name.endswith(suffix) and name[:4].isdigit() and (dialect == "postgres" or not name.endswith(".pg.sql")):
            out.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(out)


class Claim(NamedTuple):
    """One leased attempt: what the dispatcher needs to send it and to finish it.

    An immutable record like a frozen dataclass, made a named tuple because one is built for every
    attempt: it costs about a third of a frozen dataclass's ``__init__`` (whose fields are set one
    ``object.__setattr__`` at a time), which was a measurable part of an attempt's own CPU."""

    delivery_id: int
    attempt_id: int
    number: int
    webhook_id: str
    activity_id: str | None  #: what is sent: the activity (seed payload) …
    batch_id: int | None  #: … or a batch of message events (a JSON array)
    config_id: str
    config_version: int
    queue: str
    budget_attempts: int
    budget_started_at: float
    lease_token: str
    #: when the attempt was due: the claim's time minus this is the dispatch lag
    due_at: float = 0.0
    #: when the attempt started (the claim's time): its row, written when it finishes, says so
    started_at: float = 0.0
    #: the activity as read with the claim, when the backend reads it there (PostgreSQL: one round trip
    #: less per attempt); None: the dispatcher reads it when it builds the request
    activity: StoredActivity | None = None


class AttemptResult(NamedTuple):
    """What one try produced, as stored on its attempt row (a named tuple for the reason
    :class:`Claim` is one)."""

    finished_at: float
    outcome: str
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    latency: float | None = None
    excerpt: str | None = None


class _Closed:
    """A closed store's connection: any use of it is one StoreError saying so (sqlite3's own error,
    "Cannot operate on a closed database", named neither the store nor what to do)."""

    def __getattr__(self, name: str) -> Any:
        raise StoreError("the database is closed: this engine (or store) was closed; open a new one")


class Store(QueryOps, ConsoleOps, StoreContract):
    """A dispatchsim database. The file is checked before it is opened (see ``store_file``): a
    hostile environment is one :class:`StoreError` and nothing is written. ``readonly`` opens an
    existing database without migrating or changing it (``dispatchsim status``).

    ``durable=False`` (``PRAGMA synchronous = OFF``) commits without waiting for the disk: for a
    simulation's throwaway database, where a commit's fsync cost more than the rest of the
    bookkeeping and a power cut loses nothing anyone keeps. A process that dies still loses no
    committed row (the operating system holds the written pages); the real-clock engine keeps the
    default, ``synchronous = NORMAL``.

    ``scratch=True`` (implies ``durable=False``): a file nobody keeps once the process is done with
    it (a scenario's temporary database), so its rollback journal is kept in memory instead of a
    write-ahead log: a commit writes each page it changed once, into the file, where the log wrote
    it twice (into the log, then into the file at a checkpoint); about a twentieth of a large
    simulation's CPU. The connection also keeps its lock on the file until it closes (``locking_mode
    = EXCLUSIVE``): no file locks taken and dropped around every transaction, about a twenty-fifth of
    a large simulation's CPU. The price is what nobody pays for a scratch file: a process that dies in
    the middle of a commit may leave the file damaged, and no second connection can read it until
    this one is closed."""

    def __init__(self, path: str | Path = ":memory:", *, readonly: bool = False, durable: bool = True,
                 scratch: bool = False) -> None:
        self.path = str(path)
        self.scratch = scratch
        memory = self.path == ":memory:"
        if not memory:
            store_file.check_file(self.path, write=not readonly)
        conn = store_file.connect(self.path, readonly=readonly and not memory)
        conn.row_factory = sqlite3.Row
        #: configurations as read (see :meth:`config`), valid while ``PRAGMA data_version`` says so
        self._configs: dict[str, Configuration | None] = {}
        self._configs_seen: int | None = None
        #: transactions begun on this connection, and (transaction, seq) of the activity inserted last
        #: in it: see :meth:`next_activity_seq`
        self._txs = 0
        self._last_activity: tuple[int, int] | None = None
        #: (transaction, queues) that a delivery inserted in that transaction holds: see :meth:`insert_delivery`
        self._held: tuple[int, set[str]] = (0, set())
        #: (transaction, total changes, latest time, rows by id) of the due reads inside a transaction since
        #: its last write: see :meth:`_claim_read`
        self._due: tuple[int, int, float, dict[int, tuple[Any, ...]]] | None = None
        self.conn = conn
        #: one cursor reused by the statements every finished attempt runs (see :meth:`_transition`): a
        #: cursor made per statement cost about as much again as a one-row update's own Python overhead
        self._cursor = conn.cursor()
        #: one cursor whose rows are plain tuples, for the reads of every attempt (an ``sqlite3.Row`` per row
        #: cost about 700 instructions more): a claim's due rows, its activities
        self._tuples = conn.cursor()
        self._tuples.row_factory = None
        #: the group commit under way in :meth:`finish_attempts` (None outside it)
        self._batch: _FinishBatch | None = None
        self.readonly = readonly
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            latest = latest_schema_version()
            version = store_file.check_schema(conn, self.path, latest=latest)
            if readonly:
                if version == 0:
                    raise StoreError(f"{self.path}: empty, not a dispatchsim database yet")
            else:
                if not memory:
                    store_file.check_writable(conn, self.path)
                    conn.execute("PRAGMA journal_mode = MEMORY" if scratch else "PRAGMA journal_mode = WAL")
                    if scratch:
                        # nobody else opens a scratch file while this connection lives: it keeps its lock
                        # instead of taking and dropping file locks around every transaction
                        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
                conn.execute("PRAGMA synchronous = NORMAL" if durable and not scratch else "PRAGMA synchronous = OFF")
                conn.execute("PRAGMA foreign_keys = ON")
                self.migrate()
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise store_file.damaged(self.path, exc) from None
        self._snapshots: dict[tuple[str, int], dict[str, Any]] = {}

    # -- plumbing -----------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the numbered migrations this file has not seen, each in its own transaction.

        Foreign keys are off while migrating (a migration may rebuild a referenced table, the
        SQLite way: new table, copy, drop, rename) and checked before each migration commits.
        """
        current = self.conn.execute("PRAGMA user_version").fetchone()[0]
        pending = [(n, sql) for n, sql in migrations() if n > current]
        if pending:
            self.conn.execute("PRAGMA foreign_keys = OFF")
            try:
                for number, sql in pending:
                    with self._tx():
                        for stmt in _split_sql(sql):
                            self.conn.execute(stmt)
                        broken = self.conn.execute("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise StoreError(f"{self.path}: migration {number:04d} would leave {len(broken)} broken"
                                             f" reference(s), first in table {broken[0][0]}; nothing was changed")
                        self.conn.execute(f"PRAGMA user_version = {number}")
                        store_file.mark_ours(self.conn)
                    current = number
            finally:
                self.conn.execute("PRAGMA foreign_keys = ON")
        if self.conn.execute("PRAGMA application_id").fetchone()[0] == 0:
            store_file.mark_ours(self.conn)  # a database made before the stamp existed
        return current

    @classmethod
    def check(cls, path: str | Path, *, write: bool) -> None:
        """Everything about a database file that can be checked without writing to it: where it is,
        what it is (SQLite, ours, not newer, not damaged) and, with ``write``, that it can be
        written. A ``StoreError`` names the problem in one line."""
        store_file.check_file(path, write=write)
        if Path(path).exists() and Path(path).stat().st_size:
            probe = cls(path, readonly=True)
            try:
                store_file.check_integrity(probe.conn, probe.path)
            finally:
                probe.conn.close()

    async def schema_version(self) -> int:
        """The migration number this file is at (SQLite ``user_version``)."""
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    async def latest_time(self) -> float | None:
        row = self.conn.execute(latest_time_query()).fetchone()
        return None if row[0] is None else float(row[0])

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (nested calls join the outer one); the operations awaited inside it
        run synchronously on this connection, so no other task's statement can slip into it."""
        with self._tx() as conn:
            yield conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """The transaction of :meth:`tx` for the store's own statements (sync: SQLite answers at once)."""
        if self.conn.in_transaction:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._txs += 1
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            self._configs.clear()  # what was read inside the transaction may be undone
            if self.conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                self.conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close the connection; the store must not be used afterwards.

        A scratch file's lock is given back first: a connection whose statements are not all finalized
        yet (a cursor still referenced somewhere) is closed only once they are, and until then it
        would keep the lock it holds for its whole life (a simulated crash reopens the file at once)."""
        if isinstance(self.conn, _Closed):
            return  # closed already: closing again does nothing
        if self.scratch and not self.conn.in_transaction:
            try:
                self.conn.execute("PRAGMA locking_mode = NORMAL")
                self.conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # ends the lock
            except sqlite3.Error:
                pass  # closing anyway; the lock goes with the connection
        self._cursor.close()
        self._tuples.close()
        self.conn.close()
        self.conn = self._cursor = self._tuples = _Closed()  # type: ignore[assignment]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    # -- tenants and providers ----------------------------------------------------------

    async def add_tenant(self, tenant_id: str, name: str, now: float) -> bool:
        """Insert a tenant row; False when the id is taken."""
        with self._tx() as c:
            return c.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                             (tenant_id, name, now)).rowcount == 1

    async def add_provider(self, provider_id: str, name: str, now: float) -> bool:
        """Insert a provider row; False when the id is taken."""
        with self._tx() as c:
            return c.execute("INSERT INTO providers (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                             (provider_id, name, now)).rowcount == 1

    async def tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, or None."""
        row = self._one(f"SELECT {_TENANT} FROM tenants WHERE id = ?", (tenant_id,))
        return Tenant(*row) if row else None

    async def provider(self, provider_id: str) -> Provider | None:
        """The provider with this id, or None."""
        row = self._one(f"SELECT {_PROVIDER} FROM providers WHERE id = ?", (provider_id,))
        return Provider(*row) if row else None

    async def tenants(self) -> list[Tenant]:
        """Every tenant, by id."""
        return [Tenant(*r) for r in self.conn.execute(f"SELECT {_TENANT} FROM tenants ORDER BY id")]

    async def providers(self) -> list[Provider]:
        """Every provider, by id."""
        return [Provider(*r) for r in self.conn.execute(f"SELECT {_PROVIDER} FROM providers ORDER BY id")]

    # -- configurations -----------------------------------------------------------------

    async def insert_config(self, config_id: str, tenant_id: str, provider_id: str | None, channel: str | None,
                      snapshot: dict[str, Any], now: float, *, kind: ConfigKind = ConfigKind.ACTIVITIES) -> None:
        """Create a configuration at version 1, inactive, with its first snapshot, in one transaction."""
        self._configs.clear()
        with self._tx() as c:
            c.execute(
                "INSERT INTO configurations (id, kind, tenant_id, provider_id, channel, version, active, deleted,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 0, 0, ?, ?)",
                (config_id, kind.value, tenant_id, provider_id, channel, now, now))
            c.execute("INSERT INTO config_versions (config_id, version, snapshot, created_at) VALUES (?, 1, ?, ?)",
                      (config_id, _dumps(snapshot), now))

    async def new_config_version(self, config_id: str, snapshot: dict[str, Any], now: float) -> int:
        """Store a new snapshot of a configuration and make it current; returns the new version.

        Raises NotFound when the configuration does not exist or was deleted. Deliveries already
        created keep the version they were created with.
        """
        self._configs.clear()
        with self._tx() as c:
            row = c.execute("SELECT version FROM configurations WHERE id = ? AND deleted = 0", (config_id,)).fetchone()
            if row is None:
                raise NotFound(f"configuration {config_id!r} not found")
            version = row["version"] + 1
            c.execute("INSERT INTO config_versions (config_id, version, snapshot, created_at) VALUES (?, ?, ?, ?)",
                      (config_id, version, _dumps(snapshot), now))
            c.execute("UPDATE configurations SET version = ?, updated_at = ? WHERE id = ?", (version, now, config_id))
        return version

    async def set_config_active(self, config_id: str, active: bool, now: float, reason: str | None = None) -> None:
        """Activate or deactivate a configuration (``reason`` is kept while inactive).

        Raises NotFound when it does not exist or was deleted.
        """
        self._configs.clear()
        cur = self.conn.execute(
            "UPDATE configurations SET active = ?, inactive_reason = ?, inactive_since = ?, updated_at = ?"
            " WHERE id = ? AND deleted = 0",
            (1 if active else 0, None if active else reason, None if active else now, now, config_id))
        if cur.rowcount != 1:
            raise NotFound(f"configuration {config_id!r} not found")

    async def delete_config(self, config_id: str, now: float) -> None:
        """Mark a configuration deleted and inactive; its history stays. NotFound when already gone."""
        self._configs.clear()
        cur = self.conn.execute(
            "UPDATE configurations SET deleted = 1, active = 0, inactive_reason = 'deleted', updated_at = ?"
            " WHERE id = ? AND deleted = 0", (now, config_id))
        if cur.rowcount != 1:
            raise NotFound(f"configuration {config_id!r} not found")

    async def config(self, config_id: str) -> Configuration | None:
        """The configuration, deleted ones included (``deleted`` says so).

        Every dispatch cycle and group commit asks for the configurations it works with, which
        change rarely: answers are kept until this store changes a configuration, a transaction rolls
        back, or another connection commits anything (``PRAGMA data_version``, one cheap statement)."""
        seen = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if seen != self._configs_seen:
            self._configs.clear()
            self._configs_seen = seen
        if config_id in self._configs:
            return self._configs[config_id]
        row = self._one(f"SELECT {_CONFIG} FROM configurations WHERE id = ?", (config_id,))
        cfg = self._configs[config_id] = Configuration.from_row(row) if row else None
        return cfg

    async def configs(self, tenant_id: str | None = None, *,
                kind: ConfigKind | None = ConfigKind.ACTIVITIES) -> list[Configuration]:
        """Configurations not deleted, oldest first; of one ``kind`` (``None``: every kind)."""
        where, params = ["deleted = 0"], []
        for clause, val in (("tenant_id = ?", tenant_id), ("kind = ?", kind.value if kind else None)):
            if val is not None:
                where.append(clause)
                params.append(val)
        rows = self.conn.execute(f"SELECT {_CONFIG} FROM configurations WHERE " + " AND ".join(where)
                                 + " ORDER BY created_at, id", params)
        return [Configuration.from_row(r) for r in rows]

    async def snapshot(self, config_id: str, version: int) -> dict[str, Any]:
        """The immutable snapshot of one configuration version (cached: versions never change)."""
        key = (config_id, version)
        snap = self._snapshots.get(key)
        if snap is None:
            row = self._one("SELECT snapshot FROM config_versions WHERE config_id = ? AND version = ?", key)
            if row is None:
                raise NotFound(f"configuration {config_id!r} version {version} not found")
            snap = self._snapshots[key] = json.loads(row["snapshot"])
        return snap

    async def active_configs(self, tenant_id: str, channel: str) -> list[tuple[str, int]]:
        """(id, current version) of the active configurations a new activity fans out to, oldest first."""
        rows = self.conn.execute(
            "SELECT id, version FROM configurations WHERE tenant_id = ? AND channel = ? AND active = 1"
            " AND deleted = 0 ORDER BY created_at, id", (tenant_id, channel))
        return [(r[0], r[1]) for r in rows]

    # -- activities and deliveries ------------------------------------------------------

    async def next_activity_seq(self) -> int:
        """The sequence number the next activity will get. Right after an activity was inserted in the
        same transaction it is that activity's plus one, with no query: an IMMEDIATE transaction
        writes alone and a new row's ``seq`` is above every other's, so ``MAX(seq) + 1`` would say
        the same (a burst of 10,000 created in one transaction asked 10,000 times)."""
        last = self._last_activity
        if last is not None and last[0] == self._txs and self.conn.in_transaction:
            return last[1] + 1
        return await super().next_activity_seq()

    async def insert_activity(self, activity_id: str, tenant_id: str, typ: str, channel: str,
                        payload: dict[str, Any], now: float) -> None:
        """Insert an activity row (its deliveries are created separately, in the same transaction)."""
        await self.insert_activities([NewActivity(activity_id, tenant_id, typ, channel, payload)], now)

    async def insert_activities(self, activities: Sequence[NewActivity], now: float) -> None:
        """Several activities in one statement per :data:`_INSERT_CHUNK` rows: a burst of 10,000 made
        10,000 statements."""
        cur = None
        for at in range(0, len(activities), _INSERT_CHUNK):
            chunk = activities[at:at + _INSERT_CHUNK]
            cur = self.conn.execute(
                "INSERT INTO activities (id, tenant_id, type, channel, payload, created_at) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)),
                [v for a in chunk for v in (a.activity_id, a.tenant_id, a.typ, a.channel, _dumps(a.payload), now)])
        if cur is not None and self.conn.in_transaction:
            self._last_activity = (self._txs, cur.lastrowid)  # the last row's: see next_activity_seq

    async def insert_delivery(self, *, webhook_id: str, config_id: str, config_version: int, queue: str, ordered: bool,
                        now: float, activity_id: str | None = None, batch_id: int | None = None) -> int:
        """A new READY delivery of an activity or of a batch of message events, at the tail of its
        queue (it is the head only if nothing holds the queue)."""
        return (await self.insert_deliveries([NewDelivery(
            webhook_id=webhook_id, config_id=config_id, config_version=config_version, queue=queue, ordered=ordered,
            activity_id=activity_id, batch_id=batch_id)], now))[0]

    async def insert_deliveries(self, deliveries: Sequence[NewDelivery], now: float) -> list[int]:
        """New READY deliveries, each at the tail of its queue (the head only if nothing holds the queue,
        nor an earlier one of them), in one statement per :data:`_INSERT_CHUNK` rows."""
        # a queue that a delivery inserted earlier in this transaction holds is held: no query (a burst
        # of 2,500 activities asked 2,500 times); a status change in the transaction forgets them all
        txn, held = self._held
        if txn != self._txs or not self.conn.in_transaction:
            held = set()
            self._held = (self._txs, held)
        holding: set[str] = set()  # ordered queues these deliveries hold
        rows: list[tuple[Any, ...]] = []
        for d in deliveries:
            holds, eligible = 0, 1
            if d.ordered:
                holds = 1
                if d.queue in held or d.queue in holding or self._one(
                        "SELECT 1 FROM deliveries WHERE queue = ? AND holds = 1 LIMIT 1", (d.queue,)):
                    eligible = 0
                holding.add(d.queue)
            rows.append((d.webhook_id, d.activity_id, d.batch_id, d.config_id, d.config_version, d.queue,
                         Status.READY.value, holds, eligible, now, now, now, now))
        ids: dict[str, int] = {}
        for at in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[at:at + _INSERT_CHUNK]
            ids.update((r[1], r[0]) for r in self.conn.execute(
                "INSERT INTO deliveries (webhook_id, activity_id, batch_id, config_id, config_version, queue, status,"
                " holds, eligible, budget_started_at, next_attempt_at, created_at, updated_at) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)) + " RETURNING id, webhook_id",
                [v for r in chunk for v in r]).fetchall())
        if self.conn.in_transaction:
            held |= holding
        return [ids[d.webhook_id] for d in deliveries]  # webhook ids are unique: the rows' order is not promised

    async def activity(self, activity_id: str) -> Activity:
        """The activity; ``to_json()`` gives what the API returns and what is dispatched (seed shape)."""
        row = self._one(
            "SELECT seq, id, tenant_id, type, channel, payload, result, created_at, EXISTS (SELECT 1 FROM"
            " deliveries d WHERE d.activity_id = a.id AND d.status = ?) FROM activities a WHERE a.id = ?",
            (Status.FAILED.value, activity_id))
        if row is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return Activity.from_row(row)

    async def activity_body(self, activity_id: str) -> bytes:
        """What a delivery of the activity without a mapping POSTs: its seed-shaped JSON, byte for byte
        ``encode_body(activity.to_json())``, made from the stored text without decoding it."""
        row = self._one(
            "SELECT payload, result, EXISTS (SELECT 1 FROM deliveries d WHERE d.activity_id = a.id AND d.status = ?)"
            " FROM activities a WHERE a.id = ?", (Status.FAILED.value, activity_id))
        if row is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return rendered_body(row[0], can_force_retry=bool(row[2]), result=row[1])

    async def stored_activities(self, activity_ids: Sequence[str]) -> dict[str, StoredActivity]:
        """What deliveries of these activities send, as stored: one statement per
        :data:`_READ_CHUNK` ids instead of one per attempt."""
        ids = list(dict.fromkeys(activity_ids))
        out: dict[str, StoredActivity] = {}
        for at in range(0, len(ids), _READ_CHUNK):
            chunk = ids[at:at + _READ_CHUNK]
            # whether any delivery is FAILED is asked once per statement (an uncorrelated subquery, one
            # index probe): while none is, no activity's deliveries are looked up for it; the texts are
            # read as their UTF-8 bytes, which the body is spliced from (no decoding, no encoding)
            for row in self._tuples.execute(
                    "SELECT id, CAST(payload AS BLOB), CAST(result AS BLOB), CASE WHEN (SELECT 1 FROM deliveries WHERE status = ?1 LIMIT 1)"
                    " IS NULL THEN 0 ELSE EXISTS (SELECT 1 FROM deliveries d WHERE d.activity_id = a.id AND"
                    f" d.status = ?1) END FROM activities a WHERE a.id IN ({', '.join('?' * len(chunk))})",
                    (Status.FAILED.value, *chunk)):
                out[row[0]] = _NEW(StoredActivity, (row[1], row[2], bool(row[3])))  # see _claim
        return out

    async def batch_events(self, batch_id: int) -> list[dict[str, Any]]:
        """The events of one batch in arrival order: the JSON array its delivery sends."""
        return [json.loads(r["payload"]) for r in self.conn.execute(
            "SELECT payload FROM message_events WHERE batch_id = ? ORDER BY seq", (batch_id,))]

    async def set_result(self, activity_id: str, result: Any) -> Any | None:
        """Store the activity's result unless it has one: returns None when stored, else the result it has.

        The guard is in the UPDATE, so two concurrent submissions cannot both win.
        """
        with self._tx() as c:
            cur = c.execute("UPDATE activities SET result = ? WHERE id = ? AND result IS NULL",
                            (_dumps(result), activity_id))
            if cur.rowcount == 1:
                return None
            row = c.execute("SELECT result FROM activities WHERE id = ?", (activity_id,)).fetchone()
        if row is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return json.loads(row[0])

    async def delivery(self, delivery_id: int) -> Delivery:
        """One delivery; NotFound when the id is unknown."""
        row = self._one(f"SELECT {_DELIVERY} FROM deliveries WHERE id = ?", (delivery_id,))
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return Delivery.from_row(row)

    async def deliveries(self, *, activity_id: str | None = None, config_id: str | None = None,
                   status: Status | str | None = None, queue: str | None = None,
                   after_id: int = 0, limit: int | None = None) -> list[Delivery]:
        """Deliveries matching every given filter, in id order, ``limit`` at a time after ``after_id``."""
        sql, params = deliveries_query(_DELIVERY, "?", activity_id=activity_id, config_id=config_id, status=status,
                                       queue=queue, after_id=after_id, limit=limit)
        return [Delivery.from_row(r) for r in self.conn.execute(sql, params)]

    async def attempts(self, delivery_id: int | None = None) -> list[Attempt]:
        """Attempts in id order: of one delivery, or all."""
        if delivery_id is None:
            return [Attempt.from_row(r) for r in self.conn.execute(attempts_query(_ATTEMPT))]
        return [Attempt.from_row(r) for r in self.conn.execute(attempts_query(_ATTEMPT, "delivery_id = ?"),
                                                               (delivery_id, delivery_id))]

    def _rows(self, table: str, cols: str, column: str, value: Any) -> list[sqlite3.Row]:
        """All rows of ``table`` in id order, or those whose ``column`` equals ``value`` (when not None)."""
        if value is None:
            return self.conn.execute(f"SELECT {cols} FROM {table} ORDER BY id").fetchall()
        return self.conn.execute(f"SELECT {cols} FROM {table} WHERE {column} = ? ORDER BY id", (value,)).fetchall()

    async def counts(self) -> dict[str, int]:
        """Number of deliveries per status; every status is present, zero included."""
        out = {s.value: 0 for s in Status}
        for row in self.conn.execute("SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status"):
            out[row["status"]] = row["n"]
        return out

    # -- the dispatch cycle -------------------------------------------------------------

    async def due_candidates(self, now: float, limit: int, *, exclude_configs: Sequence[str] = (),
                             skip_paused: bool = False) -> list[tuple[int, str, int]]:
        """(delivery id, config id, config version) of claimable deliveries (queue heads and unordered
        deliveries) due by ``now``, earliest first; ``skip_paused``: not those of paused configurations."""
        if exclude_configs and not self._any_config_left(exclude_configs, active=skip_paused):
            return []
        excl = ""
        params: list[Any] = [now]
        if exclude_configs:
            excl = " AND config_id NOT IN (" + ",".join("?" * len(exclude_configs)) + ")"
            params.extend(exclude_configs)
        if skip_paused:
            excl += " AND config_id NOT IN (SELECT id FROM configurations WHERE active = 0)"
        params.append(limit)
        if self.conn.in_transaction:
            # a group commit's refill: the claim that follows in this transaction takes its rows from this
            # read (see _claim_read), so it reads what the claim would read back
            rows = self._read_for_claim(f"SELECT {_CLAIMED} FROM deliveries INDEXED BY deliveries_due WHERE"
                                        f" {_CLAIMABLE_DUE}{excl} ORDER BY next_attempt_at, id LIMIT ?", params, now)
            return [(r[0], r[4], r[5]) for r in rows]
        rows = self.conn.execute(
            "SELECT id, config_id, config_version FROM deliveries INDEXED BY deliveries_due"
            f" WHERE {_CLAIMABLE_DUE}{excl}"
            " ORDER BY next_attempt_at, id LIMIT ?", params)
        return [(r[0], r[1], r[2]) for r in rows]

    async def queue_head(self, queue: str, now: float) -> tuple[int, str, int] | None:
        """(delivery id, config id, config version) of the claimable delivery of ``queue`` due by ``now``."""
        where = (" FROM deliveries INDEXED BY deliveries_queue_eligible"
                 f" WHERE queue = ? AND {_HEAD} AND {_CLAIMABLE_DUE}")
        if self.conn.in_transaction:  # a group commit claiming its queues' next heads: see due_candidates
            rows = self._read_for_claim(f"SELECT {_CLAIMED}{where} ORDER BY id LIMIT 1", (queue, now), now)
            return (rows[0][0], rows[0][4], rows[0][5]) if rows else None
        row = self._one(f"SELECT id, config_id, config_version{where} ORDER BY id LIMIT 1", (queue, now))
        return (row[0], row[1], row[2]) if row else None

    def _read_for_claim(self, sql: str, params: Sequence[Any], now: float) -> list[tuple[Any, ...]]:
        """The claimable rows ``sql`` reads (their :data:`_CLAIMED` columns), kept for a claim later in this
        transaction (see :meth:`_claim_read`) with those read since its last write."""
        rows = self._tuples.execute(sql, params).fetchall()
        due, txn, changes = self._due, self._txs, self.conn.total_changes
        if due is not None and due[0] == txn and due[1] == changes:
            due[3].update((r[0], r) for r in rows)
            self._due = (txn, changes, max(due[2], now), due[3])
        else:
            self._due = (txn, changes, now, {r[0]: r for r in rows})
        return rows

    async def claim(self, leases: Sequence[tuple[int, float]], *, token: str, now: float,
                    limit: int | None = None) -> list[Claim]:
        """Lease the given (delivery id, lease_until) pairs and open an attempt row for each; with
        ``limit``, only the first ``limit`` of them (in the order given) that are still claimable.

        The UPDATE re-checks claimability, so a row taken meanwhile is simply skipped. A few leases
        take two statements each; more take two statements per chunk (the leases in one UPDATE, the
        attempts in one INSERT, their rows and so their ids in the order of ``leases``), which costs
        more for one lease and less from about four on."""
        rest = list(first_leases(leases).items())
        claims: list[Claim] = []
        with self._tx() as c:
            while rest and (limit is None or len(claims) < limit):
                # the next leases as many as still wanted; those skipped are replaced by the ones after them
                cut = len(rest) if limit is None else limit - len(claims)
                first, rest = rest[:cut], rest[cut:]
                claims.extend(self._claim_rows(c, first, token, now))
        return claims

    def _claim_rows(self, c: sqlite3.Connection, first: list[tuple[int, float]], token: str, now: float) -> list[Claim]:
        """:meth:`claim`'s statements for these leases, in their transaction.

        No attempt row is written: the lease notes on the delivery's row the id its attempt's row
        will have (``lease_attempt``) and when it started, and the finish writes the row with its
        outcome (schema v10). The ids are reserved from the attempts' AUTOINCREMENT sequence in the
        order of the leases taken, as the INSERT that opened the rows numbered them, so they are what
        they were; a row inserted meanwhile without an id (a replay) is numbered after them."""
        claims: list[Claim] = []
        last = c.execute(_SEQUENCE_SQL).fetchone()[0]
        due, self._due = self._due, None
        if (due is not None and due[0] == self._txs and due[1] == c.total_changes and due[2] <= now
                and c.in_transaction and all(did in due[3] for did, _ in first)):
            return self._claim_read(c, first, due[3], last, token, now)
        if len(first) < _CLAIM_TOGETHER:
            for did, until in first:
                row = c.execute(
                    "UPDATE deliveries SET lease_until = ?, lease_token = ?, attempts = attempts + 1, updated_at = ?,"
                    f" lease_attempt = ?, lease_started_at = ? WHERE id = ? AND {_CLAIMABLE_DUE} RETURNING {_CLAIMED}",
                    (until, token, now, last + 1, now, did, now)).fetchone()
                if row is not None:
                    last += 1
                    claims.append(_claim(row, last, token, now))
        else:
            for at in range(0, len(first), _CLAIM_CHUNK):
                chunk = first[at:at + _CLAIM_CHUNK]
                # each lease's attempt id by its place in the chunk; renumbered below if some were not taken
                rows = {r[0]: r for r in c.execute(
                    "UPDATE deliveries SET lease_until = l.column2, lease_token = ?, attempts = attempts + 1,"
                    f" updated_at = ?, lease_attempt = ? + l.column3, lease_started_at = ?"
                    f" FROM (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}) AS l"
                    f" WHERE deliveries.id = l.column1 AND {_CLAIMABLE_DUE} RETURNING {_CLAIMED}",
                    (token, now, last, now, *(v for i, (did, until) in enumerate(chunk, 1) for v in (did, until, i)),
                     now)).fetchall()}
                taken = [rows[did] for did, _ in chunk if did in rows]
                if len(taken) < len(chunk):  # ids without gaps, in the order of the leases taken
                    c.executemany("UPDATE deliveries SET lease_attempt = ? WHERE id = ?",
                                  [(last + i, r[0]) for i, r in enumerate(taken, 1)])
                claims.extend(_claim(r, last + i, token, now) for i, r in enumerate(taken, 1))
                last += len(taken)
        if claims:
            c.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'attempts'", (last,))
        return claims

    def _claim_read(self, c: sqlite3.Connection, first: list[tuple[int, float]], read: dict[int, tuple[Any, ...]],
                    last: int, token: str, now: float) -> list[Claim]:
        """:meth:`_claim_rows` for leases of deliveries the due reads of this same transaction returned
        (:meth:`due_candidates`, :meth:`queue_head`), nothing written since on this connection, and no other
        connection can write while it lasts (IMMEDIATE): each is claimable still, so each is leased, and its claim is
        made from the row read (the lease adds one to ``attempts``), without reading it back. The
        statements are :meth:`_claim_rows`' without their ``RETURNING``, whose rows (a temporary
        B-tree, then one step and eleven values per lease) cost about 18,500 instructions per lease."""
        if len(first) < _CLAIM_TOGETHER:
            taken = 0
            for i, (did, until) in enumerate(first, 1):
                taken += c.execute(
                    "UPDATE deliveries SET lease_until = ?, lease_token = ?, attempts = attempts + 1, updated_at = ?,"
                    f" lease_attempt = ?, lease_started_at = ? WHERE id = ? AND {_CLAIMABLE_DUE}",
                    (until, token, now, last + i, now, did, now)).rowcount
        else:
            taken = 0
            for at in range(0, len(first), _CLAIM_CHUNK):
                chunk = first[at:at + _CLAIM_CHUNK]
                taken += c.execute(
                    "UPDATE deliveries SET lease_until = l.column2, lease_token = ?, attempts = attempts + 1,"
                    f" updated_at = ?, lease_attempt = ? + l.column3, lease_started_at = ?"
                    f" FROM (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}) AS l"
                    f" WHERE deliveries.id = l.column1 AND {_CLAIMABLE_DUE}",
                    (token, now, last + at, now,
                     *(v for i, (did, until) in enumerate(chunk, 1) for v in (did, until, i)), now)).rowcount
        if taken != len(first):  # cannot be (see above): never claims made up from rows that changed
            raise StoreError(f"claim: {len(first) - taken} of {len(first)} deliveries read for it in this transaction"
                             " changed before it")
        c.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'attempts'", (last + len(first),))
        return [_claim(read[did], last + i, token, now, 1) for i, (did, _) in enumerate(first, 1)]

    def _record(self, claim: Claim, res: AttemptResult, next_at: float | None) -> None:
        params = (claim.attempt_id, claim.delivery_id, claim.number, claim.started_at, claim.config_id, res.finished_at,
                  res.outcome, res.status_code, res.error, res.retry_after, res.latency, res.excerpt, next_at)
        if self._batch is not None:
            self._batch.records.append(params)  # written together as the group commit's loop ends
        else:
            self._cursor.execute(_RECORD_SQL, params)

    def _transition(self, c: sqlite3.Connection, claim: Claim, res: AttemptResult, next_at: float | None,
                    dst: Status, sets: str, params: Sequence[Any]) -> bool:
        """Record the claim's attempt and move its delivery to ``dst`` (and ``sets``), releasing the
        lease, if the transition table allows ``dst`` from the current status: both or neither.

        False, nothing written: the lease was lost meanwhile (it expired and the delivery went
        again, its stale attempt marked INTERRUPTED), so this late outcome must not overwrite what the
        current holder records. InvalidTransition: the table refuses the change while the lease is
        still ours; the attempt is recorded (it happened), the status and the lease stay."""
        self._held[1].clear()  # it may release its queue (see insert_delivery)
        batch = self._batch
        # keyed by the member's value, a plain str (an Enum member's hash and its ``value`` are Python calls),
        # which is written into the statement's text rather than bound, as its sources are
        key = (dst._value_, sets)
        sql = None if batch is None else batch.statements.get(key)
        if sql is None:
            sql = (f"UPDATE deliveries SET status = '{dst._value_}', lease_until = NULL, lease_token = NULL, {sets}"
                   f" WHERE id = ? AND lease_token = ? AND status IN {_sources_sql(dst)}")
            if batch is not None:
                batch.statements[key] = sql
        cur = self._cursor.execute(sql, (*params, claim.delivery_id, claim.lease_token))
        if cur.rowcount == 1:
            self._record(claim, res, next_at)
            return True
        row = c.execute("SELECT status, lease_token FROM deliveries WHERE id = ?", (claim.delivery_id,)).fetchone()
        if row is not None and row["lease_token"] == claim.lease_token:
            self._record(claim, res, next_at)
            raise InvalidTransition(f"delivery {claim.delivery_id} is {row['status']}; {row['status']} -> {dst} is not"
                                    " an allowed transition")
        return False

    async def mark_dispatched(self, claim: Claim, res: AttemptResult, *, ordered: bool) -> bool:
        """2xx: DISPATCHED, and the next delivery of an ordered queue becomes its head."""
        with self._tx() as c:
            return self._dispatched(c, claim, res, ordered)

    async def schedule_retry(self, claim: Claim, res: AttemptResult, next_at: float, error: str, *,
                             ordered: bool = False) -> bool:
        """A failed try with budget left: RETRYING until ``next_at``; it stays the head of its queue
        (see :meth:`StoreContract.schedule_retry`)."""
        with self._tx() as c:
            return self._retrying(c, claim, res, next_at, error, ordered)

    async def mark_failed(self, claim: Claim, res: AttemptResult, reason: str, error: str, *,
                    ordered: bool, block: bool) -> bool:
        """Budget exhausted or unfixable: FAILED. With ``block`` it keeps its queue waiting."""
        with self._tx() as c:
            return self._failed(c, claim, res, reason, error, ordered, block)

    async def finish_attempts(self, finishes: Sequence[Finish]) -> list[bool | InvalidTransition]:
        """The group commit: each attempt as :meth:`mark_dispatched`, :meth:`schedule_retry` or
        :meth:`mark_failed` records it, with the same statements, in one loop (not two coroutines
        and a nested transaction per attempt). The attempts' rows are written together at the end of
        the loop, in one multi-row ``INSERT`` per :data:`_INSERT_CHUNK` rows (each run of an ``INSERT``
        into an AUTOINCREMENT table reads and writes back its row of ``sqlite_sequence``: one row per
        statement, as ``executemany`` ran, cost about 10,000 instructions more per attempt; see
        :func:`_records_inserts` for their NULLs), each statement text is built once per call."""
        done: list[bool | InvalidTransition] = []
        with self._tx() as c:
            self._batch = batch = _FinishBatch({}, [])
            try:
                self._finish_each(c, finishes, done)
                for sql, params in _records_inserts(batch.records):
                    self._cursor.execute(sql, params)
            finally:
                self._batch = None
        return done

    def _finish_each(self, c: sqlite3.Connection, finishes: Sequence[Finish],
                     done: list[bool | InvalidTransition]) -> None:
        """:meth:`finish_attempts`' loop: each finish's outcome (or refusal) appended to ``done``."""
        for f in finishes:
            try:
                if f.status is Status.DISPATCHED:
                    done.append(self._dispatched(c, f.claim, f.result, f.ordered))
                elif f.status is Status.RETRYING:
                    assert f.next_at is not None
                    done.append(self._retrying(c, f.claim, f.result, f.next_at, f.error, f.ordered))
                else:
                    done.append(self._failed(c, f.claim, f.result, f.reason, f.error, f.ordered, f.block))
            except InvalidTransition as exc:
                done.append(exc)

    def _dispatched(self, c: sqlite3.Connection, claim: Claim, res: AttemptResult, ordered: bool) -> bool:
        if not self._transition(c, claim, res, None, Status.DISPATCHED,
                                "holds = 0, eligible = 0, budget_attempts = budget_attempts + 1, dispatched_at = ?,"
                                " last_error = NULL, updated_at = ?", (res.finished_at, res.finished_at)):
            return False
        if ordered:
            self._promote(c, claim.queue, res.finished_at)
        return True

    def _retrying(self, c: sqlite3.Connection, claim: Claim, res: AttemptResult, next_at: float, error: str,
                  ordered: bool) -> bool:
        if not self._transition(c, claim, res, next_at, Status.RETRYING,
                                "budget_attempts = budget_attempts + 1, next_attempt_at = ?, last_error = ?,"
                                " updated_at = ?", (next_at, error, res.finished_at)):
            return False
        if ordered:  # an earlier delivery force-retried while this attempt was in flight is the head now
            self._promote(c, claim.queue, res.finished_at)
        return True

    def _failed(self, c: sqlite3.Connection, claim: Claim, res: AttemptResult, reason: str, error: str,
                ordered: bool, block: bool) -> bool:
        holds = 1 if (ordered and block) else 0
        if not self._transition(c, claim, res, None, Status.FAILED,
                                "holds = ?, eligible = ?, budget_attempts = budget_attempts + 1, failed_reason = ?,"
                                " last_error = ?, updated_at = ?", (holds, holds, reason, error, res.finished_at)):
            return False
        if ordered and not block:
            self._promote(c, claim.queue, res.finished_at)
        return True

    def _promote(self, c: sqlite3.Connection, queue: str, now: float) -> None:
        """Make the earliest holder of ``queue`` its head, unless an attempt of the queue is in flight.

        Every other eligible holder of the queue stops being eligible, the head becomes eligible (its
        ``updated_at`` moves only when it was not the head already). Rows that do not hold the queue
        (unordered ones, of a configuration switched between ordering modes) are neither heads nor in
        its way (see :data:`_HEAD`). One statement reads the queue's eligible holders and its earliest
        holder (both by an index), and the rows that change are written by id, usually the new head
        alone: one ``UPDATE … FROM`` did it all, but SQLite built two temporary B-trees for it at every
        call (its FROM, then the rows to update), about 55,000 instructions per finished delivery of
        an ordered queue, more than the finish's own ``UPDATE``."""
        *eligible, head = self._cursor.execute(_PROMOTE_READ_SQL, (queue, queue)).fetchall() or [None]
        if head is None or any(leased for _, _, leased in eligible):
            return  # nothing holds the queue, or its head's attempt is in flight
        for did, _, _ in eligible:
            if did != head[0]:
                self._cursor.execute("UPDATE deliveries SET eligible = 0 WHERE id = ?", (did,))
        if not head[1]:
            self._cursor.execute("UPDATE deliveries SET eligible = 1, updated_at = ? WHERE id = ?", (now, head[0]))

    async def force_retry(self, delivery_id: int, now: float, *, ordered: bool,
                    config_version: int | None = None) -> Delivery:
        """FAILED -> READY with a fresh budget (and the given configuration version); the only way out of FAILED."""
        with self._tx() as c:
            if c.execute("SELECT 1 FROM deliveries d JOIN configurations c ON c.id = d.config_id"
                         " WHERE d.id = ? AND c.deleted = 1", (delivery_id,)).fetchone() is not None:
                raise ConfigDeleted(delivery_id)
            row = c.execute(
                "UPDATE deliveries SET status = ?, budget_attempts = 0, budget_started_at = ?,"
                " next_attempt_at = ?, failed_reason = NULL, holds = ?, eligible = ?, updated_at = ?,"
                " config_version = COALESCE(?, config_version)"
                f" WHERE id = ? AND status IN {_sources_sql(Status.READY)} RETURNING queue",
                (Status.READY.value, now, now, 1 if ordered else 0, 0 if ordered else 1, now, config_version,
                 delivery_id)).fetchone()
            if row is None:
                self._refuse(c, delivery_id, Status.READY)
            if ordered:
                self._promote(c, row["queue"], now)
        return await self.delivery(delivery_id)

    async def skip(self, delivery_id: int, now: float) -> Delivery:
        """Let a blocked queue move on past its FAILED head (the delivery stays FAILED)."""
        with self._tx() as c:
            self._held[1].clear()  # its queue may be released (see insert_delivery)
            row = c.execute(
                "UPDATE deliveries SET holds = 0, eligible = 0, updated_at = ? WHERE id = ? AND status = ?"
                " AND holds = 1 RETURNING queue", (now, delivery_id, Status.FAILED.value)).fetchone()
            if row is None:
                cur = c.execute("SELECT status, holds FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
                if cur is None:
                    raise NotFound(f"delivery {delivery_id} not found")
                raise InvalidTransition(f"delivery {delivery_id} is {cur['status']} and does not block its queue;"
                                        " only a FAILED head of a blocked queue can be skipped")
            self._promote(c, row["queue"], now)
        return await self.delivery(delivery_id)

    def _refuse(self, c: sqlite3.Connection, delivery_id: int, target: Status) -> None:
        cur = c.execute("SELECT status FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if cur is None:
            raise NotFound(f"delivery {delivery_id} not found")
        allowed_from = ", ".join(s.value for s in sources_of(target)) or "no status"
        raise InvalidTransition(f"delivery {delivery_id} is {cur['status']}; {cur['status']} -> {target} is not"
                                f" allowed (force retry applies to {allowed_from} deliveries only)")

    async def release_expired_leases(self, now: float) -> list[int]:
        """Attempts whose engine died: mark them INTERRUPTED and make the delivery due again now."""
        return await self.release_leases(now, ending_by=now,
                                         error="lease expired: the engine stopped during this attempt")

    async def release_leases(self, now: float, *, ending_by: float, error: str, owner: str | None = None) -> list[int]:
        """Leases ending by ``ending_by``: their open attempts become INTERRUPTED (with ``error``) and
        the deliveries are due again ``now``. A graceful stop passes ``ending_by=inf`` and its own
        ``owner`` (the engine instance that prefixes its lease tokens) to release the leases it
        abandoned at once, without waiting for them to expire, and nobody else's."""
        mine = "" if owner is None else " AND substr(lease_token, 1, ?) = ?"
        params: tuple[Any, ...] = (ending_by,) if owner is None else (ending_by, len(owner) + 1, owner + ":")
        if self._one("SELECT 1 FROM deliveries WHERE lease_until IS NOT NULL AND lease_until <= ?" + mine
                     + " LIMIT 1", params) is None:
            return []
        with self._tx() as c:
            rows = c.execute("SELECT id FROM deliveries WHERE lease_until IS NOT NULL AND lease_until <= ?" + mine,
                             params).fetchall()
            ids = [r["id"] for r in rows]
            for did in ids:
                c.execute(_INTERRUPTED_SQL, (now, error, did))
                c.execute("UPDATE deliveries SET lease_until = NULL, lease_token = NULL, next_attempt_at = ?,"
                          " updated_at = ? WHERE id = ?", (now, now, did))
        return ids

    async def next_wakeup(self, exclude_configs: Sequence[str] = ()) -> float | None:
        """Earliest moment something becomes claimable: a due time or a lease expiry."""
        excl = ""
        if exclude_configs:
            excl = " AND config_id NOT IN (" + ",".join("?" * len(exclude_configs)) + ")"
        due = None
        if not exclude_configs or self._any_config_left(exclude_configs, active=False):
            due = self._one("SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_due WHERE eligible = 1"
                            f" AND lease_until IS NULL AND status IN {_ACTIVE_SQL}{excl} ORDER BY next_attempt_at, id"
                            " LIMIT 1", tuple(exclude_configs))
        lease = self._one("SELECT MIN(lease_until) AS t FROM deliveries WHERE lease_until IS NOT NULL")
        times = [t for t in ((due["next_attempt_at"] if due else None), (lease["t"] if lease else None))
                 if t is not None]
        return min(times) if times else None

    def _any_config_left(self, exclude_configs: Sequence[str], *, active: bool) -> bool:
        """Whether a configuration (``active``: an active one) is not in ``exclude_configs``: when none
        is, a due read that leaves those out finds nothing, and is not run. Every delivery belongs to
        a configuration, so this changes no answer; without it, a read that leaves out the only
        configuration with due work (its attempts at its limit, or paused) walks the due index through
        all of that configuration's pending deliveries and finds none, at every dispatch cycle."""
        cond = "id NOT IN (" + ",".join("?" * len(exclude_configs)) + ")" + (" AND active = 1" if active else "")
        return self._one(f"SELECT 1 FROM configurations WHERE {cond} LIMIT 1", tuple(exclude_configs)) is not None

    async def paused_configs(self) -> list[str]:
        """Inactive or deleted configurations: their pending deliveries wait (nothing is sent)."""
        return [r[0] for r in self.conn.execute("SELECT id FROM configurations WHERE active = 0")]

    # -- endpoint health, notifications, recovery ----------------------------------------

    async def health_rows(self) -> list[EndpointHealth]:
        """The persisted endpoint health of every configuration that has one."""
        return [EndpointHealth.from_row(r) for r in
                self.conn.execute(f"SELECT {columns(EndpointHealth)} FROM endpoint_health ORDER BY config_id")]

    async def save_circuit(self, config_id: str, *, circuit: Circuit, circuit_until: float | None, now: float) -> None:
        """Persist the circuit breaker state of one configuration (upsert); the streak stays."""
        self.conn.execute(
            "INSERT INTO endpoint_health (config_id, circuit, circuit_until, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(config_id) DO UPDATE SET circuit = excluded.circuit, circuit_until = excluded.circuit_until,"
            " updated_at = excluded.updated_at", (config_id, circuit.value, circuit_until, now))

    async def count_outcome(self, config_id: str, *, ok: bool, now: float) -> Streak:
        """One outcome added to the failure streak (one statement, as on PostgreSQL)."""
        row = self.conn.execute(
            "INSERT INTO endpoint_health (config_id, consecutive_failures, failing_since, updated_at)"
            " VALUES (?1, CASE WHEN ?2 THEN 0 ELSE 1 END, CASE WHEN ?2 THEN NULL ELSE ?3 END, ?3)"
            " ON CONFLICT(config_id) DO UPDATE SET"
            " consecutive_failures = CASE WHEN ?2 THEN 0 ELSE consecutive_failures + 1 END,"
            " failing_since = CASE WHEN ?2 THEN NULL ELSE COALESCE(failing_since, ?3) END, updated_at = ?3"
            " RETURNING consecutive_failures, failing_since", (config_id, ok, now)).fetchone()
        return Streak(row[0], row[1])

    async def take_probe(self, config_id: str, *, now: float, until: float) -> bool:
        """The half-open probe taken until ``until`` when free (one conditional UPDATE)."""
        return self.conn.execute(
            "UPDATE endpoint_health SET circuit = ?, circuit_until = ?, updated_at = ? WHERE config_id = ?"
            " AND circuit IN (?, ?) AND COALESCE(circuit_until, 0) <= ?",
            (Circuit.HALF_OPEN.value, until, now, config_id, Circuit.OPEN.value, Circuit.HALF_OPEN.value,
             now)).rowcount == 1

    async def move_circuit(self, config_id: str, *, source: Circuit, circuit: Circuit, circuit_until: float | None,
                           now: float) -> EndpointHealth | None:
        """See the contract: an upsert whose update, like the plain update, holds only from ``source``."""
        values = (circuit.value, circuit_until, now, config_id, source.value)
        if source is Circuit.CLOSED:
            moved = self.conn.execute(
                "INSERT INTO endpoint_health (circuit, circuit_until, updated_at, config_id) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(config_id) DO UPDATE SET circuit = excluded.circuit,"
                " circuit_until = excluded.circuit_until, updated_at = excluded.updated_at"
                " WHERE endpoint_health.circuit = ?", values).rowcount
        else:
            moved = self.conn.execute("UPDATE endpoint_health SET circuit = ?, circuit_until = ?, updated_at = ?"
                                      " WHERE config_id = ? AND circuit = ?", values).rowcount
        if moved == 1:
            return None
        row = self.conn.execute(f"SELECT {columns(EndpointHealth)} FROM endpoint_health WHERE config_id = ?",
                                (config_id,)).fetchone()
        return EndpointHealth.from_row(row) if row else EndpointHealth(config_id, Circuit.CLOSED, None, 0, None, now)

    async def pause_if_active(self, config_id: str, now: float, reason: str) -> bool:
        self._configs.clear()
        return self.conn.execute(
            "UPDATE configurations SET active = 0, inactive_reason = ?, inactive_since = ?, updated_at = ?"
            " WHERE id = ? AND active = 1 AND deleted = 0", (reason, now, now, config_id)).rowcount == 1

    async def recent_outcomes(self, config_id: str, since: float, *,
                              exclude_attempt: int = 0) -> list[tuple[float, bool]]:
        """``(finished_at, ok)`` of the configuration's attempts since ``since``, oldest first.

        Replays, interrupted attempts and mapping errors are left out: they say nothing about the
        endpoint's health.
        """
        rows = self.conn.execute(
            "SELECT finished_at, outcome FROM attempts WHERE config_id = ? AND finished_at >= ? AND replay = 0"
            " AND outcome IS NOT NULL AND outcome NOT IN ('INTERRUPTED', 'MAPPING_ERROR') AND id != ?"
            " ORDER BY finished_at, id", (config_id, since, exclude_attempt))
        return [(r["finished_at"], r["outcome"] == "SUCCESS") for r in rows]

    async def add_notification(self, *, at: float, kind: str, config_id: str | None, message: str) -> int:
        """Record an operator notification (e.g. a configuration was auto-disabled); returns its id."""
        cur = self.conn.execute("INSERT INTO notifications (at, kind, config_id, message) VALUES (?, ?, ?, ?)",
                                (at, kind, config_id, message))
        return int(cur.lastrowid)

    async def set_notification_delivery(self, notification_id: int, delivery: str) -> None:
        """Record how the notification was delivered to the operator (or why it was not)."""
        self.conn.execute("UPDATE notifications SET delivery = ? WHERE id = ?", (delivery, notification_id))

    async def notifications(self, config_id: str | None = None) -> list[Notification]:
        """Notifications in id order: of one configuration, or all."""
        return [Notification(*r) for r in self._rows("notifications", _NOTIFICATION, "config_id", config_id)]

    async def failed_ids(self, *, config_id: str | None = None, since: float | None = None, until: float | None = None,
                   reason: str | None = None) -> list[int]:
        """FAILED deliveries matching a filter (creation time range, reason), in creation order."""
        where, params = ["status = ?"], [Status.FAILED.value]
        for clause, val in (("config_id = ?", config_id), ("created_at >= ?", since), ("created_at <= ?", until),
                            ("failed_reason = ?", reason)):
            if val is not None:
                where.append(clause)
                params.append(val)
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM deliveries WHERE " + " AND ".join(where) + " ORDER BY id", params)]

    async def start_replay(self, delivery_id: int, now: float) -> int:
        """Open a replay attempt of a DISPATCHED delivery; returns the attempt id.

        A replay re-sends a delivery without changing its status. NotFound for an unknown id,
        InvalidTransition for any other status.
        """
        with self._tx() as c:
            row = c.execute("SELECT config_id, (SELECT COALESCE(MAX(number), 0) + 1 FROM attempts"
                            " WHERE delivery_id = d.id) AS n FROM deliveries d WHERE id = ? AND status = ?",
                            (delivery_id, Status.DISPATCHED.value)).fetchone()
            if row is None:
                self._refuse_replay(c, delivery_id)
            cur = c.execute("INSERT INTO attempts (delivery_id, number, started_at, config_id, replay)"
                            " VALUES (?, ?, ?, ?, 1)", (delivery_id, row["n"], now, row["config_id"]))
            return int(cur.lastrowid)

    async def finish_replay(self, attempt_id: int, res: AttemptResult) -> None:
        """Record the outcome of a replay attempt opened by :meth:`start_replay`."""
        self.conn.execute(
            "UPDATE attempts SET finished_at = ?, outcome = ?, status_code = ?, error = ?, retry_after = ?,"
            " latency = ?, excerpt = ? WHERE id = ?",
            (res.finished_at, res.outcome, res.status_code, res.error, res.retry_after, res.latency, res.excerpt,
             attempt_id))

    def _refuse_replay(self, c: sqlite3.Connection, delivery_id: int) -> None:
        cur = c.execute("SELECT status FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if cur is None:
            raise NotFound(f"delivery {delivery_id} not found")
        raise InvalidTransition(f"delivery {delivery_id} is {cur['status']}; only a DISPATCHED delivery can be"
                                " replayed (use force retry for FAILED ones)")

    async def in_flight(self) -> int:
        """Number of deliveries holding a lease (an attempt started and not yet recorded)."""
        return self._one("SELECT COUNT(*) AS n FROM deliveries WHERE lease_until IS NOT NULL")["n"]


#: finished attempts' rows, each written once with its outcome (see :meth:`Store._record`): the statement's
#: head, then one :data:`_RECORD_ROW` per attempt joined by commas
_RECORDS_SQL = ("INSERT INTO attempts (id, delivery_id, number, started_at, config_id, finished_at, outcome,"
                " status_code, error, retry_after, latency, excerpt, next_attempt_at) VALUES ")
_RECORD_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_RECORD_SQL = _RECORDS_SQL + _RECORD_ROW
#: the places in an attempt's row (see :meth:`Store._record`) that are often None: status_code, error,
#: retry_after, latency, excerpt, next_attempt_at (a delivered attempt's row has three of them None)
_NULLABLE = (7, 8, 9, 10, 11, 12)


def _records_inserts(records: list[tuple[Any, ...]]) -> Iterator[tuple[str, list[Any]]]:
    """The multi-row ``INSERT``s (statement, parameters) that write these attempt rows, in their order: when
    every row has None in the same :data:`_NULLABLE` places (a group commit of delivered attempts: three
    each), those places are written as ``NULL`` in the statement's text, not bound. sqlite3 binds a None
    only after looking for an adapter for it (a tuple built, a dictionary and two attribute look-ups:
    about 3,300 instructions per None), where a literal costs nothing. Rows of different kinds are bound
    as they are, in one statement: rows written out of id order (grouped by kind) made the 10k run slower
    than the adapters did. The texts are few (one per kind and count, memoised), so they stay in the
    connection's statement cache."""
    kinds = {(r[7] is None, r[8] is None, r[9] is None, r[10] is None, r[11] is None, r[12] is None) for r in records}
    nulls = kinds.pop() if len(kinds) == 1 else _NO_NULLS
    bound = _bound_places(nulls)
    for at in range(0, len(records), _INSERT_CHUNK):
        chunk = records[at:at + _INSERT_CHUNK]
        yield _records_sql(nulls, len(chunk)), list(chain.from_iterable(map(bound, chunk)))


#: the kind of attempt row written with every value bound (see :func:`_records_inserts`)
_NO_NULLS = (False,) * 6


@functools.lru_cache(maxsize=64)
def _bound_places(nulls: tuple[bool, ...]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """The values of an attempt's row that are bound, given which :data:`_NULLABLE` places are None."""
    return itemgetter(*(i for i in range(13) if i not in _NULLABLE or not nulls[_NULLABLE.index(i)]))


@functools.lru_cache(maxsize=256)
def _records_sql(nulls: tuple[bool, ...], n: int) -> str:
    """The ``INSERT`` of ``n`` attempt rows with NULL written where ``nulls`` says (see :func:`_records_inserts`)."""
    row = "(" + ", ".join("NULL" if i in _NULLABLE and nulls[_NULLABLE.index(i)] else "?" for i in range(13)) + ")"
    return _RECORDS_SQL + ", ".join([row] * n)
#: the row of the attempt a lease ends without (the engine stopped or died during it), from what its delivery's
#: row holds; none when its outcome was recorded already (a refused transition keeps the lease)
_INTERRUPTED_SQL = ("INSERT INTO attempts (id, delivery_id, number, started_at, config_id, finished_at, outcome, error)"
                    " SELECT lease_attempt, id, attempts, lease_started_at, config_id, ?, 'INTERRUPTED', ? FROM deliveries"
                    " WHERE id = ? AND lease_attempt IS NOT NULL AND true ON CONFLICT (id) DO NOTHING")
#: what :meth:`Store._promote` decides from: (id, eligible, leased) of the queue's eligible holders, then of
#: its earliest holder, the head to be (a compound SELECT: no temporary B-tree, unlike a FROM or a two-pass UPDATE)
_PROMOTE_READ_SQL = (f"SELECT id, eligible, lease_until IS NOT NULL FROM deliveries WHERE queue = ? AND {_HEAD}"
                     " UNION ALL SELECT * FROM (SELECT id, eligible, lease_until IS NOT NULL FROM deliveries"
                     " WHERE queue = ? AND holds = 1 ORDER BY id LIMIT 1)")
#: the last attempt id given out: claims reserve the ids after it (see :meth:`Store._claim_rows`)
_SEQUENCE_SQL = "SELECT seq FROM sqlite_sequence WHERE name = 'attempts'"


@dataclass(slots=True)
class _FinishBatch:
    """One :meth:`Store.finish_attempts` call: the statement of each transition, built once (the
    transition table cannot change within the call), and the attempt rows it writes together."""

    statements: dict[tuple[str, str], str]
    records: list[tuple[Any, ...]]


#: builds a named tuple from its fields in order, without the Python call of its constructor (see :func:`_claim`)
_NEW = tuple.__new__
#: leases claimed per statement (four bound values each, far below SQLite's limit of 32,766)
_CLAIM_CHUNK = 500
#: ids read per statement by :meth:`Store.stored_activities`
_READ_CHUNK = 500
#: rows of one multi-row INSERT of activities or deliveries (13 bound values a delivery: far below the limit)
_INSERT_CHUNK = 500
#: from this many leases on, a claim leases them in one statement and opens their attempts in another
_CLAIM_TOGETHER = 4
#: what a claim reads back of each leased delivery (see :func:`_claim`)
_CLAIMED = ("id, webhook_id, activity_id, batch_id, config_id, config_version, queue, attempts, budget_attempts,"
            " budget_started_at, next_attempt_at")


def _claim(row: Sequence[Any], attempt_id: int, token: str, now: float, leases: int = 0) -> Claim:
    """A :class:`Claim` from a leased delivery's :data:`_CLAIMED` columns and its new attempt (``leases``: 1
    when the columns were read before the lease, which adds one to ``attempts``).

    Made with ``tuple.__new__`` and its fields in :class:`Claim`'s order (delivery_id, attempt_id, number,
    webhook_id, activity_id, batch_id, config_id, config_version, queue, budget_attempts,
    budget_started_at, lease_token, due_at, started_at, activity): a named tuple's own constructor is a
    Python function that takes its fields by keyword (timeit: 2.4 µs against 0.5 µs for
    Claim's 15 fields on the loaded machine)."""
    return _NEW(Claim, (row[0], attempt_id, row[7] + leases, row[1], row[2], row[3], row[4], row[5], row[6], row[8], row[9],
                        token, row[10], now, None))
_TENANT = columns(Tenant)
_PROVIDER = columns(Provider)
_CONFIG = columns(Configuration)
_DELIVERY = columns(Delivery)
_ATTEMPT = columns(Attempt)
_NOTIFICATION = columns(Notification)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (no semicolons inside our literals)."""
    stmts, buf = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("--") or not stripped:
            continue
        buf.append(line)
        if stripped.endswith(";"):
            stmts.append("\n".join(buf))
            buf = []
    if buf:
        stmts.append("\n".join(buf))
    return stmts
