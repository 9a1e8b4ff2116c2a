"""SQL of Reteno message events on PostgreSQL: what ``events_store`` is for SQLite.

A batch is formed under its webhook queue's advisory lock, so two workers never put the same event
into two batches, and batches of one account are numbered in the order their events arrived.
"""
from __future__ import annotations

from typing import Any

from .config import ConfigKind
from .jsontext import dumps as _dumps
from .errors import NotFound
from .events_store import batch_webhook_id
from .states import Status
from .store_contract import EventsStoreContract
from .store_pg import PgStore
from .store_rows import Configuration, EventBatch, columns




class PgEventsStore(EventsStoreContract):
    """Message events and their batches on a :class:`PgStore` (sharing its transactions)."""

    def __init__(self, store: PgStore) -> None:
        self.store = store

    async def insert_events(self, account_id: str, events: list[dict[str, Any]], now: float) -> list[int]:
        if not events:
            return []
        rows = await self.store._all(
            "INSERT INTO message_events (account_id, payload, created_at) SELECT %s, p, %s"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS e(p, k) ORDER BY e.k RETURNING seq",
            (account_id, now, [_dumps(e) for e in events]))
        return sorted(int(r[0]) for r in rows)

    async def has_webhooks(self) -> bool:
        return await self.store._one("SELECT 1 FROM configurations WHERE kind = %s LIMIT 1",
                                     (ConfigKind.MESSAGE_EVENTS.value,)) is not None

    async def webhooks_free(self) -> list[Configuration]:
        cols = ", ".join("c." + c for c in columns(Configuration).split(", "))
        return [Configuration.from_row(r) for r in await self.store._all(
            f"SELECT {cols} FROM configurations c WHERE c.kind = %s AND c.active AND NOT c.deleted"
            " AND EXISTS (SELECT 1 FROM message_events m WHERE m.account_id = c.tenant_id AND m.batch_id IS NULL)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.queue = c.id AND d.holds) ORDER BY c.id",
            (ConfigKind.MESSAGE_EVENTS.value,))]

    async def pending(self, account_id: str, limit: int) -> tuple[int, float | None]:
        row = await self.store._one(
            "SELECT COUNT(*), MIN(created_at) FROM (SELECT created_at FROM message_events"
            " WHERE account_id = %s AND batch_id IS NULL ORDER BY seq LIMIT %s) AS waiting", (account_id, limit))
        assert row is not None
        return int(row[0]), row[1]

    async def form_batch(self, *, account_id: str, config_id: str, config_version: int, size: int, now: float,
                         id_key: str) -> tuple[int, int, int] | None:
        async with self.store.tx() as c:
            # held as a fan-out holds it (see PgStore.active_configs): a delete waits, then sees the batch
            if await (await c.execute("SELECT 1 FROM configurations WHERE id = %s AND active AND NOT deleted"
                                      " FOR KEY SHARE", (config_id,))).fetchone() is None:
                return None
            await self.store.lock_queue(config_id)
            seqs = [r[0] for r in await (await c.execute(
                "SELECT seq FROM message_events WHERE account_id = %s AND batch_id IS NULL ORDER BY seq LIMIT %s",
                (account_id, size))).fetchall()]
            if not seqs:
                return None
            row = await (await c.execute("INSERT INTO event_batches (account_id, size, created_at)"
                                         " VALUES (%s, %s, %s) RETURNING id", (account_id, len(seqs), now))).fetchone()
            assert row is not None
            bid = int(row[0])
            await c.execute("UPDATE message_events SET batch_id = %s WHERE seq = ANY(%s)", (bid, seqs))
            did = await self.store.insert_delivery(webhook_id=batch_webhook_id(id_key, bid), batch_id=bid,
                                                   config_id=config_id, config_version=config_version,
                                                   queue=config_id, ordered=True, now=now)
        return bid, did, len(seqs)

    _BATCH = ("SELECT b.id, b.account_id, d.status, b.size, d.attempts, d.next_attempt_at, d.lease_until,"
              " d.last_error, d.dispatched_at, b.created_at, d.updated_at, d.id AS delivery_id, d.webhook_id"
              " FROM event_batches b JOIN deliveries d ON d.batch_id = b.id")

    async def batches(self, account_id: str, *, after_id: int = 0, limit: int = 50) -> list[EventBatch]:
        return [EventBatch.from_row(r) for r in await self.store._all(
            f"{self._BATCH} WHERE b.account_id = %s AND b.id > %s ORDER BY b.id LIMIT %s",
            (account_id, after_id, limit))]

    async def batch(self, batch_id: int) -> EventBatch:
        row = await self.store._one(f"{self._BATCH} WHERE b.id = %s", (batch_id,))
        if row is None:
            raise NotFound(f"event batch {batch_id} not found")
        return EventBatch.from_row(row)

    async def counts(self, account_id: str | None = None) -> dict[str, int]:
        where, params = ("WHERE b.account_id = %s", (account_id,)) if account_id else ("", ())
        out = {s.value: 0 for s in Status}
        for status, n in await self.store._all("SELECT d.status, COUNT(*) FROM event_batches b JOIN deliveries d"
                                               f" ON d.batch_id = b.id {where} GROUP BY d.status", params):
            out[status] = int(n)
        row = await self.store._one("SELECT COUNT(*) FROM message_events WHERE batch_id IS NULL"
                                    + (" AND account_id = %s" if account_id else ""), params)
        assert row is not None
        out["unbatched_events"] = int(row[0])
        return out
