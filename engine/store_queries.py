"""The store's read models and housekeeping for serve mode and the status report.

Filtered activity pages, ownership look-ups for authorisation, Prometheus aggregates, the
status report's summaries, API keys, retention and WAL checkpoints. They are named store
operations like the dispatch cycle's (``Store`` mixes them in), kept in their own module because
the dispatcher never calls them; nothing here changes a delivery's status.
"""
from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING

from .errors import NotFound
from .states import Status
from .store_rows import ApiKey, ConsoleSession, Notification, columns

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .events_store import EventsStore
    from .store_idempotency import IdempotencyStore

#: Buckets (seconds) of the attempt latency histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, kw_only=True)
class ActivityFilter:
    """Which activities a listing returns (all given conditions hold)."""

    tenant_id: str | None = None
    channel: str | None = None
    status: str | None = None  #: the payload's ``status`` (e.g. PENDING)
    dispatch_status: str | None = None  #: activities with at least one delivery in this status
    created_from: float | None = None  #: inclusive
    created_to: float | None = None  #: exclusive


@dataclass(frozen=True)
class Metrics:
    """The aggregates behind ``/metrics``."""

    deliveries: dict[str, int]
    attempts: dict[str, int]
    queue_depth: dict[str, int]  #: READY + RETRYING per queue
    latency_buckets: list[tuple[float, int]]
    latency_count: int
    latency_sum: float
    in_flight: int


