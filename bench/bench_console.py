"""The console's delivery list with 1,000,000 deliveries in the database (target: < 100 ms a page).

The rows are written by the store's bench-only bulk operation (``bench_fill_deliveries``: one
INSERT … SELECT per table, shaped like real finished deliveries, 1 in 20 FAILED) over five
configurations of one tenant, plus a second tenant's configuration with its own rows that must
never show. Then a real aiohttp server (the serve mode app, console mounted) answers a signed-in
client on 127.0.0.1: the first page (FAILED first), the next page, a page deep in DISPATCHED,
one configuration, one status, a one-hour window. Each is timed end to end over ``--rounds``
requests; the baseline is ``GET /healthz`` from the same client in the same run.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sys.path)

import aiohttp
from aiohttp import web

from dispatchsim.engine import Engine, iso
from dispatchsim.server.api import make_app
from dispatchsim.server.keys import KeyRing, create_key


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def _time(http: aiohttp.ClientSession, path: str, rounds: int) -> tuple[list[float], str]:
    out, text = [], ""
    for _ in range(rounds):
        t0 = time.perf_counter()
        async with http.get(path) as r:
            text = await r.text()
            assert r.status == 200, (path, r.status, text[:300])
        out.append((time.perf_counter() - t0) * 1000)
    return out, text


async def main(total: int, rounds: int, configs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = await Engine.open(Path(tmp) / "bench.db", log_stream=None)
        try:
            await run(engine, total, rounds, configs)
        finally:
            await engine.close()


async def run(engine: Engine, total: int, rounds: int, configs: int) -> None:
    await engine.add_tenant("acme")
    await engine.add_tenant("other")
    await engine.add_provider("crm")
    ids = []
    for i in range(configs):
        cfg = await engine.add_config("acme", "crm", f"CH{i}", endpoint_url="http://127.0.0.1:9/hooks")
        ids.append(cfg["id"])
    theirs = (await engine.add_config("other", "crm", "CH0", endpoint_url="http://127.0.0.1:9/hooks"))["id"]
    start = engine.clock.now() - total * 0.001 - 3600
    t0 = time.perf_counter()
    per = total // configs
    for i, cid in enumerate(ids):
        await engine.store.bench_fill_deliveries(tenant_id="acme", config_id=cid, config_version=1, count=per,
                                                 failed_every=20, now=start + i * 10)
    await engine.store.bench_fill_deliveries(tenant_id="other", config_id=theirs, config_version=1, count=per // 10,
                                             failed_every=2, now=start)
    fill = time.perf_counter() - t0
    rows = sum((await engine.counts()).values())
    print(f"filled {rows:,} deliveries ({configs} configurations of one tenant + another tenant's) in {fill:.1f} s")

    _, key = await create_key(engine.store, tenant_id="acme", name="bench", now=engine.clock.now())
    app = make_app(engine, keys=KeyRing(engine.store))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", cookie_jar=jar) as http:
            async with http.post("/console/login", data={"api_key": key}) as r:
                assert r.status == 200 and "acme" in await r.text()
            base, _ = await _time(http, "/healthz", rounds)
            _, first = await _time(http, "/console/deliveries", 1)
            nxt = re.search(r'id="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
            window_from = iso(start + per * 0.0005)[:19]  # the second half of the rows' creation times
            window_to = iso(start + per * 0.0005 + 3600)[:19]
            cases = {
                "first page (FAILED first)": "/console/deliveries",
                "second page": nxt,
                "deep in DISPATCHED": f"/console/deliveries?status=DISPATCHED&cursor=3~{start + per * 0.0005!r}~{total // 2}",
                "one configuration": f"/console/deliveries?config={ids[0]}",
                "status=FAILED": "/console/deliveries?status=FAILED",
                "one-hour window": f"/console/deliveries?from={window_from}&to={window_to}",
                "window with no rows": f"/console/deliveries?from={iso(engine.clock.now() + 86400)[:19]}",
            }
            print(f"{'request':<28} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'x healthz':>10}")
            hz = statistics.median(base)
            print(f"{'GET /healthz (baseline)':<28} {hz:>10.2f} {pct(base, 95):>8.2f} {max(base):>8.2f} {1:>10.1f}")
            worst = 0.0
            for name, path in cases.items():
                times, html = await _time(http, path, rounds)
                assert html.count('<tr data-status="') == (0 if "no rows" in name else 50), name
                assert "other." not in html, name
                med = statistics.median(times)
                worst = max(worst, pct(times, 95))
                print(f"{name:<28} {med:>10.2f} {pct(times, 95):>8.2f} {max(times):>8.2f} {med / hz:>10.1f}")
            print(f"target: every page < 100 ms with {rows:,} deliveries: worst p95 {worst:.1f} ms -> "
                  f"{'OK' if worst < 100 else 'MISSED'}")
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deliveries", type=int, default=1_000_000)
    ap.add_argument("--configs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    asyncio.run(main(args.deliveries, args.rounds, args.configs))
