"""One ordered queue (the default policy) in serve mode, measured from outside: deliveries per second.

Three processes on loopback:

- ``dispatchsim serve`` (real clock, serve's default pacing) with one active configuration whose
  ordering is the default (one ordered queue: one attempt in flight, the next head only once the
  previous one is recorded), pointing at
- a fast receiver (``bench_api.py``'s: its own process, minimal HTTP/1.1, answers 200 at once)
  that notes the monotonic time of every POST, and
- this process, which POSTs N activities through the API (``POST /api/activities``, 8 requests
  in flight) as fast as the server accepts them.

Figures: the intake rate, and the queue's delivery rate over the deliveries made after the last
activity was accepted (the backlog draining with nothing else for the server to do) and over the
whole run, and the server's CPU per delivery while draining (the wall rate moves with other jobs on
a shared machine; CPU per delivery much less). Baseline in the same run: the same receiver, POSTed to one request after another by a
bare aiohttp loop (the round trip an ordered queue cannot avoid). Target (issue 17): >= 1,000/s.
Usage: python bench/bench_serve_ordered.py [N]   (default 3000; bounded: 60 s for the drain)
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sys.path)

import aiohttp

from bench_api import ACME, ADMIN, RawClient, http_request, proc_cpu, runqueue_wait

HERE = Path(__file__).resolve()
IN_FLIGHT = 8
DRAIN_LIMIT = 60.0


async def times(session: aiohttp.ClientSession, url: str) -> list[float]:
    async with session.get(url) as r:
        return json.loads(await r.text())


async def bare(session: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> float:
    """POSTs per second, one after another (what one ordered queue could do with no bookkeeping)."""
    t = time.perf_counter()
    for body in bodies:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            await r.read()
    return len(bodies) / (time.perf_counter() - t)


async def main(n: int) -> None:
    rx = subprocess.Popen([sys.executable, str(HERE.parent / "bench_api.py"), "--receiver"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    loop = asyncio.get_running_loop()
    rx_port = int(await loop.run_in_executor(None, rx.stdout.readline))  # type: ignore[union-attr]
    hook_url, times_url = f"http://127.0.0.1:{rx_port}/hooks", f"http://127.0.0.1:{rx_port}/times"
    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_ordered_"))
    cfg = tmp / "serve.yaml"
    cfg.write_text(f"keys: [{{key: {ADMIN}, admin: true}}, {{key: {ACME}, tenant: acme}}]\n"
                   "tenants: [acme]\nproviders: [crm]\nstats_interval: 3600\n")
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dispatchsim.cli", "serve", "--db", str(tmp / "b.db"), "--port",
                             "0", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent.parent)})
    try:
        line = await loop.run_in_executor(None, proc.stdout.readline)  # type: ignore[union-attr]
        base = line.split("listening on ")[1].split()[0]
        async with aiohttp.ClientSession(base_url=base) as api, aiohttp.ClientSession() as plain:
            bodies = [json.dumps({"channel": "SALESMAN", "commerceExternalId": f"COM-{i:05d}",
                                  "commerceName": "Farmacia Central"}).encode() for i in range(n)]
            await bare(plain, hook_url, bodies[:200])  # warm-up
            bare_rate = await bare(plain, hook_url, bodies)
            before = len(await times(plain, times_url))
            async with api.post("/api/dispatch-configurations", headers={"X-Api-Key": ACME}, json={
                    "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": hook_url}) as r:
                assert r.status == 201, await r.text()
                cid = (await r.json())["id"]
            async with api.post(f"/api/dispatch-configurations/{cid}/activate", headers={"X-Api-Key": ACME}) as r:
                assert r.status == 200, await r.text()
            client = RawClient(base, limit=IN_FLIGHT)
            requests = [http_request("POST", "/api/activities", json.loads(b)) for b in bodies]
            sem = asyncio.Semaphore(IN_FLIGHT)

            async def post(raw: bytes) -> None:
                async with sem:
                    status, _ = await client.request(raw)
                    assert status == 201, status

            t0 = time.monotonic()
            await asyncio.gather(*(post(raw) for raw in requests))
            accepted_at, cpu_at_accept, wait_at_accept = time.monotonic(), proc_cpu(proc.pid), runqueue_wait(proc.pid)
            client.close()
            deadline = time.monotonic() + DRAIN_LIMIT
            arrivals: list[float] = []
            while time.monotonic() < deadline:
                arrivals = (await times(plain, times_url))[before:]
                if len(arrivals) >= n:
                    break
                await asyncio.sleep(0.05)
            drain_cpu, drain_wait = proc_cpu(proc.pid) - cpu_at_accept, runqueue_wait(proc.pid) - wait_at_accept
    finally:
        proc.send_signal(signal.SIGTERM)
        await loop.run_in_executor(None, proc.wait)
        rx.stdin.close()  # type: ignore[union-attr]
        rx.wait()
        log.close()
    done = len(arrivals)
    after = [t for t in arrivals if t > accepted_at]
    intake = n / (accepted_at - t0)
    overall = done / (arrivals[-1] - t0) if arrivals else 0.0
    print(f"one ordered queue in serve mode (default pacing), {n} activities POSTed through the API, "
          f"{IN_FLIGHT} requests in flight")
    print(f"  bare aiohttp, one POST after another to the receiver : {bare_rate:8.0f} POST/s")
    print(f"  API intake                                          : {intake:8.0f} activities/s")
    print(f"  delivered {done}/{n}; whole run (first POST to last delivery): {overall:8.0f} deliveries/s")
    if len(after) > 1:
        drain = (len(after) - 1) / (after[-1] - after[0])
        print(f"  backlog drain ({len(after)} deliveries after the intake ended)  : {drain:8.0f} deliveries/s   "
              f"(target >= 1,000; {drain / bare_rate:.2f}x the bare loop)")
        print(f"  server CPU while draining                           : {drain_cpu / len(after) * 1e3:8.3f} ms per "
              f"delivery ({len(after) / drain_cpu:.0f} deliveries per CPU-second; the rest of the wall time is the "
              f"round trip and waits; it waited {drain_wait:.2f} s for a free core in all)")
    else:
        print(f"  the queue kept up with the intake: no backlog left when the last activity was accepted "
              f"(its rate is at least the intake's, {intake:.0f}/s)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
