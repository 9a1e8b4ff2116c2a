"""API load: activities accepted per second through ``POST /api/activities`` with dispatch running.

``dispatchsim serve`` runs as its own process (real clock) with an active configuration pointing
at an always-200 endpoint in this process, so every accepted activity is also dispatched while
the load runs. An open-loop generator sends at a fixed rate (default 500/s for 10 s) and records
each request's latency; the baseline is ``GET /healthz`` at the same rate, same client, same server.
Target: p99 < 50 ms at 500 activities/s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sys.path)

import aiohttp
from aiohttp import web

DISPATCH = os.environ.get("BENCH_NO_DISPATCH") is None
ADMIN, ACME = "bench-admin-key-0000000", "bench-acme-key-00000000"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def open_loop(session: aiohttp.ClientSession, rate: float, seconds: float, make) -> tuple[list[float], int]:
    """Send ``rate`` requests/s for ``seconds`` regardless of answers; returns latencies (s) and errors."""
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        method, path, body = make(i)
        t0 = time.perf_counter()
        try:
            async with session.request(method, path, json=body, headers={"X-Api-Key": ACME}) as resp:
                await resp.read()
                if resp.status >= 300:
                    errors += 1
        except aiohttp.ClientError:
            errors += 1
        latencies.append(time.perf_counter() - t0)

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies, errors


async def main(rate: float, seconds: float) -> None:
    received = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        if request.method == "POST":
            received += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/hooks", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks"

    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    cfg = tmp / "serve.yaml"
    cfg.write_text(f"keys: [{{key: {ADMIN}, admin: true}}, {{key: {ACME}, tenant: acme}}]\n"
                   "tenants: [acme]\nproviders: [crm]\nstats_interval: 3600\n")
    proc = subprocess.Popen([sys.executable, "-m", "dispatchsim.cli", "serve", "--db", str(tmp / "b.db"), "--port",
                             "0", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
    base = line.split("listening on ")[1].split()[0]
    try:
        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(base_url=base, connector=conn) as s:
            async with s.post("/api/dispatch-configurations", headers={"X-Api-Key": ACME}, json={
                    "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": hook_url,
                    "ordering": {"mode": "none", "concurrency": 50}}) as r:
                cid = (await r.json())["id"]
            async with s.post(f"/api/dispatch-configurations/{cid}/{'activate' if DISPATCH else 'deactivate'}", headers={"X-Api-Key": ACME}) as r:
                assert r.status == 200, await r.text()
            # warm-up, then the baseline, then the load
            await open_loop(s, rate, 1.0, lambda i: ("GET", "/healthz", None))
            base_lat, base_err = await open_loop(s, rate, seconds, lambda i: ("GET", "/healthz", None))
            activity = {"channel": "SALESMAN", "commerceExternalId": "COM-001", "commerceName": "Farmacia Central",
                        "reason": {"code": "CHURN_RISK", "label": "Riesgo de fuga"}}
            t0 = time.perf_counter()
            lat, err = await open_loop(s, rate, seconds, lambda i: ("POST", "/api/activities", activity))
            wall = time.perf_counter() - t0
            accepted = len(lat) - err
            dispatched_during = received
            deadline = time.perf_counter() + 30
            while received < accepted and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        await runner.cleanup()

    p50, p99 = pct(lat, 50) * 1000, pct(lat, 99) * 1000
    b50, b99 = pct(base_lat, 50) * 1000, pct(base_lat, 99) * 1000
    print(json.dumps({"rate": rate, "seconds": seconds, "accepted": accepted, "errors": err,
                      "accepted_per_s": round(accepted / wall, 1), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                      "mean_ms": round(statistics.mean(lat) * 1000, 2), "healthz_p50_ms": round(b50, 2),
                      "healthz_p99_ms": round(b99, 2), "healthz_errors": base_err,
                      "dispatched_during_load": dispatched_during, "dispatched_total": received}))
    print(f"POST /api/activities at {rate:g}/s for {seconds:g}s with dispatch {"running" if DISPATCH else "off"}: {accepted} accepted "
          f"({accepted / wall:.0f}/s), {err} errors; p50 {p50:.1f} ms, p99 {p99:.1f} ms "
          f"(target p99 < 50 ms: {'met' if p99 < 50 else 'NOT met'})")
    print(f"baseline GET /healthz at the same rate: p50 {b50:.1f} ms, p99 {b99:.1f} ms -> "
          f"activities/healthz p50 {p50 / b50:.2f}x, p99 {p99 / b99:.2f}x")
    print(f"dispatched to the endpoint: {dispatched_during} during the load, {received} in the end "
          f"(every accepted activity {'was' if received >= accepted else 'was NOT'} delivered)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    asyncio.run(main(args.rate, args.seconds))
