"""One ordered queue (the default policy) on the real clock with serve mode's pacing, to a fast local endpoint.

An ordered queue has one attempt in flight, so its rate is one round trip plus the bookkeeping
between two heads. Baseline in the same run: a bare aiohttp loop posting the same bodies one after
another (concurrency 1) to the same in-process server. The engine uses serve's defaults
(``dispatch_interval`` 5 ms, ``claim_chunk`` 25); with a fixed cycle per head the queue was capped
at 1 / 5 ms = 200 deliveries/s.
Target (issue 17): >= 1,000 deliveries/s. Usage: python bench/bench_ordered.py [N]
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from common import ok_server
import aiohttp

from dispatchsim.engine import Engine
from dispatchsim.engine.sender import encode_body
from dispatchsim.mapping.activity import example_activity
from dispatchsim.server.serve import ServeOptions


async def bare(url: str, bodies: list[bytes]) -> float:
    async with aiohttp.ClientSession() as session:
        t = time.perf_counter()
        for body in bodies:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
        return time.perf_counter() - t


async def ordered(url: str, n: int, db: Path) -> float:
    defaults = ServeOptions(db=":memory:")
    eng = await Engine.open(db, seed=1)
    eng.dispatcher.pace(interval=defaults.dispatch_interval, chunk=defaults.claim_chunk)
    await eng.add_tenant("t")
    await eng.add_provider("p")
    await eng.add_config("t", "p", "SALESMAN", endpoint_url=url, activate=True)  # ordered: the default
    rng = random.Random(1)
    await eng.create_activities("t", [example_activity(rng) for _ in range(n)])
    t = time.perf_counter()
    summary = await eng.run_until_idle()
    run = time.perf_counter() - t
    assert summary.counts["DISPATCHED"] == n, summary.counts
    await eng.close()
    return run


async def main(n: int) -> None:
    runner, url = await ok_server()
    rng = random.Random(1)
    bodies = [encode_body(example_activity(rng)) for _ in range(n)]
    try:
        await bare(url, bodies[:200])  # warm-up
        bare_s = await bare(url, bodies)
        with tempfile.TemporaryDirectory() as d:
            eng_s = await ordered(url, n, Path(d) / "ordered.db")
    finally:
        await runner.cleanup()
    defaults = ServeOptions(db=":memory:")
    print(f"one ordered queue, {n} deliveries, real clock, serve pacing (dispatch_interval "
          f"{defaults.dispatch_interval * 1000:g} ms, claim_chunk {defaults.claim_chunk})")
    print(f"  bare aiohttp, one POST after another : {n / bare_s:8.0f} POST/s")
    print(f"  dispatchsim, one ordered queue       : {n / eng_s:8.0f} deliveries/s   (target >= 1,000)")
    print(f"  ratio engine / bare                  : {bare_s / eng_s:8.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
