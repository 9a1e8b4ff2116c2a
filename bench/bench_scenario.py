"""The bundled 6-hour outage through the CLI, as ratios to bare aiohttp in the same run.

1. Baseline: the same number of POSTs the scenario makes (10,550), sent by a bare aiohttp client to an
   aiohttp server in this process, at concurrency 10 and 50 (the scenario has 50 ordered queues, so
   at most 50 attempts in flight). Same payloads (seed-shaped activities).
2. ``dispatchsim run scenarios/outage_6h_10k.yaml -q`` in its own process: wall time and peak RSS
   (from ``wait4``, so it is that process's own).
3. The same file with 100,000 activities (25,000 per burst): wall time against the 10k run, peak RSS.

Targets (issue 17): CLI 10k <= 2.5x the bare POSTs at concurrency 10, peak RSS < 100 MB; 100k within
12x of the 10k run, peak RSS < 150 MB.
Usage: python bench/bench_scenario.py [--skip-100k]
"""
from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ok_server
import aiohttp

from dispatchsim.engine.sender import encode_body
from dispatchsim.mapping.activity import example_activity

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "outage_6h_10k.yaml"
POSTS = 10_550  #: 10,000 deliveries + 50 queue heads x 11 failed tries


async def bare_posts(n: int, concurrency: int) -> float:
    """Seconds for ``n`` POSTs of seed-shaped bodies, server and client in this process."""
    runner, url = await ok_server()
    rng = random.Random(6)
    bodies = [encode_body(example_activity(rng)) for _ in range(n)]
    sem = asyncio.Semaphore(concurrency)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def one(body: bytes) -> None:
                async with sem:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        assert r.status == 200

            await asyncio.gather(*(one(b) for b in bodies[:300]))  # warm-up
            t = time.perf_counter()
            await asyncio.gather(*(one(b) for b in bodies))
            return time.perf_counter() - t
    finally:
        await runner.cleanup()


def cli_run(path: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB (of that process alone) and the result line."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dispatchsim", "run", str(path), "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{path} failed ({proc.returncode}):\n{out}{err}")
    return wall, usage.ru_maxrss / 1024, out.strip()


def scaled(text: str, factor: int) -> str:
    per_burst, total = 2500 * factor, 10_000 * factor
    return (text.replace("count: 2500", f"count: {per_burst}").replace("DISPATCHED: 10000", f"DISPATCHED: {total}")
            .replace("received: {crm: 10550}", f"received: {{crm: {total + 550}}}"))


def main() -> None:
    skip_big = "--skip-100k" in sys.argv
    bare10 = asyncio.run(bare_posts(POSTS, 10))
    bare50 = asyncio.run(bare_posts(POSTS, 50))
    small = cli_run(SCENARIO)
    big = None
    if not skip_big:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "outage_6h_100k.yaml"
            path.write_text(scaled(SCENARIO.read_text(encoding="utf-8"), 10), encoding="utf-8")
            big = cli_run(path)
    print("scenario benchmark: outage_6h_10k (6-hour outage, 50 ordered queues, virtual clock) through the CLI")
    print(f"  bare aiohttp, {POSTS:,} POSTs, concurrency 10 : {bare10:6.2f} s")
    print(f"  bare aiohttp, {POSTS:,} POSTs, concurrency 50 : {bare50:6.2f} s")
    print(f"  dispatchsim run, 10,000 activities         : {small[0]:6.2f} s   peak RSS {small[1]:5.0f} MB   "
          f"{small[2]}")
    print(f"  ratio CLI / bare (c=10)                    : {small[0] / bare10:6.2f}x   (target <= 2.5x; "
          f"c=50: {small[0] / bare50:.2f}x)   RSS target < 100 MB")
    if big is not None:
        print(f"  dispatchsim run, 100,000 activities        : {big[0]:6.2f} s   peak RSS {big[1]:5.0f} MB   {big[2]}")
        print(f"  ratio 100k / 10k                           : {big[0] / small[0]:6.2f}x   (target <= 12x; "
              "RSS target < 150 MB)")


if __name__ == "__main__":
    main()
