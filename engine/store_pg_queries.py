"""The PostgreSQL store's read models and housekeeping: what ``store_queries`` and ``store_console``
are for SQLite (filtered pages, ownership look-ups, ``/metrics`` aggregates, the status report, API
keys, retention, the console's lists), in PostgreSQL's dialect. ``PgStore`` mixes them in; nothing
here changes a delivery's status.
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import astuple
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from .errors import NotFound
from .states import ACTIVE, Status
from .store_console import CONSOLE_ORDER, DeliveryCursor, DeliveryFilter, QueueRow
from .store_queries import LATENCY_BUCKETS, ActivityFilter, Metrics
from .store_rows import ApiKey, ConsoleSession, Delivery, Notification, columns
from .store_sql import newest_where

if TYPE_CHECKING:
    import psycopg

_DELIVERY = columns(Delivery)
#: the condition of the FAILED-only partial index ``deliveries_status`` (schema v7), written as a
#: literal: a prepared statement's generic plan cannot prove ``status = $1`` implies it
FAILED_ONLY = f"status = '{Status.FAILED.value}'"
_STATUS_VALUES = frozenset(s.value for s in Status)


def activity_page_query(f: ActivityFilter, *, after_seq: int, limit: int) -> tuple[str, tuple[Any, ...]]:
    """The statement of :meth:`PgQueryOps.activity_page` and its parameters.

    It runs unprepared (planned with its values each time): the generic plan PostgreSQL switches a
    prepared statement to after five executions knows neither the delivery status nor the page's
    limit, and walked every activity probing its deliveries (about 0.1 s per page of FAILED ones at
    300,000 deliveries, against 10 ms through the FAILED deliveries' index). A listing is rare; its
    planning costs well under a millisecond. The status is a literal (one of :class:`Status`, never
    the caller's text), so the plan can match the FAILED-only partial indexes."""
    where, params = ["a.seq > %s"], [after_seq]
    for clause, value in (("a.tenant_id = %s", f.tenant_id), ("a.channel = %s", f.channel),
                          ("(a.payload::json ->> 'status') = %s", f.status),
                          ("a.created_at >= %s", f.created_from), ("a.created_at < %s", f.created_to)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if f.dispatch_status is not None:
        if f.dispatch_status in _STATUS_VALUES:
            where.append("EXISTS (SELECT 1 FROM deliveries d WHERE d.activity_id = a.id"
                         f" AND d.status = '{f.dispatch_status}')")
        else:
            where.append("FALSE")  # no delivery has such a status: an empty page, as SQLite answers
    return (f"SELECT a.seq, a.id FROM activities a WHERE {' AND '.join(where)} ORDER BY a.seq LIMIT %s",
            (*params, limit))


class NoCheckpointer:
    """PostgreSQL checkpoints by itself: serve mode's WAL checkpoint job is SQLite's only."""

    enabled = False
    autocheckpoint = 0

    def take_over(self) -> None:
        """Nothing to take over."""

    async def run(self) -> tuple[int, int]:
        """Nothing to copy."""
        return (0, 0)

    def close(self) -> None:
        """Nothing to give back."""


class PgQueryOps:
    """Read models and housekeeping; mixed into ``PgStore``, which provides the connections."""

    if TYPE_CHECKING:
        def tx(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]: ...
        async def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
        async def _all(self, sql: str, params: Sequence[Any] = (), *,
                       prepare: bool | None = None) -> list[tuple[Any, ...]]: ...
        async def _run(self, sql: str, params: Sequence[Any] = ()) -> int: ...
        async def counts(self) -> dict[str, int]: ...
        async def in_flight(self) -> int: ...

    # -- activities -----------------------------------------------------------------------

    async def next_activity_seq(self) -> int:
        row = await self._one("SELECT COALESCE(MAX(seq), 0) + 1 FROM activities")
        assert row is not None
        return int(row[0])

    async def activity_ids(self) -> list[str]:
        return [r[0] for r in await self._all("SELECT id FROM activities ORDER BY seq")]

    async def activity_page(self, f: ActivityFilter, *, after_seq: int = 0,
                            limit: int = 100) -> list[tuple[int, str]]:
        rows = await self._all(*activity_page_query(f, after_seq=after_seq, limit=limit), prepare=False)
        return [(int(r[0]), r[1]) for r in rows]

    async def activity_tenant(self, activity_id: str) -> str:
        row = await self._one("SELECT tenant_id FROM activities WHERE id = %s", (activity_id,))
        if row is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return str(row[0])

    async def delivery_by_public_id(self, public_id: str) -> tuple[int, str, str] | None:
        row = await self._one("SELECT d.id, d.webhook_id, c.tenant_id FROM deliveries d JOIN configurations c"
                              " ON c.id = d.config_id WHERE d.webhook_id = %s", (public_id,))
        return (int(row[0]), str(row[1]), str(row[2])) if row else None

    async def public_delivery_ids(self, delivery_ids: list[int]) -> dict[int, str]:
        rows = await self._all("SELECT id, webhook_id FROM deliveries WHERE id = ANY(%s)", (list(delivery_ids),))
        return {int(r[0]): str(r[1]) for r in rows}

    async def delivery_tenant(self, delivery_id: int) -> str:
        row = await self._one("SELECT a.tenant_id FROM deliveries d JOIN activities a ON a.id = d.activity_id"
                              " WHERE d.id = %s", (delivery_id,))
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found")
        return str(row[0])

    # -- metrics and the status report -----------------------------------------------------

    async def metrics(self) -> Metrics:
        attempts = {r[0]: int(r[1]) for r in await self._all(
            "SELECT COALESCE(outcome, 'IN_FLIGHT') AS o, COUNT(*) FROM attempts_all GROUP BY o")}
        depth = {r[0]: int(r[1]) for r in await self._all(
            "SELECT queue, COUNT(*) FROM deliveries WHERE status IN (%s, %s) GROUP BY queue",
            (Status.READY.value, Status.RETRYING.value))}
        cols = ", ".join(f"COUNT(*) FILTER (WHERE latency <= {b!r})" for b in LATENCY_BUCKETS)
        row = await self._one(f"SELECT COUNT(*), COALESCE(SUM(latency), 0), {cols} FROM attempts"
                              " WHERE latency IS NOT NULL")
        assert row is not None
        buckets = [(b, int(row[i + 2] or 0)) for i, b in enumerate(LATENCY_BUCKETS)]
        return Metrics(deliveries=await self.counts(), attempts=attempts, queue_depth=depth,
                       latency_buckets=buckets, latency_count=int(row[0]), latency_sum=float(row[1]),
                       in_flight=await self.in_flight())

    async def attempt_count(self, outcome: str | None = None) -> int:
        if outcome is None:
            row = await self._one("SELECT COUNT(*) FROM attempts_all")
        else:
            row = await self._one("SELECT COUNT(*) FROM attempts WHERE outcome = %s", (outcome,))
        assert row is not None
        return int(row[0])

    async def queue_status_counts(self) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in await self._all(
            "SELECT queue, status, COUNT(*) FROM deliveries GROUP BY queue, status ORDER BY queue, status")]

    async def oldest_pending(self) -> tuple[int, str, float] | None:
        row = await self._one("SELECT id, queue, created_at FROM deliveries WHERE status IN (%s, %s)"
                              " ORDER BY created_at, id LIMIT 1", (Status.READY.value, Status.RETRYING.value))
        return (int(row[0]), row[1], row[2]) if row else None

    async def blocked_heads(self) -> list[tuple[int, str]]:
        return [(int(r[0]), r[1]) for r in await self._all(
            f"SELECT id, queue FROM deliveries WHERE {FAILED_ONLY} AND holds ORDER BY id")]

    async def recent_failures(self, limit: int = 5) -> list[tuple[int, str, str | None, str | None]]:
        return [(int(r[0]), r[1], r[2], r[3]) for r in await self._all(
            f"SELECT id, queue, failed_reason, last_error FROM deliveries WHERE {FAILED_ONLY}"
            " ORDER BY updated_at DESC, id DESC LIMIT %s", (limit,))]

    async def inactive_configs(self) -> list[tuple[str, str | None, float | None]]:
        return [(r[0], r[1], r[2]) for r in await self._all(
            "SELECT id, inactive_reason, inactive_since FROM configurations WHERE NOT active AND NOT deleted"
            " ORDER BY id")]

    async def latest_notifications(self, limit: int) -> list[Notification]:
        rows = await self._all(f"SELECT {columns(Notification)} FROM notifications ORDER BY id DESC LIMIT %s",
                               (limit,))
        return [Notification(*r) for r in reversed(rows)]

    # -- API keys ---------------------------------------------------------------------------

    async def add_api_key(self, key_id: str, digest: str, *, tenant_id: str | None, name: str | None,
                          now: float) -> None:
        await self._run("INSERT INTO api_keys (id, hash, tenant_id, name, created_at) VALUES (%s, %s, %s, %s, %s)",
                        (key_id, digest, tenant_id, name, now))

    async def api_keys(self) -> list[ApiKey]:
        return [ApiKey(*r) for r in await self._all(f"SELECT {columns(ApiKey)} FROM api_keys ORDER BY created_at, id")]

    async def api_key_by_hash(self, digest: str) -> tuple[str, str | None] | None:
        row = await self._one("SELECT id, tenant_id FROM api_keys WHERE hash = %s AND revoked_at IS NULL", (digest,))
        return (row[0], row[1]) if row else None

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        return await self._run("UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                               (now, key_id)) == 1

    async def replace_api_key(self, old_id: str, new_id: str, digest: str, now: float) -> bool:
        async with self.tx() as c:
            row = await (await c.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
                                         " RETURNING tenant_id, name", (now, old_id))).fetchone()
            if row is None:
                return False
            await c.execute("INSERT INTO api_keys (id, hash, tenant_id, name, created_at) VALUES (%s, %s, %s, %s, %s)",
                            (new_id, digest, row[0], row[1], now))
            return True

    # -- console sessions -------------------------------------------------------------------

    async def open_console_session(self, token_digest: str, session: ConsoleSession, now: float) -> None:
        await self._run(
            f"INSERT INTO console_sessions (token_digest, created_at, {columns(ConsoleSession)})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", (token_digest, now, *astuple(session)))

    async def console_session(self, token_digest: str, now: float) -> ConsoleSession | None:
        row = await self._one(f"SELECT {columns(ConsoleSession)} FROM console_sessions WHERE token_digest = %s"
                              " AND expires_at > %s", (token_digest, now))
        return ConsoleSession(*row) if row else None

    async def close_console_session(self, token_digest: str) -> None:
        await self._run("DELETE FROM console_sessions WHERE token_digest = %s", (token_digest,))

    async def expire_console_sessions(self, now: float) -> int:
        return await self._run("DELETE FROM console_sessions WHERE expires_at <= %s", (now,))

    # -- housekeeping -------------------------------------------------------------------------

    async def delete_old_attempts(self, before: float) -> int:
        return await self._run(
            "DELETE FROM attempts a WHERE a.finished_at IS NOT NULL AND a.finished_at < %s AND a.delivery_id IN"
            " (SELECT id FROM deliveries WHERE status IN (%s, %s))"
            " AND a.id < (SELECT MAX(b.id) FROM attempts b WHERE b.delivery_id = a.delivery_id)",
            (before, Status.DISPATCHED.value, Status.FAILED.value))

    def wal_checkpointer(self) -> NoCheckpointer:
        """PostgreSQL needs no checkpoint job (``enabled`` is False)."""
        return NoCheckpointer()

    # -- the web console's read models ------------------------------------------------------

    async def console_deliveries(self, f: DeliveryFilter, *, cursor: DeliveryCursor | None = None,
                                 limit: int = 50) -> tuple[list[Delivery], DeliveryCursor | None]:
        sections = [i for i, s in enumerate(CONSOLE_ORDER) if f.status is None or s == f.status]
        out: list[Delivery] = []
        for section in sections:
            if cursor is not None and section < cursor.section:
                continue
            before = cursor if cursor is not None and section == cursor.section else None
            out.extend(await self._newest(CONSOLE_ORDER[section], f, before=before, limit=limit + 1 - len(out)))
            if len(out) > limit:
                last = out[limit - 1]
                return out[:limit], DeliveryCursor(CONSOLE_ORDER.index(last.status), last.created_at, last.id)
        return out, None

    async def _newest(self, status: Status, f: DeliveryFilter, *, before: DeliveryCursor | None,
                      limit: int) -> list[Delivery]:
        """One index walk of ``deliveries_console`` per configuration, merged by (creation time, id)."""
        runs = []
        for config_id in f.config_ids:
            where, params = newest_where("%s", config_id, status, f, before, limit)
            rows = await self._all(f"SELECT {_DELIVERY} FROM deliveries WHERE {where}"
                                   " ORDER BY created_at DESC, id DESC LIMIT %s", params)
            runs.append([Delivery.from_row(r) for r in rows])
        return list(heapq.merge(*runs, key=lambda d: (-d.created_at, -d.id)))[:limit]

    async def ordered_queues(self, config_ids: Sequence[str]) -> list[QueueRow]:
        if not config_ids:
            return []
        rows = await self._all(
            "SELECT g.queue, g.config_id, g.backlog, g.head, d.webhook_id, d.status, d.attempts, d.next_attempt_at"
            " FROM (SELECT queue, MIN(config_id) AS config_id, COUNT(*) AS backlog, MIN(id) AS head FROM deliveries"
            " WHERE holds AND config_id = ANY(%s) GROUP BY queue) AS g JOIN deliveries d ON d.id = g.head"
            " ORDER BY g.queue", (list(config_ids),))
        out = []
        for queue, config_id, backlog, head, webhook_id, status_text, attempts, next_at in rows:
            status = Status(status_text)
            out.append(QueueRow(queue=queue, config_id=config_id, backlog=int(backlog), head_id=int(head),
                                head_webhook_id=webhook_id, head_status=status, head_attempts=attempts,
                                next_attempt_at=next_at if status in ACTIVE else None))
        return out

    async def bench_fill_deliveries(self, *, tenant_id: str, config_id: str, config_version: int, count: int,
                                    failed_every: int, now: float, pending: bool = False) -> None:
        """Benchmark only: ``count`` activities and one finished delivery each, in two statements (with
        ``pending``: one READY unordered delivery each, due from ``now`` on)."""
        async with self.tx() as c:
            row = await (await c.execute("SELECT COALESCE(MAX(seq), 0) FROM activities")).fetchone()
            start = int(row[0]) if row else 0
            await c.execute(
                "INSERT INTO activities (id, tenant_id, type, channel, payload, created_at)"
                " SELECT 'bench-' || (%s + i), %s, 'TASK', 'SALESMAN', '{}', %s + i * 0.001"
                " FROM generate_series(1, %s) AS i", (start, tenant_id, now, count))
            if pending:
                await c.execute(
                    "INSERT INTO deliveries (webhook_id, activity_id, config_id, config_version, queue, status,"
                    " holds, eligible, budget_started_at, next_attempt_at, created_at, updated_at)"
                    " SELECT 'msg_bench' || (%(s)s + i), 'bench-' || (%(s)s + i), %(c)s, %(v)s, %(c)s, 'READY',"
                    " false, true, %(t)s + i * 0.001, %(t)s + i * 0.001, %(t)s + i * 0.001, %(t)s + i * 0.001"
                    " FROM generate_series(1, %(n)s) AS i",
                    {"s": start, "c": config_id, "v": config_version, "t": now, "n": count})
                return
            await c.execute(
                "INSERT INTO deliveries (webhook_id, activity_id, config_id, config_version, queue, status, holds,"
                " eligible, attempts, budget_attempts, budget_started_at, next_attempt_at, failed_reason,"
                " dispatched_at, created_at, updated_at)"
                " SELECT 'msg_bench' || (%(s)s + i), 'bench-' || (%(s)s + i), %(c)s, %(v)s, %(c)s,"
                " CASE WHEN i %% %(f)s = 0 THEN 'FAILED' ELSE 'DISPATCHED' END, false, false,"
                " CASE WHEN i %% %(f)s = 0 THEN 10 ELSE 1 END, CASE WHEN i %% %(f)s = 0 THEN 10 ELSE 1 END,"
                " %(t)s + i * 0.001, %(t)s + i * 0.001, CASE WHEN i %% %(f)s = 0 THEN 'exhausted' END,"
                " CASE WHEN i %% %(f)s = 0 THEN NULL ELSE %(t)s + i * 0.001 END, %(t)s + i * 0.001, %(t)s + i * 0.001"
                " FROM generate_series(1, %(n)s) AS i",
                {"s": start, "c": config_id, "v": config_version, "f": failed_every, "t": now, "n": count})
