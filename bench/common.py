"""Shared helpers for the benchmarks (not tests: they print figures, they assert nothing)."""
from __future__ import annotations

import resource
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / (1024 * 1024)


async def ok_server() -> tuple[web.AppRunner, str]:
    """An always-200 endpoint on 127.0.0.1 in this process (the benchmarks' fast receiver); returns
    the runner (``await runner.cleanup()`` when done) and the URL to post to."""
    async def ok(request: web.Request) -> web.Response:
        if request.method == "POST":
            await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/hooks", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks"
