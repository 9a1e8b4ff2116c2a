"""Throughput: engine deliveries/s to an always-200 endpoint vs a bare aiohttp loop, same run.

Both post the same payloads at the same concurrency to the same in-process aiohttp server on
127.0.0.1; the engine also records every attempt durably in SQLite (WAL) and walks the state
machine. Wall rates and CPU seconds per delivery of both are printed: on a machine shared with other
jobs the wall ratio moves with their load; CPU per delivery much less.
Target (issue 17): engine >= 0.8x the bare loop. Usage: python bench/bench_throughput.py [N] [CONCURRENCY]
"""
from __future__ import annotations

import asyncio
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import ok_server
import aiohttp

from dispatchsim.engine import Engine
from dispatchsim.mapping.activity import example_activity
from dispatchsim.engine.sender import encode_body


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def bare(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, float]:
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def one(body: bytes) -> None:
            async with sem:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    assert r.status == 200
        t, c = time.perf_counter(), cpu()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t, cpu() - c


async def engine_run(url: str, n: int, concurrency: int, db: Path) -> tuple[float, float, float, int]:
    eng = await Engine.open(db, concurrency=concurrency, seed=1)
    await eng.add_tenant("t")
    await eng.add_provider("p")
    await eng.add_config("t", "p", "SALESMAN", endpoint_url=url, activate=True,
                         ordering={"mode": "none", "concurrency": concurrency})
    rng = random.Random(1)
    t = time.perf_counter()
    for _ in range(n):
        await eng.create_activity("t", example_activity(rng))
    create = time.perf_counter() - t
    t, c = time.perf_counter(), cpu()
    summary = await eng.run_until_idle()
    run, run_cpu = time.perf_counter() - t, cpu() - c
    attempts = await eng.store.attempt_count("SUCCESS")
    assert summary.counts["DISPATCHED"] == n == attempts, summary.counts
    await eng.close()
    return create, run, run_cpu, attempts


async def main(n: int, concurrency: int) -> None:
    runner, url = await ok_server()
    rng = random.Random(1)
    bodies = [encode_body({**example_activity(rng), "id": str(i)}) for i in range(n)]
    try:
        await bare(url, bodies[: min(500, n)], concurrency)  # warm-up
        bare_s, bare_cpu = await bare(url, bodies, concurrency)
        with tempfile.TemporaryDirectory() as d:
            create_s, run_s, run_cpu, attempts = await engine_run(url, n, concurrency, Path(d) / "bench.db")
        again_s, again_cpu = await bare(url, bodies, concurrency)  # the faster baseline counts (shared machine)
        if again_s < bare_s:
            bare_s, bare_cpu = again_s, again_cpu
    finally:
        await runner.cleanup()
    bare_rate, eng_rate = n / bare_s, n / run_s
    print(f"throughput, {n} deliveries, concurrency {concurrency}, always-200 endpoint on 127.0.0.1")
    print(f"  bare aiohttp loop (baseline) : {bare_rate:8.0f} POST/s")
    print(f"  dispatchsim engine           : {eng_rate:8.0f} deliveries/s  ({attempts} attempts recorded in SQLite)")
    print(f"  ratio engine / bare          : {eng_rate / bare_rate:8.2f}   (target >= 0.8)")
    print(f"  CPU per delivery             : engine {run_cpu / n * 1e3:.3f} ms, bare {bare_cpu / n * 1e3:.3f} ms: "
          f"ratio bare / engine {bare_cpu / run_cpu:.2f}")
    print(f"  activity intake (fan-out)    : {n / create_s:8.0f} activities/s")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    c = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    asyncio.run(main(n, c))
