"""SQL of Reteno message events: the events, their batches, and the webhooks that receive them.

A batch is sent as a delivery of the account's ``message_events`` configuration (``batch_id`` set),
so claiming, leases, attempts and retries are the generic operations of :class:`Store`; this file
only stores events and groups them. Shares the engine's SQLite connection and its transactions.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .config import ConfigKind
from .jsontext import dumps as _dumps
from .errors import NotFound
from .states import Status
from .store_contract import EventsStoreContract
from .store_rows import Configuration, EventBatch, columns

if TYPE_CHECKING:
    from .store import Store


def batch_webhook_id(id_key: str, batch_id: int) -> str:
    """The webhook-id of the delivery that sends batch ``batch_id``: what the receiver gets as the
    ``webhook-id`` header and serve mode shows as the batch's id. A digest of the batch number under
    the engine's key (random per engine, or from a simulation's seed so runs repeat), so it tells no
    one how many batches other accounts have."""
    return "evb_" + hashlib.sha256(f"{id_key}:batch:{batch_id}".encode()).hexdigest()[:24]




class EventsStore(EventsStoreContract):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    # -- events -------------------------------------------------------------------------

    async def insert_events(self, account_id: str, events: list[dict[str, Any]], now: float) -> list[int]:
        with self.store._tx() as c:
            return [int(c.execute("INSERT INTO message_events (account_id, payload, created_at) VALUES (?, ?, ?)",
                                  (account_id, _dumps(e), now)).lastrowid) for e in events]

    async def has_webhooks(self) -> bool:
        """Whether any message-event webhook was ever configured (none: no batch can ever form)."""
        return self.conn.execute("SELECT 1 FROM configurations INDEXED BY configurations_kind WHERE kind = ? LIMIT 1",
                                 (ConfigKind.MESSAGE_EVENTS.value,)).fetchone() is not None

    async def webhooks_free(self) -> list[Configuration]:
        """Active message-event webhooks with events waiting and no batch holding their queue: the only
        ones a batch may be formed for."""
        cols = ", ".join("c." + c for c in columns(Configuration).split(", "))
        return [Configuration.from_row(r) for r in self.conn.execute(
            f"SELECT {cols} FROM configurations c INDEXED BY configurations_kind"
            " WHERE c.kind = ? AND c.active = 1 AND c.deleted = 0 AND EXISTS (SELECT 1 FROM message_events m"
            " INDEXED BY message_events_unbatched WHERE m.account_id = c.tenant_id AND m.batch_id IS NULL)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d INDEXED BY deliveries_queue_holds"
            " WHERE d.queue = c.id AND d.holds = 1) ORDER BY c.id", (ConfigKind.MESSAGE_EVENTS.value,))]

    async def pending(self, account_id: str, limit: int) -> tuple[int, float | None]:
        """Events not yet in a batch (counted up to ``limit``), and when the oldest arrived."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS n, MIN(created_at) AS t FROM (SELECT created_at FROM message_events"
            " INDEXED BY message_events_unbatched WHERE account_id = ? AND batch_id IS NULL ORDER BY seq LIMIT ?)",
            (account_id, limit)).fetchone()
        return int(row["n"]), row["t"]

    async def form_batch(self, *, account_id: str, config_id: str, config_version: int, size: int, now: float,
                         id_key: str) -> tuple[int, int, int] | None:
        """Put the oldest ``size`` unbatched events into a new batch (its contents are fixed for every
        retry) and create the READY delivery that sends it, at the tail of the webhook's ordered queue.
        Returns (batch id, delivery id, number of events), or None when no event waits or the webhook
        was paused or deleted since it was read (its events wait unbatched)."""
        with self.store._tx() as c:
            if c.execute("SELECT 1 FROM configurations WHERE id = ? AND active = 1 AND deleted = 0",
                         (config_id,)).fetchone() is None:
                return None
            seqs = [r["seq"] for r in c.execute(
                "SELECT seq FROM message_events INDEXED BY message_events_unbatched WHERE account_id = ?"
                " AND batch_id IS NULL ORDER BY seq LIMIT ?", (account_id, size))]
            if not seqs:
                return None
            bid = int(c.execute("INSERT INTO event_batches (account_id, size, created_at) VALUES (?, ?, ?)",
                                (account_id, len(seqs), now)).lastrowid)
            c.execute(f"UPDATE message_events SET batch_id = ? WHERE seq IN ({','.join('?' * len(seqs))})",
                      (bid, *seqs))
            did = await self.store.insert_delivery(webhook_id=batch_webhook_id(id_key, bid), batch_id=bid,
                                                   config_id=config_id, config_version=config_version, queue=config_id,
                                                   ordered=True, now=now)
        return bid, did, len(seqs)

    # -- reading ------------------------------------------------------------------------

    _BATCH = ("SELECT b.id, b.account_id, d.status, b.size, d.attempts, d.next_attempt_at, d.lease_until,"
              " d.last_error, d.dispatched_at, b.created_at, d.updated_at, d.id AS delivery_id, d.webhook_id"
              " FROM event_batches b JOIN deliveries d ON d.batch_id = b.id")

    async def batches(self, account_id: str, *, after_id: int = 0, limit: int = 50) -> list[EventBatch]:
        """An account's batches in order, with the state of the delivery that sends each."""
        return [EventBatch.from_row(r) for r in self.conn.execute(
            f"{self._BATCH} WHERE b.account_id = ? AND b.id > ? ORDER BY b.id LIMIT ?", (account_id, after_id, limit))]

    async def batch(self, batch_id: int) -> EventBatch:
        row = self.conn.execute(f"{self._BATCH} WHERE b.id = ?", (batch_id,)).fetchone()
        if row is None:
            raise NotFound(f"event batch {batch_id} not found")
        return EventBatch.from_row(row)

    async def counts(self, account_id: str | None = None) -> dict[str, int]:
        """Batches per status and events not yet batched (of one account, or of all)."""
        where, params = ("WHERE b.account_id = ?", (account_id,)) if account_id else ("", ())
        out = {s.value: 0 for s in Status}
        for r in self.conn.execute("SELECT d.status, COUNT(*) AS n FROM event_batches b JOIN deliveries d"
                                   f" ON d.batch_id = b.id {where} GROUP BY d.status", params):
            out[r["status"]] = r["n"]
        row = self.conn.execute("SELECT COUNT(*) AS n FROM message_events WHERE batch_id IS NULL"
                                + (" AND account_id = ?" if account_id else ""), params).fetchone()
        out["unbatched_events"] = row["n"]
        return out
