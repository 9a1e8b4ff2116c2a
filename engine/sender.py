"""One HTTP try -> one ``Outcome``. Classification happens here, once, by exception type."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, NamedTuple

import aiohttp

from .config import Auth
from .payload import encode_body  # noqa: F401 - the sender's body encoding, re-exported for its callers
from .redact import Redactor, redact_url, url_secrets
from .signing import webhook_headers

VERSION = "0.1.0"
USER_AGENT = f"dispatchsim/{VERSION}"
BODY_READ_CAP = 64 * 1024
_NEW = tuple.__new__
#: Stored excerpt of a response body (UTF-8 bytes), cut after scrubbing.
EXCERPT_CAP = 1024


class OutcomeKind(str, Enum):
    """What kind of result one HTTP try had; decides between success, retry and giving up."""

    #: 2xx: the receiver confirmed.
    SUCCESS = "SUCCESS"
    #: Any other status, 3xx included (redirects are not followed).
    HTTP_ERROR = "HTTP_ERROR"
    #: Connect or total timeout.
    TIMEOUT = "TIMEOUT"
    #: Refused, reset, closed before a response.
    CONNECT_ERROR = "CONNECT_ERROR"
    #: Not HTTP, or a response that broke off (truncated body, garbage).
    PROTOCOL_ERROR = "PROTOCOL_ERROR"

    def __str__(self) -> str:
        return self.value


class Outcome(NamedTuple):
    """The result of one HTTP try, classified once, so the policy and the health tracker read it the same way.

    ``status`` is set for an HTTP answer only; ``retry_after`` is in seconds (from a Retry-After
    header on 429/503); ``latency`` is in seconds; ``excerpt`` is the start of the response body,
    with known secrets hidden. An immutable record made a named tuple, as the store's ``Claim``:
    one is built per attempt, for a third of a frozen dataclass's cost.
    """

    kind: OutcomeKind
    status: int | None = None
    retry_after: float | None = None  #: seconds, from a Retry-After header on 429/503
    latency: float = 0.0
    excerpt: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the receiver confirmed (a 2xx answer)."""
        return self.kind is OutcomeKind.SUCCESS

    def describe(self) -> str:
        """One short phrase for logs and reports: ``HTTP 503`` or ``timeout: ...``."""
        if self.status is not None:
            return f"HTTP {self.status}"
        return f"{self.kind.value.lower()}: {self.error}" if self.error else self.kind.value.lower()


