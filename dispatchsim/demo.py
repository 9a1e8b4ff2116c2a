"""The built-in demo: 3 activities to an endpoint on 127.0.0.1 that fails for 10 simulated minutes."""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from aiohttp import web

from dispatchsim.engine import Engine, Status, run_virtual
from dispatchsim.engine.clock import fmt_offset, iso


async def _demo(out: TextIO, outage: float) -> dict[str, int]:
    engine = await Engine.open(":memory:", virtual=True, seed=7)
    t0 = engine.clock.now()
    requests = 0

    async def hooks(request: web.Request) -> web.Response:
        nonlocal requests
        if request.method == "GET":
            return web.Response(text="verification ok")
        await request.read()
        requests += 1
        down = engine.clock.now() - t0 < outage
        return web.Response(status=503 if down else 200, text="down for maintenance" if down else "ok")

    app = web.Application()
    app.router.add_route("*", "/hooks", hooks)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/hooks"

    def show(event: dict[str, Any]) -> None:
        name = event["event"]
        if name in ("delivery.retrying", "delivery.dispatched", "delivery.failed"):
            nxt = event.get("next_attempt_at") or "-"
            if nxt != "-":
                nxt = fmt_offset(_parse(nxt) - t0)
            code = event.get("code") if event.get("code") is not None else event.get("outcome")
            try:
                out.write(f"  {fmt_offset(engine.clock.now() - t0):>9}  delivery {event['delivery_id']}  "
                          f"attempt {event['attempt']}  -> {code}  {event['status']:<10}  next: {nxt}\n")
            except BrokenPipeError:  # the reader went away (`| head`): not the engine's failure; the demo's
                pass                 # next own write raises it to the command, which stops quietly

    try:
        out.write(f"dispatchsim demo: endpoint {url} answers 503 for the first {outage / 60:g} simulated "
                  "minutes, then 200\n")
        await engine.add_tenant("demo-tenant")
        await engine.add_provider("demo-crm")
        await engine.add_config("demo-tenant", "demo-crm", "SALESMAN", endpoint_url=url, activate=True,
                                auth={"type": "api_key", "header": "X-Api-Key", "value": "demo-secret-key"})
        engine.subscribe(show)
        for n in range(3):
            await engine.create_activity("demo-tenant", {"channel": "SALESMAN",
                                                         "commerceExternalId": f"COM-00{n + 1}"})
        out.write(f"  {'sim time':>9}  {'delivery':<10}  {'attempt':<9}     {'code':<3}  {'status':<10}  next\n")
        summary = await engine.run_until_idle(max_time=24 * 3600)
        out.write("final statuses:\n")
        for d in await engine.deliveries():
            out.write(f"  delivery {d.id}  {d.status.value:<10}  attempts {d.attempts}  "
                      f"dispatched at {fmt_offset(d.dispatched_at - t0) if d.dispatched_at else '-'}\n")
        out.write(f"simulated {fmt_offset(summary.elapsed)} of time; the endpoint got {requests} POSTs\n")
        return summary.counts
    finally:
        await engine.close()
        await runner.cleanup()


def _parse(text: str) -> float:
    from dispatchsim.engine.clock import parse_iso

    return parse_iso(text)


def run_demo(out: TextIO = sys.stdout, outage: float = 600.0) -> int:
    wall = time.perf_counter()
    counts = run_virtual(_demo(out, outage))
    out.write(f"wall time {time.perf_counter() - wall:.2f}s\n")
    return 0 if counts.get(Status.DISPATCHED.value) == 3 else 1


__all__ = ["run_demo", "iso"]
