"""The probe's side of the wire: requests as the engine sends them, plus the odd ones it never does.

Well-formed requests go through the engine's :class:`~engine.sender.Sender` (same headers, same
signature, same outcome classification); the probe only adds connection tracing, and writes raw
bytes itself for the one thing aiohttp will not do: abandon a request half-way through its body.
"""
from __future__ import annotations

import asyncio
import contextvars
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dispatchsim.engine.config import Auth
from dispatchsim.engine.redact import Redactor
from dispatchsim.engine.sender import USER_AGENT, Outcome, OutcomeKind, Sender
from dispatchsim.engine.signing import webhook_headers

from .repro import curl_line
from .report import Evidence

#: The response headers of the exchange running in this task (set by the trace hook, read by ``Wire``).
_RESPONSE_HEADERS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("probe_response_headers",
                                                                                         default=None)


def redactor_for(auth: Auth, secret: str | None) -> Redactor:
    """The engine's one redaction, knowing the probe's credentials and signing secret: every exchange
    is scrubbed when it is recorded, so no report can hold a credential."""
    return Redactor(*auth.secrets(), secret, headers=auth.secret_headers())


class ProbeSender(Sender):
    """The engine's sender with a choice of connection policy and a count of connections made."""

    def __init__(self, *, now: Callable[[], float], limit: int, redactor: Redactor, force_close: bool = False) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(self._created)
        trace.on_connection_reuseconn.append(self._reused)
        trace.on_request_end.append(self._response)
        super().__init__(now=now, limit=limit, force_close=force_close, trace_configs=(trace,), redactor=redactor)
        self.connections_created = 0
        self.connections_reused = 0

    async def _created(self, *_: Any) -> None:
        self.connections_created += 1

    async def _reused(self, *_: Any) -> None:
        self.connections_reused += 1

    async def _response(self, _session: Any, _ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        # runs in the requesting task, so the context variable reaches the Wire that sent it
        holder = _RESPONSE_HEADERS.get()
        if holder is not None:
            holder.update(params.response.headers)


class Wire:
    """Builds the headers a delivery carries and records every exchange as redacted evidence."""

    def __init__(self, url: str, *, auth: Auth, secret: str | None, now: Callable[[], float],
                 connect: float, total: float, redactor: Redactor, t0: float) -> None:
        self.url = url
        self.auth = auth
        self.secret = secret
        self.now = now
        self.connect = connect
        self.total = total
        self.redactor = redactor
        self.t0 = t0
        self.sent = 0
        self.evidence: list[Evidence] = []  #: the current check's exchanges; the runner swaps it
        self.check = ""  #: the current check's id (reproduction lines find large bodies by it)

    def headers(self, body: bytes, webhook_id: str, *, timestamp: int | None = None, auth: Auth | None = None,
                signature: str | None = None) -> dict[str, str]:
        """A delivery's headers as the engine sends them; ``signature`` overrides the computed one."""
        ts = int(self.now()) if timestamp is None else timestamp
        return webhook_headers(webhook_id=webhook_id, timestamp=ts, body=body, auth=self.auth if auth is None else auth,
                               signing_secret=self.secret, signature=signature)

    async def post(self, sender: ProbeSender, label: str, body: bytes, headers: dict[str, str], *,
                   data: Any = None, total: float | None = None) -> Evidence:
        return await self._send(sender, "POST", label, headers, body, data if data is not None else body, total)

    async def get(self, sender: ProbeSender, label: str, url: str | None = None) -> Evidence:
        return await self._send(sender, "GET", label, self.auth.headers(), b"", None, None, url=url)

    async def _send(self, sender: ProbeSender, method: str, label: str, headers: dict[str, str], body: bytes,
                    data: Any, total: float | None, *, url: str | None = None) -> Evidence:
        loop = asyncio.get_running_loop()
        started = loop.time() - self.t0
        self.sent += 1
        target = url or self.url
        response_headers: dict[str, str] = {}
        token = _RESPONSE_HEADERS.set(response_headers)
        try:
            outcome = await sender.exchange(method, target, headers=headers, data=data, connect=self.connect,
                                            total=total if total is not None else self.total)
        finally:
            _RESPONSE_HEADERS.reset(token)
        return self.record(label, method, headers, body, outcome, started, url=target,
                           response_headers=response_headers)

    def record(self, label: str, method: str, headers: dict[str, str], body: bytes, outcome: Outcome,
               started: float, *, url: str | None = None, response_headers: dict[str, str] | None = None,
               repro: bool = True) -> Evidence:
        """The exchange as evidence: the whole request body (redacted), the response, its timing, and a
        ``curl`` line that repeats it (``repro=False`` for what curl cannot do, e.g. an aborted body)."""
        r = self.redactor
        curl = None
        if repro:
            curl = r.text(curl_line(method=method, url=r.url(url or self.url), headers=headers, body=body,
                                    auth=self.auth, secret=self.secret, now=int(self.now()), check=self.check,
                                    index=len(self.evidence)))
        ev = Evidence(label=label, method=method, url=r.url(url or self.url), request_headers=r.headers(headers),
                      request_body=r.text(body.decode("utf-8", "replace")) if body else None,
                      request_size=len(body), status=outcome.status,
                      response_headers=r.headers(response_headers or {}),
                      response_excerpt=outcome.excerpt, outcome=outcome.kind.value,
                      error=r.error(outcome.error) if outcome.error else None, started=round(started, 6), latency=outcome.latency, curl=curl)
        self.evidence.append(ev)
        return ev


async def slow_chunks(body: bytes, parts: int, interval: float,
                      sleep: Callable[[float], Any]) -> AsyncIterator[bytes]:
    """The body in ``parts`` pieces with ``interval`` seconds between them."""
    size = max(1, -(-len(body) // parts))
    for i in range(0, len(body), size):
        if i:
            await sleep(interval)
        yield body[i:i + size]


async def abort_mid_body(url: str, headers: dict[str, str], body: bytes, *, sent_fraction: float,
                         pause: float, connect: float, sleep: Callable[[float], Any]) -> tuple[int, str | None]:
    """Announce the whole body, send part of it, wait, then reset the connection.

    Returns (bytes of body sent, error or None). Raw sockets: an HTTP client library always
    finishes the body it started.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    try:
        async with asyncio.timeout(connect):
            reader, writer = await asyncio.open_connection(host, port, ssl=context,
                                                           server_hostname=host if secure else None)
    except (OSError, TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rsplit("@", 1)[-1]
    lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}", f"User-Agent: {USER_AGENT}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    sent = int(len(body) * sent_fraction)
    try:
        writer.write(head + body[:sent])
        await writer.drain()
        await sleep(pause)
    except OSError as exc:
        return sent, f"{type(exc).__name__}: {exc}"
    finally:
        writer.transport.abort()
    return sent, None


def outcome_ok(ev: Evidence) -> bool:
    return ev.outcome == OutcomeKind.SUCCESS.value


def responded(ev: Evidence) -> bool:
    return ev.status is not None


def evidences_by_status(evs: Iterable[Evidence]) -> dict[str, int]:
    """``{"HTTP 200": 18, "HTTP 503": 1, "TIMEOUT": 1}``, in first-seen order."""
    out: dict[str, int] = {}
    for ev in evs:
        key = f"HTTP {ev.status}" if ev.status is not None else ev.outcome
        out[key] = out.get(key, 0) + 1
    return out
