"""Scale: claim latency and memory with 1,000 vs 1,000,000 pending deliveries.

Pending deliveries sit in 1,000 ordered queues (the default policy); the store's claim path
(``due_candidates`` + ``claim``) and finishing path (``mark_dispatched``, which promotes the
next head) are timed. Baseline: the same measurement with 1,000 pending, in the same run.
Usage: python bench/bench_scale.py [BIG]
"""
from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

from common import rss_mb

from dispatchsim.engine.store import AttemptResult, Store

QUEUES = 1000
SAMPLES = 300


async def fill(store: Store, pending: int) -> None:
    now = 1_000_000.0
    await store.add_tenant("t", "t", now)
    await store.add_provider("p", "p", now)
    for q in range(QUEUES):
        await store.insert_config(f"c{q}", "t", "p", "SALESMAN", {"endpoint_url": "http://127.0.0.1:9/h"}, now)
    store.conn.execute("BEGIN")
    store.conn.execute("INSERT INTO activities (id, tenant_id, type, channel, payload, created_at)"
                       " VALUES ('a', 't', 'TASK', 'SALESMAN', '{}', ?)", (now,))
    rows = ((f"w{i}", "a", f"c{i % QUEUES}", 1, f"c{i % QUEUES}", 1 if i < QUEUES else 0, now, now + i * 1e-6, now, now)
            for i in range(pending))
    store.conn.executemany(
        "INSERT INTO deliveries (webhook_id, activity_id, config_id, config_version, queue, status, holds, eligible,"
        " budget_started_at, next_attempt_at, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, 'READY', 1, ?, ?, ?, ?, ?)", rows)
    store.conn.execute("COMMIT")


async def measure(pending: int, path: Path) -> dict:
    gc.collect()
    rss0 = rss_mb()
    store = Store(path)
    t = time.perf_counter()
    await fill(store, pending)
    fill_s = time.perf_counter() - t
    now = 2_000_000.0
    claim_times, finish_times = [], []
    for _ in range(SAMPLES):
        t = time.perf_counter()
        rows = await store.due_candidates(now, 1)
        claims = await store.claim([(rows[0][0], now + 60)], token="bench", now=now)
        claim_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        await store.mark_dispatched(claims[0], AttemptResult(finished_at=now, outcome="SUCCESS", status_code=200),
                                    ordered=True)
        finish_times.append(time.perf_counter() - t)
    claim_times.sort()
    finish_times.sort()
    rss = rss_mb() - rss0
    await store.close()
    return {"fill": fill_s, "claim_p50": claim_times[len(claim_times) // 2] * 1e6,
            "claim_p99": claim_times[int(len(claim_times) * 0.99)] * 1e6,
            "finish_p50": finish_times[len(finish_times) // 2] * 1e6, "rss": rss}


def main(big: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        small = asyncio.run(measure(1_000, Path(d) / "small.db"))
        large = asyncio.run(measure(big, Path(d) / "large.db"))
    print(f"scale: claim + finish with pending deliveries in {QUEUES} ordered queues ({SAMPLES} samples each)")
    for label, r in ((f"{1_000:>9,} pending (baseline)", small), (f"{big:>9,} pending", large)):
        print(f"  {label:<28}: claim p50 {r['claim_p50']:7.1f} us  p99 {r['claim_p99']:7.1f} us  "
              f"finish+promote p50 {r['finish_p50']:7.1f} us  RSS growth {r['rss']:6.1f} MB  (fill {r['fill']:.1f} s)")
    print(f"  ratio claim p50 large / baseline: {large['claim_p50'] / small['claim_p50']:.2f}   (target <= 2)")
    print(f"  ratio finish p50 large / baseline: {large['finish_p50'] / small['finish_p50']:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
