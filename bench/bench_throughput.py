"""Throughput: engine deliveries/s to an always-200 endpoint vs a bare aiohttp loop, same run.

Both post the same payloads at the same concurrency to the same in-process aiohttp server on
127.0.0.1; the engine also records every attempt durably in SQLite (WAL) and walks the state
machine. Wall rates and CPU seconds per delivery of both are printed: on a machine shared with other
jobs the wall ratio moves with their load; CPU per delivery much less.
Target (issue 17): engine >= 0.8x the bare loop.
Usage: python bench/bench_throughput.py [N] [CONCURRENCY] [--rounds=R] (defaults 8000, 50, 1)

``--rounds=R`` runs bare, engine, bare, engine, ..., bare in one process (R engine runs, R + 1 bare runs)
and compares every engine run with the mean of the two bare runs beside it: both sides are sampled the
same way, and a change in the machine's speed during the run hits both. The median of the R ratios is
the figure (the best engine run against the best bare run is printed too). With one round the engine run
is compared with the mean of the bare runs before and after it (earlier versions took the faster of the
two, which favours the baseline).
"""
from __future__ import annotations

import asyncio
import random
import resource
import statistics
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


async def main(n: int, concurrency: int, rounds: int) -> None:
    runner, url = await ok_server()
    rng = random.Random(1)
    bodies = [encode_body({**example_activity(rng), "id": str(i)}) for i in range(n)]
    # bare, engine, bare, engine, ..., bare: each engine run is compared with the bare runs on either side
    # of it (their mean), so both sides of every ratio are sampled alike and drift in the machine's speed
    # during the run cancels out instead of favouring either side.
    bares: list[tuple[float, float]] = []
    engines: list[tuple[float, float, float]] = []
    try:
        await bare(url, bodies[: min(500, n)], concurrency)  # warm-up
        bares.append(await bare(url, bodies, concurrency))
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as d:
                create_s, run_s, run_cpu, attempts = await engine_run(url, n, concurrency, Path(d) / "bench.db")
            engines.append((create_s, run_s, run_cpu))
            bares.append(await bare(url, bodies, concurrency))
    finally:
        await runner.cleanup()
    print(f"throughput, {n} deliveries, concurrency {concurrency}, always-200 endpoint on 127.0.0.1, "
          f"{rounds} round(s): bare, engine, bare, ... (each engine run against the mean of the bare runs beside it)")
    wall_ratios, cpu_ratios = [], []
    for i, (create_s, run_s, run_cpu) in enumerate(engines):
        bare_s = (bares[i][0] + bares[i + 1][0]) / 2
        bare_cpu = (bares[i][1] + bares[i + 1][1]) / 2
        wall_ratios.append(bare_s / run_s)
        cpu_ratios.append(bare_cpu / run_cpu)
        print(f"  round {i + 1}: bare {n / bare_s:6.0f} POST/s, engine {n / run_s:6.0f} deliveries/s "
              f"(every attempt recorded in SQLite): ratio {wall_ratios[-1]:.2f}; CPU per delivery engine "
              f"{run_cpu / n * 1e3:.3f} ms, bare {bare_cpu / n * 1e3:.3f} ms: ratio bare / engine "
              f"{cpu_ratios[-1]:.2f}; intake {n / create_s:.0f} activities/s")
    print(f"  ratio engine / bare, median  : wall {statistics.median(wall_ratios):.2f}, "
          f"CPU {statistics.median(cpu_ratios):.2f}   (target >= 0.8)")
    if rounds > 1:
        best_bare = min(c for _, c in bares)
        best_engine = min(c for _, _, c in engines)
        print(f"  best CPU per delivery        : engine {best_engine / n * 1e3:.3f} ms, bare"
              f" {best_bare / n * 1e3:.3f} ms: ratio {best_bare / best_engine:.2f}"
              f" (best of {rounds} against best of {len(bares)})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    unknown = [a for a in sys.argv[1:] if a.startswith("--") and not a.startswith("--rounds=")]
    if unknown or len(args) > 2:
        sys.exit("usage: python bench/bench_throughput.py [N] [CONCURRENCY] [--rounds=R]:"
                 f" {' '.join(unknown or args)}?")
    n = int(args[0]) if args else 8000
    c = int(args[1]) if len(args) > 1 else 50
    asyncio.run(main(n, c, int(flags.get("rounds", "1"))))
