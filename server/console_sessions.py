"""Console sessions: an opaque random token in an HttpOnly, SameSite=Strict cookie, the session kept here.

Signing in with an API key opens a session for that key's one tenant. The cookie carries only a
random token; the server keeps its SHA-256, the tenant, who signed in and the session's CSRF token
(every action form sends it back). Sessions live in the serve process: a restart signs everyone out,
which costs a sign-in and keeps no login state in the database.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "dispatchsim_console"
#: a session ends this many seconds after sign-in
SESSION_TTL = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in (the key's id and label), for which tenant, and the token action forms carry."""

    key_id: str
    key_digest: str  #: the key's SHA-256, so that every request can check the key is still valid
    who: str
    tenant_id: str
    csrf: str
    expires: float

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf, given or "")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """The open sessions of one serve process, by the digest of their cookie token."""

    def __init__(self, *, ttl: float = SESSION_TTL, now: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._now = ttl, now
        self._open: dict[str, Session] = {}

    def open(self, *, key_id: str, key_digest: str, who: str, tenant_id: str) -> tuple[str, Session]:
        """A new session; returns the cookie token (shown only to the browser) and the session."""
        self._expire()
        token = secrets.token_urlsafe(32)
        session = Session(key_id=key_id, key_digest=key_digest, who=who, tenant_id=tenant_id,
                          csrf=secrets.token_urlsafe(32), expires=self._now() + self._ttl)
        self._open[_digest(token)] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._open.get(_digest(token))
        if session is None or session.expires <= self._now():
            self._open.pop(_digest(token), None)
            return None
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._open.pop(_digest(token), None)

    def _expire(self) -> None:
        now = self._now()
        for digest in [d for d, s in self._open.items() if s.expires <= now]:
            del self._open[digest]
