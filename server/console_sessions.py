"""Console sessions: an opaque random token in an HttpOnly, SameSite=Strict cookie, the session kept in
the database.

Signing in with an API key opens a session for that key's one tenant. The cookie carries only a
random token; the store keeps its SHA-256 (never the token), the tenant, who signed in with which
key, the session's CSRF token (every action form sends it back) and when it ends. In the database,
not in the serve process: with several workers behind a load balancer every worker knows every
session (signing out on one signs out on all), and a restarted process keeps them (on SQLite too).
Ended sessions are ignored at once and deleted by serve's recurring job (one worker of a cluster runs it).
"""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from dispatchsim.engine import ConsoleSession, StoreContract

COOKIE = "dispatchsim_console"
#: a session ends this many seconds after sign-in
SESSION_TTL = 8 * 3600.0

#: the signed-in user of a console request
Session = ConsoleSession


def _digest(token: str) -> str:
    # a cookie that is not UTF-8 reaches here with lone surrogates (aiohttp's decoding): no one's session
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """The console's sessions in the store, by the digest of their cookie token."""

    def __init__(self, store: StoreContract, *, now: Callable[[], float], ttl: float = SESSION_TTL) -> None:
        self._store, self._now, self._ttl = store, now, ttl

    async def open(self, *, key_id: str, key_digest: str, who: str, tenant_id: str) -> tuple[str, Session]:
        """A new session; returns the cookie token (shown only to the browser) and the session."""
        token, now = secrets.token_urlsafe(32), self._now()
        session = Session(key_id=key_id, key_digest=key_digest, who=who, tenant_id=tenant_id,
                          csrf=secrets.token_urlsafe(32), expires_at=now + self._ttl)
        await self._store.open_console_session(_digest(token), session, now)
        return token, session

    async def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        return await self._store.console_session(_digest(token), self._now())

    async def close(self, token: str | None) -> None:
        if token:
            await self._store.close_console_session(_digest(token))