class Request(NamedTuple):
    """One delivery's HTTP try as the sender makes it (a named tuple, as :class:`Outcome`)."""

    url: str
    body: bytes
    webhook_id: str
    timestamp: int
    auth: Auth
    signing_secret: str | None
    connect_timeout: float
    total_timeout: float


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class Sender:
    """Owns the one aiohttp session of an engine; bounded connections globally."""

    def __init__(self, *, now, limit: int = 100, limit_per_host: int = 0, force_close: bool = False,
                 trace_configs: tuple[aiohttp.TraceConfig, ...] = (), redactor: Redactor | None = None) -> None:
        """``force_close``: a new connection per request; ``trace_configs``: aiohttp connection tracing
        (the probe counts new and reused connections with it); ``redactor``: the secrets to scrub from
        what receivers send back (it also learns every credential this sender sends)."""
        self._now = now
        self.redactor = redactor if redactor is not None else Redactor()
        self._taught: set[tuple[Auth, str | None, str]] = set()  #: credentials the redactor already knows
        #: the (auth, secret, url) objects taught last: one snapshot's attempts pass the same objects,
        #: so an identity check spares hashing them for every request
        self._taught_last: tuple[Auth | None, str | None, str | None] = (None, None, None)
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._force_close = force_close
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit_per_host,
                                             force_close=self._force_close, enable_cleanup_closed=False,
                                             keepalive_timeout=None if self._force_close else 60.0)
            # no cookie jar: this one session serves every tenant, and a cookie one endpoint sets
            # must never ride along on a later request (another tenant's to the same host included)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  headers={"User-Agent": USER_AGENT},
                                                  trace_configs=self._trace_configs or None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("sender not started")
        return self._session

    def _timeout(self, connect: float, total: float) -> aiohttp.ClientTimeout:
        """One immutable timeout object per (connect, total) pair, shared by every request using it.
        ``ceil_threshold``: never round timeouts up, so they are exact on the virtual clock too."""
        timeout = self._timeouts.get((connect, total))
        if timeout is None:
            timeout = self._timeouts[(connect, total)] = aiohttp.ClientTimeout(total=total, connect=connect,
                                                                                ceil_threshold=10 ** 9)
        return timeout

    def teach(self, auth: Auth, signing_secret: str | None, url: str) -> None:
        """Make sure whatever credential goes out is scrubbed from whatever comes back (and hidden in
        any record of the request's headers)."""
        last = self._taught_last
        if auth is last[0] and signing_secret is last[1] and url is last[2]:
            return
        key = (auth, signing_secret, url)
        self._taught_last = key
        if key not in self._taught:
            self.redactor.add(*auth.secrets(), signing_secret, *url_secrets(url))
            self.redactor.add_headers(*auth.secret_headers())
            self._taught.add(key)

    def send(self, req: Request) -> Coroutine[Any, Any, Outcome]:
        """One delivery's POST, as a coroutine to await: not a coroutine function of its own, so an attempt
        runs one coroutine (the exchange's) rather than two."""
        last = self._taught_last  # (teach's own first test, here without a call: once per attempt)
        if req.auth is not last[0] or req.signing_secret is not last[1] or req.url is not last[2]:
            self.teach(req.auth, req.signing_secret, req.url)
        headers = webhook_headers(webhook_id=req.webhook_id, timestamp=req.timestamp, body=req.body, auth=req.auth,
                                  signing_secret=req.signing_secret)
        timeout = self._timeouts.get((req.connect_timeout, req.total_timeout))
        return self._request("POST", req.url, headers=headers, data=req.body,
                             timeout=timeout or self._timeout(req.connect_timeout, req.total_timeout))

    async def exchange(self, method: str, url: str, *, headers: dict[str, str], data: Any,
                       connect: float, total: float) -> Outcome:
        """One request with exactly these headers and body, classified like any delivery attempt
        (used by the probe to send crafted requests)."""
        return await self._request(method, url, headers=headers, data=data, timeout=self._timeout(connect, total))

    async def verify(self, url: str, auth: Auth, *, connect: float, total: float) -> Outcome:
        """The verification GET sent on activation (as Reteno does when a webhook URL is saved)."""
        self.teach(auth, None, url)
        return await self._request("GET", url, headers=auth.headers(), data=None,
                                   timeout=self._timeout(connect, total))

    async def _request(self, method: str, url: str, *, headers: dict[str, str], data: bytes | None,
                       timeout: aiohttp.ClientTimeout) -> Outcome:
        """One exchange. What the receiver sent back (body, or the error it caused) is scrubbed of every
        known secret here, at the edge, before it is cut, stored or logged anywhere."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            async with self.session.request(method, url, headers=headers, data=data, timeout=timeout,
                                            allow_redirects=False) as resp:
                # the body, at most BODY_READ_CAP bytes (a receiver may send anything): the usual short answer
                # in one read, without a coroutine of its own nor a second read to learn that it ended
                content = resp.content
                raw = await content.read(BODY_READ_CAP)
                if raw and not content.at_eof():
                    raw = await _read_rest(content, raw)
                status = resp.status
                excerpt = self.redactor.excerpt(raw, EXCERPT_CAP, truncated=len(raw) >= BODY_READ_CAP)
                if 200 <= status < 300:
                    # fields in order (kind, status, retry_after, latency, excerpt, error): one per attempt, made
                    # without the Python call of a named tuple's constructor
                    return _NEW(Outcome, (OutcomeKind.SUCCESS, status, None, round(loop.time() - t0, 6), excerpt,
                                          None))
                retry_after = None
                if status in (429, 503):
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._now())
                return Outcome(kind=OutcomeKind.HTTP_ERROR, status=status, excerpt=excerpt, retry_after=retry_after,
                               latency=round(loop.time() - t0, 6))
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return self._failed(OutcomeKind.TIMEOUT, exc, url, t0)
        except aiohttp.ClientConnectorError as exc:
            return self._failed(OutcomeKind.CONNECT_ERROR, exc, url, t0)
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            # aiohttp reports a garbage response as a 400 ClientResponseError: it is not a status
            return self._failed(OutcomeKind.PROTOCOL_ERROR, exc, url, t0)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError) as exc:
            return self._failed(OutcomeKind.CONNECT_ERROR, exc, url, t0)
        except aiohttp.ClientError as exc:
            return self._failed(OutcomeKind.PROTOCOL_ERROR, exc, url, t0)
        except ValueError as exc:  # a request the client refuses to build: a failed try, never a crashed loop
            return self._failed(OutcomeKind.PROTOCOL_ERROR, exc, url, t0)

    def _failed(self, kind: OutcomeKind, exc: BaseException, url: str, t0: float) -> Outcome:
        """The outcome of a try that got no usable answer, its error scrubbed of known secrets."""
        return Outcome(kind=kind, error=self.redactor.error(_describe(exc, url)),
                       latency=round(asyncio.get_running_loop().time() - t0, 6))


async def _read_rest(content: aiohttp.StreamReader, first: bytes) -> bytes:
    """A response body whose first read (``first``) did not reach its end: all of it, ``first`` and what
    follows, at most :data:`BODY_READ_CAP` bytes."""
    chunks = [first]
    size = len(first)
    while size < BODY_READ_CAP:
        chunk = await content.read(BODY_READ_CAP - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if content.at_eof():
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _describe(exc: BaseException, url: str) -> str:
    """Exception class and message with the URL's credentials hidden."""
    text = str(exc)
    safe = redact_url(url)
    if safe != url:
        text = text.replace(url, safe)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