class QueryOps:
    """Read models and housekeeping; mixed into ``Store``, which provides the connection."""

    conn: sqlite3.Connection
    path: str

    if TYPE_CHECKING:
        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...
        async def counts(self) -> dict[str, int]: ...
        async def in_flight(self) -> int: ...
        async def release_leases(self, now: float, *, ending_by: float, error: str,
                           owner: str | None = None) -> list[int]: ...

    async def ping(self) -> None:
        """A round trip to the database (health checks)."""
        self.conn.execute("SELECT 1").fetchone()

    # -- activities -----------------------------------------------------------------------

    async def next_activity_seq(self) -> int:
        """The sequence number the next activity will get (deterministic ids derive from it)."""
        return int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM activities").fetchone()[0])

    async def activity_ids(self) -> list[str]:
        """Every activity id, in creation order."""
        return [r[0] for r in self.conn.execute("SELECT id FROM activities ORDER BY seq")]

    async def activity_page(self, f: ActivityFilter, *, after_seq: int = 0, limit: int = 100) -> list[tuple[int, str]]:
        """(seq, id) of up to ``limit`` activities matching ``f`` after ``after_seq``, oldest first."""
        where, params = ["a.seq > ?"], [after_seq]
        for clause, value in (("a.tenant_id = ?", f.tenant_id), ("a.channel = ?", f.channel),
                              ("json_extract(a.payload, '$.status') = ?", f.status),
                              ("a.created_at >= ?", f.created_from), ("a.created_at < ?", f.created_to),
                              ("EXISTS (SELECT 1 FROM deliveries d WHERE d.activity_id = a.id AND d.status = ?)",
                               f.dispatch_status)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self.conn.execute(f"SELECT a.seq, a.id FROM activities a WHERE {' AND '.join(where)}"
                                 " ORDER BY a.seq LIMIT ?", (*params, limit))
        return [(r[0], r[1]) for r in rows]

    async def activity_tenant(self, activity_id: str) -> str:
        """The tenant an activity belongs to (authorisation)."""
        row = self.conn.execute("SELECT tenant_id FROM activities WHERE id = ?", (activity_id,)).fetchone()
        if row is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return str(row[0])

    async def delivery_by_public_id(self, public_id: str) -> tuple[int, str, str] | None:
        """(internal id, webhook-id, tenant) of the delivery the API knows as ``public_id`` (its
        ``webhook-id``: random per activity, so ids reaching the API are not a guessable sequence).
        The tenant is the configuration's, so a batch of message events is found as well."""
        row = self.conn.execute("SELECT d.id, d.webhook_id, c.tenant_id FROM deliveries d JOIN configurations c"
                                " ON c.id = d.config_id WHERE d.webhook_id = ?", (public_id,)).fetchone()
        return (int(row[0]), str(row[1]), str(row[2])) if row else None

    async def public_delivery_ids(self, delivery_ids: list[int]) -> dict[int, str]:
        """Internal id -> public id (the ``webhook-id``)."""
        out: dict[int, str] = {}
        for i in range(0, len(delivery_ids), 500):
            chunk = delivery_ids[i:i + 500]
            out.update((int(r[0]), str(r[1])) for r in self.conn.execute(
                f"SELECT id, webhook_id FROM deliveries WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    async def delivery_tenant(self, delivery_id: int) -> str:
        """The tenant a delivery belongs to (through its activity)."""
        row = self.conn.execute("SELECT a.tenant_id FROM deliveries d JOIN activities a ON a.id = d.activity_id"
                                " WHERE d.id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return str(row[0])

    # -- metrics and the status report -----------------------------------------------------

    async def metrics(self) -> Metrics:
        c = self.conn
        attempts = {r[0]: r[1] for r in c.execute(
            "SELECT COALESCE(outcome, 'IN_FLIGHT') AS o, COUNT(*) AS n FROM attempts_all GROUP BY o")}
        depth = {r[0]: r[1] for r in c.execute(
            "SELECT queue, COUNT(*) AS n FROM deliveries INDEXED BY deliveries_status"
            " WHERE status IN (?, ?) GROUP BY queue", (Status.READY.value, Status.RETRYING.value))}
        cols = ", ".join(f"SUM(latency <= {b!r})" for b in LATENCY_BUCKETS)
        row = c.execute(f"SELECT COUNT(*), COALESCE(SUM(latency), 0), {cols} FROM attempts"
                        " WHERE latency IS NOT NULL").fetchone()
        buckets = [(b, int(row[i + 2] or 0)) for i, b in enumerate(LATENCY_BUCKETS)]
        return Metrics(deliveries=await self.counts(), attempts=attempts, queue_depth=depth, latency_buckets=buckets,
                       latency_count=int(row[0]), latency_sum=float(row[1]), in_flight=await self.in_flight())

    async def attempt_count(self, outcome: str | None = None) -> int:
        """Attempts recorded (with that outcome, when given)."""
        if outcome is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM attempts_all").fetchone()[0])
        return int(self.conn.execute("SELECT COUNT(*) FROM attempts WHERE outcome = ?", (outcome,)).fetchone()[0])

    async def queue_status_counts(self) -> list[tuple[str, str, int]]:
        """(queue, status, deliveries) for every queue and status present."""
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT queue, status, COUNT(*) FROM deliveries GROUP BY queue, status ORDER BY queue, status")]

    async def oldest_pending(self) -> tuple[int, str, float] | None:
        """(id, queue, created_at) of the oldest READY or RETRYING delivery."""
        row = self.conn.execute("SELECT id, queue, created_at FROM deliveries WHERE status IN (?, ?)"
                                " ORDER BY created_at, id LIMIT 1", (Status.READY.value, Status.RETRYING.value)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    async def blocked_heads(self) -> list[tuple[int, str]]:
        """(id, queue) of FAILED deliveries that keep their queue waiting (``on_exhausted: block``)."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT id, queue FROM deliveries WHERE status = ? AND holds = 1 ORDER BY id", (Status.FAILED.value,))]

    async def recent_failures(self, limit: int = 5) -> list[tuple[int, str, str | None, str | None]]:
        """(id, queue, failed_reason, last_error) of the latest FAILED deliveries, newest first."""
        return [(r[0], r[1], r[2], r[3]) for r in self.conn.execute(
            "SELECT id, queue, failed_reason, last_error FROM deliveries WHERE status = ?"
            " ORDER BY updated_at DESC LIMIT ?", (Status.FAILED.value, limit))]

    async def inactive_configs(self) -> list[tuple[str, str | None, float | None]]:
        """(id, inactive_reason, inactive_since) of the configurations that exist but are paused."""
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "SELECT id, inactive_reason, inactive_since FROM configurations WHERE active = 0 AND deleted = 0"
            " ORDER BY id")]

    async def latest_notifications(self, limit: int) -> list[Notification]:
        """The ``limit`` newest notifications, oldest of them first."""
        rows = self.conn.execute(f"SELECT {columns(Notification)} FROM notifications ORDER BY id DESC LIMIT ?",
                                 (limit,)).fetchall()
        return [Notification(*r) for r in reversed(rows)]

    # -- API keys ---------------------------------------------------------------------------

    async def add_api_key(self, key_id: str, digest: str, *, tenant_id: str | None, name: str | None,
                          now: float) -> None:
        self.conn.execute("INSERT INTO api_keys (id, hash, tenant_id, name, created_at) VALUES (?, ?, ?, ?, ?)",
                          (key_id, digest, tenant_id, name, now))

    async def api_keys(self) -> list[ApiKey]:
        """Every key's id, owner, label and dates (never a hash), oldest first."""
        return [ApiKey(*r) for r in self.conn.execute(
            f"SELECT {columns(ApiKey)} FROM api_keys ORDER BY created_at, id")]

    async def api_key_by_hash(self, digest: str) -> tuple[str, str | None] | None:
        """(key id, tenant id or None for admin) of the unrevoked key with that hash."""
        row = self.conn.execute("SELECT id, tenant_id FROM api_keys WHERE hash = ? AND revoked_at IS NULL",
                                (digest,)).fetchone()
        return (row[0], row[1]) if row else None

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        """Revoke an unrevoked key (False: no such key, or revoked already)."""
        with self._tx() as c:
            return c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                             (now, key_id)).rowcount == 1

    async def replace_api_key(self, old_id: str, new_id: str, digest: str, now: float) -> bool:
        """Rotation in one transaction: the new key takes the old one's owner and label, the old one
        is revoked; False (nothing changed) when there is no such unrevoked key."""
        with self._tx() as c:
            row = c.execute("SELECT tenant_id, name FROM api_keys WHERE id = ? AND revoked_at IS NULL",
                            (old_id,)).fetchone()
            if row is None:
                return False
            c.execute("INSERT INTO api_keys (id, hash, tenant_id, name, created_at) VALUES (?, ?, ?, ?, ?)",
                      (new_id, digest, row[0], row[1], now))
            c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now, old_id))
            return True

    # -- console sessions -------------------------------------------------------------------

    async def open_console_session(self, token_digest: str, session: ConsoleSession, now: float) -> None:
        self.conn.execute(
            f"INSERT INTO console_sessions (token_digest, created_at, {columns(ConsoleSession)})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (token_digest, now, *astuple(session)))

    async def console_session(self, token_digest: str, now: float) -> ConsoleSession | None:
        row = self.conn.execute(f"SELECT {columns(ConsoleSession)} FROM console_sessions WHERE token_digest = ?"
                                " AND expires_at > ?", (token_digest, now)).fetchone()
        return ConsoleSession(*row) if row else None

    async def close_console_session(self, token_digest: str) -> None:
        self.conn.execute("DELETE FROM console_sessions WHERE token_digest = ?", (token_digest,))

    async def expire_console_sessions(self, now: float) -> int:
        return self.conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,)).rowcount

    # -- housekeeping -------------------------------------------------------------------------

    async def delete_old_attempts(self, before: float) -> int:
        """Retention: attempts finished before ``before`` of deliveries (batches of message events included)
        that are over (DISPATCHED or FAILED).

        The last attempt of each delivery is kept, so a FAILED delivery still shows why it failed.
        """
        with self._tx() as c:
            cur = c.execute(
                "DELETE FROM attempts WHERE finished_at IS NOT NULL AND finished_at < ? AND delivery_id IN"
                " (SELECT id FROM deliveries WHERE status IN (?, ?))"
                " AND id < (SELECT MAX(b.id) FROM attempts b WHERE b.delivery_id = attempts.delivery_id)",
                (before, Status.DISPATCHED.value, Status.FAILED.value))
            return cur.rowcount

    async def release_own_leases(self, now: float, owner: str) -> list[int]:
        """After a graceful stop: attempts this engine (``owner``, the prefix of its lease tokens)
        abandoned are marked INTERRUPTED and their deliveries are due again ``now`` (the same effect
        as ``release_expired_leases`` once the leases end, without waiting). Nobody else's leases."""
        return await self.release_leases(now, ending_by=float("inf"), owner=owner,
                                         error="shutdown deadline passed during this attempt")

    async def release_dead_owners_leases(self, now: float) -> list[int]:
        """At start, holding the database's owner lock: every lease in the file belongs to a process
        that is gone, so its attempts are INTERRUPTED and due again now instead of after the lease."""
        return await self.release_leases(now, ending_by=float("inf"),
                                         error="the previous owner of the database stopped during this attempt")

    async def register_owner(self, owner: str) -> None:
        """Nothing to do: a SQLite file has one owner (the owner lock), see :meth:`release_dead_owners_leases`."""

    async def dead_owners(self) -> list[str]:
        """None: the one owner of a file releases a dead predecessor's leases when it starts."""
        return []

    def wal_checkpointer(self) -> WalCheckpointer:
        """A checkpointer that moves WAL checkpoints off the event loop (serve mode)."""
        return WalCheckpointer(self.conn, self.path)

    def events_store(self) -> EventsStore:
        """Message events and their batches, on this connection and its transactions."""
        from .events_store import EventsStore
        return EventsStore(self)  # type: ignore[arg-type]

    def idempotency_store(self) -> IdempotencyStore:
        """Idempotency keys, on this connection and its transactions."""
        from .store_idempotency import IdempotencyStore
        return IdempotencyStore(self)  # type: ignore[arg-type]


class WalCheckpointer:
    """Serve mode: SQLite WAL checkpoints off the event loop.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1000 WAL pages, on the
    event-loop thread, and with ``synchronous = NORMAL`` it fsyncs the WAL and the database file:
    about 5 ms on a quiet disk, over 100 ms when other processes keep the disk busy, and every API
    request waits meanwhile. With :meth:`take_over` the engine's connection stops checkpointing by
    itself; :meth:`run` (a recurring job) copies the WAL and fsyncs on a connection of its own in a
    worker thread (sqlite3 releases the GIL there), then lets the engine's connection finish the few
    pages committed during that copy, so the WAL is complete, restarts at the next write, and its
    size stays bounded by what one interval writes.
    """

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn, self.path = conn, path
        self.enabled = path != ":memory:" and conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        self._conn: sqlite3.Connection | None = None
        self._thread: asyncio.Future[None] | None = None

    def take_over(self) -> None:
        """Stop the engine's connection from checkpointing by itself; :meth:`run` does it instead.

        Does nothing when the database is not in WAL mode (e.g. an in-memory database).
        """
        if self.enabled:
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    @property
    def autocheckpoint(self) -> int:
        """The engine connection's automatic checkpoint threshold (0 while taken over)."""
        return int(self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    @staticmethod
    def _bulk(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def run(self) -> tuple[int, int]:
        """One checkpoint; returns (WAL frames, frames copied) as the engine's connection saw them."""
        if self._conn is None:
            return (0, 0)
        # shielded: a cancelled caller must not leave the thread using a connection someone closes
        self._thread = asyncio.ensure_future(asyncio.to_thread(self._bulk, self._conn))
        await asyncio.shield(self._thread)
        if self._conn is None:
            return (0, 0)
        if self.conn.in_transaction:  # never the case between callbacks; be safe anyway
            return (0, 0)
        _busy, log, done = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return (log, done)

    def close(self) -> None:
        """Give automatic checkpoints back to the engine's connection and close our own; if the
        worker thread is still copying, its connection is closed when the thread is done."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        thread = self._thread
        if thread is not None and not thread.done():
            thread.add_done_callback(lambda _f: conn.close())
        else:
            conn.close()
        self.conn.execute("PRAGMA wal_autocheckpoint = 1000")
