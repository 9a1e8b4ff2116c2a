"""Endpoint health shared by two workers (two engines) on one real PostgreSQL database: failure streaks
add up in the database, and a half-open endpoint gets one probe across the cluster.

Each test fails on the code before the change it covers: per-worker streaks written over each other,
and a probe per worker. The engines, the receiver and the test share one real-time loop.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from dispatchsim.engine import Engine
from support import Receiver

pytestmark = pytest.mark.postgres


@pytest.fixture
async def two(pg_url: str) -> AsyncIterator[tuple[Engine, Engine]]:
    a, b = await Engine.open(pg_url, pool_size=3), await Engine.open(pg_url, pool_size=3)
    await a.add_tenant("acme")
    await a.add_provider("crm")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _stored(engine: Engine, config_id: str, circuit: str) -> None:
    """Let the engine's dispatcher run until the shared table holds ``circuit`` for the configuration."""
    for _ in range(50):
        if any(r.config_id == config_id and r.circuit.value == circuit for r in await engine.store.health_rows()):
            return
        await engine.run_for(0.1)
    raise AssertionError(f"{config_id}: the circuit was never stored {circuit}")


async def test_failure_streaks_of_two_workers_add_up_to_auto_disable(two: tuple[Engine, Engine]) -> None:
    """Two failures on worker A, then two on worker B: four in a row auto-disable the configuration
    (``after_failures: 4``), although B last read the shared health before A's failures (a worker
    reads it at most once per interval). Counted per worker and stored over each other, B stored a
    streak of 2 and the endpoint stayed enabled."""
    a, b = two
    async with Receiver(time.time) as rx:
        rx.respond = lambda hit, n: (500, {}, 0.0)
        await a.add_config("acme", "crm", "SALESMAN", config_id="crm", endpoint_url=rx.url, activate=True,
                           retry={"base": 600, "max_attempts": None}, ordering={"mode": "none", "concurrency": 1},
                           auto_disable={"after_failures": 4})
        for e in (a, b):
            e.dispatcher.share_health(every=3600)
        await b.run_for(0.1)  # B reads the shared health now (nothing failed yet), and not again for an hour
        for _ in range(2):
            await a.create_activity("acme", {"channel": "SALESMAN"})
        await a.run_for(1.0)
        assert len(rx.posts()) == 2 and (await a.health("crm"))["consecutive_failures"] == 2
        for _ in range(2):
            await b.create_activity("acme", {"channel": "SALESMAN"})
        await b.run_for(1.0)
        assert len(rx.posts()) == 4
        assert (await b.health("crm"))["consecutive_failures"] == 4
        [row] = await b.store.health_rows()
        assert row.consecutive_failures == 4 and row.failing_since is not None
        assert row.failing_since < rx.posts()[2].at  # the streak started with A's first failure
        cfg = await b.store.config("crm")
        assert cfg is not None and not cfg.active and "4 consecutive failed attempts" in (cfg.inactive_reason or "")


async def test_a_half_open_endpoint_gets_one_probe_across_workers(two: tuple[Engine, Engine]) -> None:
    """Both workers hold due deliveries of an endpoint whose circuit worker A opened; when the
    cool-down ends, one probe reaches it, from one worker, and nothing else while that probe is in
    flight. Each worker used to send a probe of its own."""
    a, b = two
    async with Receiver(time.time) as rx:
        rx.respond = lambda hit, n: (500, {}, 0.0 if n <= 2 else 2.0)  # the probe hangs: a second one would overlap
        await a.add_config("acme", "crm", "SALESMAN", config_id="crm", endpoint_url=rx.url, activate=True,
                           retry={"base": 600, "max_attempts": None}, ordering={"mode": "none", "concurrency": 5},
                           circuit_breaker={"window": 60, "failure_rate": 0.5, "min_requests": 2, "cooldown": 1.0})
        for e in (a, b):
            e.dispatcher.share_health(every=0.05)
        for _ in range(2):
            await a.create_activity("acme", {"channel": "SALESMAN"})
        await a.run_for(0.5)
        assert (await a.health("crm"))["circuit"] == "open" and len(rx.posts()) == 2
        await _stored(a, "crm", "open")
        for _ in range(4):
            await b.create_activity("acme", {"channel": "SALESMAN"})  # due now, on both workers
        await asyncio.gather(a.run_for(1.8), b.run_for(1.8))  # the cool-down ends; the probe is still in flight
        probes = rx.posts()[2:]
        assert len(probes) == 1, [h.webhook_id for h in probes]
        [row] = await a.store.health_rows()
        assert row.circuit.value == "half_open" and row.circuit_until is not None and row.circuit_until > time.time()
