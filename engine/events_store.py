"""SQL of the message-event webhooks (tables of migration 0003), as named operations.

Shares the engine's SQLite connection and its transactions (``Store.tx``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import NotFound
from .store import Store

_OPEN = "('READY', 'RETRYING')"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class BatchClaim:
    """One leased batch attempt."""

    batch_id: int
    account_id: str
    attempt_id: int
    number: int
    created_at: float


class EventsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    # -- accounts -----------------------------------------------------------------------

    def upsert_account(self, account_id: str, url: str, settings: dict[str, Any], now: float) -> None:
        self.conn.execute(
            "INSERT INTO event_accounts (id, webhook_url, settings, active, created_at, updated_at)"
            " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(id) DO UPDATE SET webhook_url = excluded.webhook_url,"
            " settings = excluded.settings, active = 1, updated_at = excluded.updated_at",
            (account_id, url, _dumps(settings), now, now))

    def account(self, account_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM event_accounts WHERE id = ?", (account_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["settings"] = json.loads(out["settings"])
        return out

    def accounts(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id FROM event_accounts WHERE active = 1 ORDER BY id").fetchall()
        return [a for a in (self.account(r["id"]) for r in rows) if a is not None]

    # -- events -------------------------------------------------------------------------

    def insert_events(self, account_id: str, events: list[dict[str, Any]], now: float) -> list[int]:
        with self.store.tx() as c:
            return [int(c.execute("INSERT INTO message_events (account_id, payload, created_at) VALUES (?, ?, ?)",
                                  (account_id, _dumps(e), now)).lastrowid) for e in events]

    def pending(self, account_id: str) -> tuple[int, float | None]:
        """Events not yet in a batch: how many, and when the oldest arrived."""
        row = self.conn.execute(
            "SELECT COUNT(*) AS n, MIN(created_at) AS t FROM message_events INDEXED BY message_events_unbatched"
            " WHERE account_id = ? AND batch_id IS NULL", (account_id,)).fetchone()
        return int(row["n"]), row["t"]

    def head(self, account_id: str) -> dict[str, Any] | None:
        """The first open batch of the account: the only one that may be sent."""
        row = self.conn.execute(f"SELECT * FROM event_batches WHERE account_id = ? AND status IN {_OPEN}"
                                " ORDER BY id LIMIT 1", (account_id,)).fetchone()
        return dict(row) if row else None

    def form_batch(self, account_id: str, size: int, now: float) -> int | None:
        """Put the oldest ``size`` unbatched events into a new READY batch (contents fixed for every retry)."""
        with self.store.tx() as c:
            seqs = [r["seq"] for r in c.execute(
                "SELECT seq FROM message_events INDEXED BY message_events_unbatched WHERE account_id = ?"
                " AND batch_id IS NULL ORDER BY seq LIMIT ?", (account_id, size))]
            if not seqs:
                return None
            bid = int(c.execute(
                "INSERT INTO event_batches (account_id, status, size, next_attempt_at, created_at, updated_at)"
                " VALUES (?, 'READY', ?, ?, ?, ?)", (account_id, len(seqs), now, now, now)).lastrowid)
            c.execute(f"UPDATE message_events SET batch_id = ? WHERE seq IN ({','.join('?' * len(seqs))})",
                      (bid, *seqs))
        return bid

    def batch_events(self, batch_id: int) -> list[dict[str, Any]]:
        return [json.loads(r["payload"]) for r in self.conn.execute(
            "SELECT payload FROM message_events WHERE batch_id = ? ORDER BY seq", (batch_id,))]

    # -- the send cycle -----------------------------------------------------------------

    def claim(self, batch_id: int, lease_until: float, now: float) -> BatchClaim | None:
        with self.store.tx() as c:
            row = c.execute(
                "UPDATE event_batches SET lease_until = ?, attempts = attempts + 1, updated_at = ?"
                f" WHERE id = ? AND lease_until IS NULL AND status IN {_OPEN}"
                " RETURNING account_id, attempts, created_at", (lease_until, now, batch_id)).fetchone()
            if row is None:
                return None
            att = c.execute("INSERT INTO event_attempts (batch_id, number, started_at) VALUES (?, ?, ?)",
                            (batch_id, row["attempts"], now))
        return BatchClaim(batch_id=batch_id, account_id=row["account_id"], attempt_id=int(att.lastrowid),
                          number=row["attempts"], created_at=row["created_at"])

    def finish(self, claim: BatchClaim, *, status: str, now: float, outcome: str, status_code: int | None,
               error: str | None, latency: float | None, excerpt: str | None,
               next_at: float | None) -> bool:
        """Record the attempt and move the batch to ``status`` (DISPATCHED, RETRYING or FAILED)."""
        with self.store.tx() as c:
            c.execute("UPDATE event_attempts SET finished_at = ?, outcome = ?, status_code = ?, error = ?,"
                      " latency = ?, excerpt = ?, next_attempt_at = ? WHERE id = ?",
                      (now, outcome, status_code, error, latency, excerpt, next_at, claim.attempt_id))
            cur = c.execute(
                "UPDATE event_batches SET status = ?, lease_until = NULL, updated_at = ?,"
                " next_attempt_at = COALESCE(?, next_attempt_at), last_error = ?,"
                " dispatched_at = CASE WHEN ? = 'DISPATCHED' THEN ? ELSE dispatched_at END"
                f" WHERE id = ? AND lease_until IS NOT NULL AND status IN {_OPEN}",
                (status, now, next_at, error if status != "DISPATCHED" else None, status, now, claim.batch_id))
            return cur.rowcount == 1

    def release_leases(self, *, before: float, now: float) -> list[int]:
        """Batches whose lease ends by ``before`` (their sender died): attempt INTERRUPTED, batch due now."""
        with self.store.tx() as c:
            ids = [r["id"] for r in c.execute(
                "SELECT id FROM event_batches WHERE lease_until IS NOT NULL AND lease_until <= ?", (before,))]
            for bid in ids:
                c.execute("UPDATE event_attempts SET finished_at = ?, outcome = 'INTERRUPTED',"
                          " error = 'the sender stopped during this attempt' WHERE batch_id = ?"
                          " AND finished_at IS NULL", (now, bid))
                c.execute("UPDATE event_batches SET lease_until = NULL, next_attempt_at = MIN(next_attempt_at, ?)"
                          " WHERE id = ?", (now, bid))
        return ids

    def next_lease_expiry(self) -> float | None:
        row = self.conn.execute("SELECT MIN(lease_until) AS t FROM event_batches WHERE lease_until IS NOT NULL"
                                ).fetchone()
        return row["t"]

    # -- reading ------------------------------------------------------------------------

    def batches(self, account_id: str, *, after_id: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(
            "SELECT * FROM event_batches WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?",
            (account_id, after_id, limit))]

    def batch(self, batch_id: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM event_batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise NotFound(f"event batch {batch_id} not found")
        return dict(row)

    def attempts(self, batch_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(
            "SELECT * FROM event_attempts WHERE batch_id = ? ORDER BY id", (batch_id,))]

    def counts(self, account_id: str | None = None) -> dict[str, int]:
        where, params = ("WHERE account_id = ?", (account_id,)) if account_id else ("", ())
        out = {"READY": 0, "RETRYING": 0, "DISPATCHED": 0, "FAILED": 0}
        for r in self.conn.execute(f"SELECT status, COUNT(*) AS n FROM event_batches {where} GROUP BY status",
                                   params):
            out[r["status"]] = r["n"]
        row = self.conn.execute(f"SELECT COUNT(*) AS n FROM message_events {where}"
                                + (" AND" if where else " WHERE") + " batch_id IS NULL", params).fetchone()
        out["unbatched_events"] = row["n"]
        return out

