"""SQL of idempotency keys on PostgreSQL: what ``store_idempotency`` is for SQLite.

Two workers may receive the same key at once: the reservation is an ``INSERT … ON CONFLICT DO
NOTHING``, so exactly one of them reserves it and the other is told what the key holds.
"""
from __future__ import annotations

from .store_contract import IdempotencyStoreContract
from .store_idempotency import StoredAnswer
from .store_pg import PgStore


class PgIdempotencyStore(IdempotencyStoreContract):
    """Named operations on ``idempotency_keys`` of a :class:`PgStore`."""

    def __init__(self, store: PgStore) -> None:
        self.store = store

    async def reserve(self, scope: str, key: str, fingerprint: str, now: float, *, expired_before: float,
                      abandoned_before: float) -> StoredAnswer | None:
        """Reserve ``key`` for a request (None: go ahead), or what the key already holds."""
        async with self.store.tx() as c:
            row = await (await c.execute(
                "SELECT fingerprint, status, body, location, created_at FROM idempotency_keys"
                " WHERE scope = %s AND key = %s FOR UPDATE", (scope, key))).fetchone()
            if row is not None:
                held = StoredAnswer(*row)
                if not (held.created_at < expired_before
                        or (held.status is None and held.created_at < abandoned_before)):
                    return held
                await c.execute("DELETE FROM idempotency_keys WHERE scope = %s AND key = %s", (scope, key))
            made = await (await c.execute(
                "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (scope, key) DO NOTHING RETURNING 1", (scope, key, fingerprint, now))).fetchone()
            if made is None:  # another worker reserved it between our look and our insert
                row = await (await c.execute(
                    "SELECT fingerprint, status, body, location, created_at FROM idempotency_keys"
                    " WHERE scope = %s AND key = %s", (scope, key))).fetchone()
                assert row is not None
                return StoredAnswer(*row)
        return None

    async def complete(self, scope: str, key: str, *, status: int, body: str, location: str | None) -> None:
        """Keep the answer of the request that reserved ``key``."""
        await self.store._run("UPDATE idempotency_keys SET status = %s, body = %s, location = %s"
                              " WHERE scope = %s AND key = %s", (status, body, location, scope, key))

    async def release(self, scope: str, key: str, *, reserved_at: float | None = None) -> None:
        """Free a reservation whose request created nothing (it failed), so the client may try again;
        with ``reserved_at``, only the reservation made then (not a later one of another request)."""
        if reserved_at is None:
            await self.store._run("DELETE FROM idempotency_keys WHERE scope = %s AND key = %s AND status IS NULL",
                                  (scope, key))
        else:
            await self.store._run("DELETE FROM idempotency_keys WHERE scope = %s AND key = %s AND status IS NULL"
                                  " AND created_at = %s", (scope, key, reserved_at))

    async def delete_expired(self, before: float) -> int:
        """Forget keys created before ``before`` (the recurring expiry job); returns how many."""
        return await self.store._run("DELETE FROM idempotency_keys WHERE created_at < %s", (before,))

    async def count(self) -> int:
        """Keys held (answered or in progress), expired ones included until the job forgets them."""
        row = await self.store._one("SELECT COUNT(*) FROM idempotency_keys")
        assert row is not None
        return int(row[0])
