"""Simulation: 10,000 activities over 10 endpoints, 3 of them down for 6 simulated hours.

Virtual clock, ordered queues, Reteno policy (never gives up). Checks that everything is
delivered, in creation order per endpoint, and prints wall time, simulated time, peak RSS.
Baseline in the same run: the same 10,000 activities with every endpoint healthy.
Usage: python bench/bench_simulation.py [ACTIVITIES]
"""
from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from common import peak_rss_mb
from aiohttp import web

from dispatchsim.engine import Engine, run_virtual
from dispatchsim.engine.clock import fmt_offset
from dispatchsim.mapping.activity import example_activity

ENDPOINTS = 10
DOWN = {0, 3, 7}
OUTAGE = 6 * 3600


async def simulate(n: int, db: Path, outage: bool) -> dict:
    engine = await Engine.open(db, virtual=True, seed=11)
    t0 = engine.clock.now()
    received: dict[int, list[str]] = {i: [] for i in range(ENDPOINTS)}
    posts = 0

    def handler(i: int):
        async def handle(request: web.Request) -> web.Response:
            nonlocal posts
            if request.method == "GET":
                return web.Response(text="ok")
            body = await request.json()
            posts += 1
            if outage and i in DOWN and engine.clock.now() - t0 < OUTAGE:
                return web.Response(status=503)
            received[i].append(body["id"])
            return web.Response(text="ok")
        return handle

    runners = []
    await engine.add_provider("crm")
    for i in range(ENDPOINTS):
        app = web.Application()
        app.router.add_route("*", "/hooks", handler(i))
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        await engine.add_tenant(f"t{i}")
        await engine.add_config(f"t{i}", "crm", "SALESMAN", config_id=f"ep{i}", activate=True,
                                endpoint_url=f"http://127.0.0.1:{port}/hooks", retry="reteno")
    rng = random.Random(11)
    created: dict[int, list[str]] = {i: [] for i in range(ENDPOINTS)}
    wall = time.perf_counter()
    for k in range(n):
        i = k % ENDPOINTS
        act = await engine.create_activity(f"t{i}", example_activity(rng))
        created[i].append(act["id"])
    summary = await engine.run_until_idle(max_time=48 * 3600)
    wall = time.perf_counter() - wall
    in_order = all(list(dict.fromkeys(received[i])) == created[i] for i in range(ENDPOINTS))
    attempts = await engine.store.attempt_count()
    await engine.close()
    for r in runners:
        await r.cleanup()
    return {"wall": wall, "simulated": summary.elapsed, "counts": summary.counts, "in_order": in_order,
            "attempts": attempts, "posts": posts}


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        base = run_virtual(simulate(n, Path(d) / "base.db", outage=False))
        res = run_virtual(simulate(n, Path(d) / "outage.db", outage=True))
    print(f"simulation: {n} activities over {ENDPOINTS} endpoints, {len(DOWN)} down for "
          f"{OUTAGE / 3600:g} simulated hours (virtual clock, ordered, reteno policy)")
    for label, r in (("all healthy (baseline)", base), ("6-hour outage", res)):
        print(f"  {label:<24}: wall {r['wall']:6.2f} s  simulated {fmt_offset(r['simulated']):>10}  "
              f"attempts {r['attempts']:6d}  dispatched {r['counts']['DISPATCHED']:6d}  in order: {r['in_order']}")
    print(f"  ratio outage / baseline wall: {res['wall'] / base['wall']:.2f}")
    print(f"  speed-up vs real time: {res['simulated'] / res['wall']:,.0f}x")
    print(f"  peak RSS of this process: {peak_rss_mb():.0f} MB   (targets: wall < 30 s, RSS < 200 MB)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
