"""SQL of idempotency keys: the first answer to a request sent with an ``Idempotency-Key``.

A key is reserved (a row without an answer) before the request runs and completed with its answer
afterwards, in the database, so a second request with the key finds it after a restart, and a
concurrent one finds it in progress. Shares the engine's SQLite connection and its transactions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .store_contract import IdempotencyStoreContract

if TYPE_CHECKING:
    from .store import Store


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What a key holds: the request's fingerprint and, once it finished, its answer."""

    fingerprint: str
    status: int | None  #: None while the first request is still running
    body: str | None
    location: str | None
    created_at: float


class IdempotencyStore(IdempotencyStoreContract):
    """Named operations on ``idempotency_keys``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def reserve(self, scope: str, key: str, fingerprint: str, now: float, *, expired_before: float,
                abandoned_before: float) -> StoredAnswer | None:
        """Reserve ``key`` for a request (None: go ahead), or what the key already holds.

        A key older than ``expired_before``, or reserved before ``abandoned_before`` and never
        answered (its process stopped mid-request), counts as free."""
        with self.store._tx() as c:
            row = c.execute("SELECT fingerprint, status, body, location, created_at FROM idempotency_keys"
                            " WHERE scope = ? AND key = ?", (scope, key)).fetchone()
            if row is not None:
                held = StoredAnswer(*row)
                if not (held.created_at < expired_before
                        or (held.status is None and held.created_at < abandoned_before)):
                    return held
                c.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
            c.execute("INSERT INTO idempotency_keys (scope, key, fingerprint, created_at) VALUES (?, ?, ?, ?)",
                      (scope, key, fingerprint, now))
        return None

    async def complete(self, scope: str, key: str, *, status: int, body: str, location: str | None) -> None:
        """Keep the answer of the request that reserved ``key``."""
        with self.store._tx() as c:
            c.execute("UPDATE idempotency_keys SET status = ?, body = ?, location = ? WHERE scope = ? AND key = ?",
                      (status, body, location, scope, key))

    async def release(self, scope: str, key: str, *, reserved_at: float | None = None) -> None:
        """Free a reservation whose request created nothing (it failed), so the client may try again;
        with ``reserved_at``, only the reservation made then (not a later one of another request)."""
        with self.store._tx() as c:
            if reserved_at is None:
                c.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status IS NULL", (scope, key))
            else:
                c.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status IS NULL"
                          " AND created_at = ?", (scope, key, reserved_at))

    async def delete_expired(self, before: float) -> int:
        """Forget keys created before ``before`` (the recurring expiry job); returns how many."""
        with self.store._tx() as c:
            return c.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (before,)).rowcount

    async def count(self) -> int:
        """Keys held (answered or in progress), expired ones included until the job forgets them."""
        return int(self.store.conn.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone()[0])
