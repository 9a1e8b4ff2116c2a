"""A results-callback receiver on 127.0.0.1: how the probe sees whether a duplicate was processed twice.

The endpoint under test reports each processed activity as ``POST …/activity-results/tasks``
with ``{"activity_id": "<payload id>", …}`` (the seed's results call). Pointing that call at this
listener lets the probe count how many times each delivery was processed.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from .settings import ProbeError

RESULTS_PATH = "/api/integration/activity-results/tasks"


@dataclass(frozen=True, slots=True)
class Callback:
    at: float  #: loop time
    activity_id: str
    sequence: float | None = None  #: the body's ``sequence`` (or numeric ``processed_at``), when it has one


class ResultsListener:
    """``async with ResultsListener() as listener: listener.url`` — port 0 (the default) picks a free port;
    any path is accepted."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.path = RESULTS_PATH  #: shown in the URL; any path is accepted
        self.callbacks: list[Callback] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The URL to give the endpoint for its processing callbacks."""
        return f"http://{self.host}:{self.port}{self.path}"

    @classmethod
    def at(cls, url: str) -> ResultsListener:
        """A listener bound to the host and port of ``url`` (the callback URL a team already configured)."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "http" or not parts.hostname or port is None:
            raise ProbeError(f"--results-url: expected http://HOST:PORT/…, got {url.split('?')[0]!r}")
        listener = cls(host=parts.hostname, port=port)
        listener.path = parts.path or "/"
        return listener

    def count(self, activity_id: str) -> int:
        """How many callbacks reported this activity id as processed."""
        return Counter(c.activity_id for c in self.callbacks)[activity_id]

    def first(self, activity_id: str) -> Callback | None:
        """The first callback for this activity (its time or sequence tells the processing order)."""
        return next((c for c in self.callbacks if c.activity_id == activity_id), None)

    async def start(self) -> None:
        """Listen; afterwards ``port`` is the port actually bound."""
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Stop listening; the callbacks received stay readable."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ResultsListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        items = data if isinstance(data, list) else [data]
        found = [i for i in items if isinstance(i, dict) and (i.get("activity_id") or i.get("activityId"))]
        if not found:
            return web.json_response({"error": "missing activity_id"}, status=400)
        now = asyncio.get_running_loop().time()
        self.callbacks.extend(Callback(now, str(i.get("activity_id") or i.get("activityId")), _sequence(i))
                              for i in found)
        return web.json_response({"ok": True})


def _sequence(item: dict[str, object]) -> float | None:
    for key in ("sequence", "processed_at"):
        value = item.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None
