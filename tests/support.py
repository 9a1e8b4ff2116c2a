"""A small programmable receiver for engine tests (the full simulator lives in providers/)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Hit:
    at: float
    method: str
    webhook_id: str | None
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """Answers each request via ``respond(hit, n) -> (status, headers, delay[, body text])``; records every hit."""

    clock_now: Callable[[], float]
    respond: Callable[[Hit, int], tuple[int, dict[str, str], float]] = lambda h, n: (200, {}, 0.0)
    verify_status: int = 200
    hits: list[Hit] = field(default_factory=list)
    port: int = 0

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/hooks", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.Response(status=self.verify_status, text="verify")
        raw = await request.read()
        hit = Hit(at=self.clock_now(), method=request.method, webhook_id=request.headers.get("webhook-id"),
                  headers=dict(request.headers), body=json.loads(raw) if raw else None)
        self.hits.append(hit)
        status, headers, delay, *text = self.respond(hit, len(self.hits))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers, text=text[0] if text else ("ok" if status < 300 else "nope"))

    def posts(self) -> list[Hit]:
        return [h for h in self.hits if h.method == "POST"]


async def start_site(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 on a free port; returns the runner (``await runner.cleanup()``) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def run_sync(coro: Any) -> Any:
    """Await a store operation from a sync test (one that also calls the CLI, which runs its own loop):
    the SQLite store never suspends, so a loop of its own for the call is all it needs."""
    return asyncio.run(coro)
