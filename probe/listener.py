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

from aiohttp import web

RESULTS_PATH = "/api/integration/activity-results/tasks"


@dataclass(frozen=True, slots=True)
class Callback:
    at: float  #: loop time
    activity_id: str


class ResultsListener:
    """``async with ResultsListener(port=9200) as listener: listener.url`` — any path is accepted."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.callbacks: list[Callback] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{RESULTS_PATH}"

    def count(self, activity_id: str) -> int:
        return Counter(c.activity_id for c in self.callbacks)[activity_id]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
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
        ids = [str(i.get("activity_id") or i.get("activityId")) for i in items
               if isinstance(i, dict) and (i.get("activity_id") or i.get("activityId"))]
        if not ids:
            return web.json_response({"error": "missing activity_id"}, status=400)
        now = asyncio.get_running_loop().time()
        self.callbacks.extend(Callback(now, i) for i in ids)
        return web.json_response({"ok": True})
