"""``Idempotency-Key`` on POST: a client that retries after a timeout gets the first answer again.

The first request with a key reserves it in the database, runs, and keeps its answer (status,
body, ``Location``) when it succeeded; the same key with the same request within the retention
window gets that answer back (``Idempotent-Replayed: true``) and creates nothing; the same key with
a different request is refused (422), as is one that arrives while the first is still running
(409). A failed request keeps nothing, so it may be retried with its key. Keys are scoped per tenant
(the admin has its own scope), survive a restart, and expire (a recurring job of serve mode).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from dispatchsim.engine import IdempotencyStoreContract, storage_error

HEADER = "Idempotency-Key"
#: a reservation whose request never answered (its process stopped) is free again after this long
ABANDONED_AFTER = 60.0
#: default retention of keys: one day (Stripe keeps them 24 hours)
DEFAULT_RETENTION = 86400.0
MAX_KEY_LENGTH = 255
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Idempotency:
    """The keys' store, the clock they are dated by and how long they are kept."""

    store: IdempotencyStoreContract
    now: Callable[[], float]
    retention: float = DEFAULT_RETENTION

    #: reservations of failed requests that could not be freed (the database was unavailable then): freed
    #: before the next request and by serve mode's sweep, so the client's retry with its key is not held
    #: off as "still running" until the reservation is abandoned
    unreleased: set[tuple[str, str, float]] = field(default_factory=set)

    async def expire(self) -> int:
        """Forget the keys older than the retention (the recurring job); returns how many."""
        return await self.store.delete_expired(self.now() - self.retention)

    async def release(self, scope: str, key: str, reserved_at: float) -> None:
        """Free the reservation made at ``reserved_at`` by a request that failed (never a later one: once
        abandoned, another request may hold the key); when the database cannot take it now, later."""
        try:
            await self.store.release(scope, key, reserved_at=reserved_at)
        except Exception as exc:
            if storage_error(exc) is None:
                raise
            self.unreleased.add((scope, key, reserved_at))

    async def release_pending(self) -> None:
        """Free what :meth:`release` could not (a no-op when nothing waits); stops at the first failure."""
        for scope, key, reserved_at in sorted(self.unreleased):
            await self.store.release(scope, key, reserved_at=reserved_at)
            self.unreleased.discard((scope, key, reserved_at))


def fingerprint(method: str, path_qs: str, raw: bytes) -> str:
    """What "the same request" means: method, path with query, and the body (as JSON when it is
    JSON, so key order and spacing do not matter)."""
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode() if raw.strip() else b""
    except (ValueError, RecursionError):
        body = raw
    return hashlib.sha256(f"{method} {path_qs}\n".encode() + body).hexdigest()


def check_key(value: str, problem: Callable[..., Exception]) -> str:
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not value.isprintable() or not value.isascii():
        raise problem(400, "invalid", f"{HEADER}: 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                      field=HEADER)
    return value


async def run_once(request: web.Request, handler: _Handler, idem: Idempotency, scope: str, key: str,
                   problem: Callable[..., Exception]) -> web.StreamResponse:
    """Answer ``request`` at most once per (scope, key); see the module docstring."""
    if idem.unreleased:
        await idem.release_pending()
    raw = await request.read()  # aiohttp keeps the body: the handler reads it again
    fp = fingerprint(request.method, request.path_qs, raw)
    now = idem.now()
    held = await idem.store.reserve(scope, key, fp, now, expired_before=now - idem.retention,
                                    abandoned_before=now - ABANDONED_AFTER)
    if held is not None:
        if held.fingerprint != fp:
            raise problem(422, "idempotency-key-reused",
                          f"{HEADER}: this key was used for a different request (method, path or body); "
                          "use a new key for a new request", field=HEADER)
        if held.status is None:
            raise problem(409, "idempotency-in-progress",
                          f"{HEADER}: the first request with this key is still running; retry shortly",
                          field=HEADER)
        headers = {"Idempotent-Replayed": "true", **({"Location": held.location} if held.location else {})}
        return web.Response(status=held.status, body=(held.body or "").encode(), headers=headers,
                            content_type="application/json")
    try:
        response = await handler(request)
    except BaseException:
        await idem.release(scope, key, now)  # never in place of the handler's own error
        raise
    if 200 <= response.status < 300 and isinstance(response, web.Response) and response.body is not None:
        body = response.body if isinstance(response.body, bytes) else b""
        await idem.store.complete(scope, key, status=response.status, body=body.decode("utf-8"),
                                  location=response.headers.get("Location"))
    else:
        await idem.release(scope, key, now)
    return response


