"""A team's own URL in a scenario: what the engine sent it, recorded, and a hard cap on how much.

A simulated endpoint records what it receives; an external one cannot, so the engine's side does:
every request to an external provider's URL goes through :class:`ExternalGate`, which records it in
the run's :class:`~providers.Recorder` (request headers with secrets redacted, body, the answer the
sender got) exactly where a simulated endpoint would. Reports and expectations (requests,
acknowledgements, duplicates, order) then read one source for both kinds of provider.

The gate also bounds the run: at most ``max_rate`` requests per second and ``max_requests`` in all
per external provider. A request beyond the count is never sent; the run stops there and says so.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dispatchsim.engine.config import Auth
from dispatchsim.engine.sender import Outcome, OutcomeKind, Request, Sender
from dispatchsim.engine.signing import webhook_headers
from dispatchsim.providers import Recorder

#: Defaults for an external provider that names no limits: a scenario must never look like a load test.
DEFAULT_MAX_RATE = 5.0
DEFAULT_MAX_REQUESTS = 500
#: Upper bounds a scenario file may set.
MAX_RATE = 100.0
MAX_REQUESTS = 100_000


@dataclass(frozen=True, slots=True)
class ExternalProvider:
    name: str
    url: str
    max_rate: float = DEFAULT_MAX_RATE  #: requests per second, at most
    max_requests: int = DEFAULT_MAX_REQUESTS  #: requests in the whole run, at most


class _Lane:
    """One external provider's pacing and count."""

    def __init__(self, provider: ExternalProvider) -> None:
        self.provider = provider
        self.sent = 0
        self.next_at = 0.0
        self.lock = asyncio.Lock()


class ExternalGate(Sender):
    """The engine's sender, with requests to external providers paced, counted, capped and recorded."""

    def __init__(self, providers: list[ExternalProvider], *, recorder: Recorder, now: Callable[[], float],
                 sleep: Callable[[float], Any], t0: float, limit: int = 100) -> None:
        super().__init__(now=now, limit=limit)
        self._lanes = {_key(p.url): _Lane(p) for p in providers}
        self._recorder = recorder
        self._sleep = sleep
        self._t0 = t0
        self.capped = asyncio.Event()  #: set when a provider's max_requests is reached
        self.capped_provider: ExternalProvider | None = None
        self._inflight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def sent(self, name: str) -> int:
        return sum(lane.sent for lane in self._lanes.values() if lane.provider.name == name)

    async def send(self, req: Request) -> Outcome:
        lane = self._lanes.get(_key(req.url))
        if lane is None:
            return await super().send(req)
        at = await self._admit(lane)
        headers = webhook_headers(webhook_id=req.webhook_id, timestamp=req.timestamp, body=req.body, auth=req.auth,
                                  signing_secret=req.signing_secret)
        self.teach(req.auth, req.signing_secret, req.url)
        record = self._open(lane, at, "POST", req.url, self._recorded(headers), req.body.decode("utf-8", "replace"))
        self._began()
        try:
            out = await super().send(req)
        finally:
            self._ended()
        self._close(record, out)
        return out

    async def verify(self, url: str, auth: Auth, *, connect: float, total: float) -> Outcome:
        lane = self._lanes.get(_key(url))
        if lane is None:
            return await super().verify(url, auth, connect=connect, total=total)
        at = await self._admit(lane)
        self.teach(auth, None, url)
        record = self._open(lane, at, "GET", url, self._recorded(auth.headers()), "")
        self._began()
        try:
            out = await super().verify(url, auth, connect=connect, total=total)
        finally:
            self._ended()
        self._close(record, out)
        return out

    def _recorded(self, headers: dict[str, str]) -> dict[str, str]:
        """Headers as the record keeps them: lower-cased names, credentials hidden by the one redaction."""
        return {k.lower(): v for k, v in self.redactor.headers(headers).items()}

    def _began(self) -> None:
        self._inflight += 1
        self._quiet.clear()

    def _ended(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._quiet.set()

    async def settle(self, wait: Callable[[asyncio.Event, float], Any], timeout: float) -> None:
        """Let the requests really sent finish (each has its own timeout); the held ones never go."""
        await wait(self._quiet, timeout)

    async def _admit(self, lane: _Lane) -> float:
        """Wait for the lane's next slot and return the moment it was given (the request's record keeps
        it: gaps between records are then at least 1/max_rate, even when the process is descheduled
        between a request's admission and its send); past ``max_requests`` wait for ever (the run stops
        first)."""
        async with lane.lock:
            if lane.sent >= lane.provider.max_requests:
                if not self.capped.is_set():
                    self.capped_provider = lane.provider
                    self.capped.set()
                await asyncio.Event().wait()  # never sent: cancelled when the run stops
            now = self._now()
            if lane.next_at > now:
                await self._sleep(lane.next_at - now)
            # The next slot counts from when this request really goes (a late wake-up under load must
            # not let the next one follow closer than 1/max_rate).
            at = max(self._now(), lane.next_at)
            lane.next_at = at + 1.0 / lane.provider.max_rate
            lane.sent += 1
            return at

    def _open(self, lane: _Lane, at: float, method: str, url: str, headers: dict[str, str], body: str) -> Any:
        parts = urlsplit(url)
        return self._recorder.open(endpoint=lane.provider.name, at=at, offset=at - self._t0, method=method,
                                   path=parts.path or "/", query=parts.query, headers=headers, body=body)

    def _close(self, record: Any, out: Outcome) -> None:
        record.response_status = out.status
        if out.kind not in (OutcomeKind.SUCCESS, OutcomeKind.HTTP_ERROR):
            record.fault = out.kind.value.lower()
            record.note = out.error
        self._recorder.close(record, self._now())


def _key(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port, parts.path or "/"
