"""Endpoint health shared by two workers (two engines) on one real PostgreSQL database: failure streaks
add up in the database, a half-open endpoint gets one probe across the cluster, and a circuit trip or
an auto-disable both workers reach is made and notified once.

Each test but the last fails on the code before the change it covers: per-worker streaks written over
each other, a probe per worker, a trip stored and notified per worker. The engines, the receiver and the test share one real-time loop.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from dispatchsim.engine import Engine, iso
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


async def _until(engine: Engine, cond, what: str) -> None:
    """Let the engine's dispatcher run until ``cond()`` (awaited) holds, 5 s at most."""
    for _ in range(50):
        if await cond():
            return
        await engine.run_for(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_trip_both_workers_see_is_recorded_once_and_the_first_opening_stays(
        two: tuple[Engine, Engine]) -> None:
    """Worker A's failures open the circuit; worker B, which last read the health before them, sends
    once more and its failure trips its own view too. The database decides who opened it: one
    ``circuit.opened`` notification, the ``circuit_until`` A stored stays, and B adopts it. Each
    worker used to store (over the other's) and notify its own opening."""
    a, b = two
    async with Receiver(time.time) as rx:
        rx.respond = lambda hit, n: (503, {}, 0.0)
        await a.add_config("acme", "crm", "SALESMAN", config_id="crm", endpoint_url=rx.url, activate=True,
                           retry={"base": 600, "max_attempts": None}, ordering={"mode": "none", "concurrency": 1},
                           circuit_breaker={"window": 600, "failure_rate": 0.5, "min_requests": 2, "cooldown": 600})
        for e in (a, b):
            e.dispatcher.share_health(every=3600)
        await b.run_for(0.1)  # B reads the shared health now (closed), and not again for an hour
        for _ in range(2):
            await a.create_activity("acme", {"channel": "SALESMAN"})

        async def a_opened() -> bool:
            return any(r.circuit.value == "open" for r in await a.store.health_rows())

        await _until(a, a_opened, "worker A to store its open circuit")
        [opened] = await a.store.health_rows()
        await b.create_activity("acme", {"channel": "SALESMAN"})

        async def b_tripped() -> bool:
            return len(rx.posts()) == 3 and (await b.health("crm"))["circuit"] == "open"

        await _until(b, b_tripped, "worker B's failure to trip its view")
        assert [n["kind"] for n in await b.notifications("crm")] == ["circuit.opened"]
        [row] = await b.store.health_rows()
        assert (row.circuit, row.circuit_until) == (opened.circuit, opened.circuit_until)
        assert opened.circuit_until is not None
        assert (await b.health("crm"))["circuit_until"] == iso(opened.circuit_until)  # adopted, not its own


async def test_an_auto_disable_both_workers_reach_at_once_happens_once(two: tuple[Engine, Engine]) -> None:
    """Four attempts in flight at once, two on each worker, all failing: the streak passes
    ``after_failures: 2`` on both workers (it counts in the database), and the configuration is
    paused, and notified, once. (The streak's row lock already orders the two workers' accounting,
    and each re-reads the configuration; the pause is now conditional on its own.)"""
    a, b = two
    async with Receiver(time.time) as rx:
        rx.respond = lambda hit, n: (500, {}, 1.0)  # all four are in flight before one fails
        await a.add_config("acme", "crm", "SALESMAN", config_id="crm", endpoint_url=rx.url, activate=True,
                           retry={"base": 600, "max_attempts": None}, ordering={"mode": "none", "concurrency": 2},
                           auto_disable={"after_failures": 2})
        for e in (a, b):
            e.dispatcher.share_health(every=3600)
        for worker in (a, b):  # each takes two (its concurrency) and they stay in flight for a second
            for _ in range(2):
                await worker.create_activity("acme", {"channel": "SALESMAN"})
            await worker.run_for(0.2)
        assert len(rx.posts()) == 4
        await asyncio.gather(a.run_for(2.0), b.run_for(2.0))
        assert len(rx.posts()) == 4
        assert [n["kind"] for n in await a.notifications("crm")] == ["config.auto_disabled"]
        cfg = await a.store.config("crm")
        assert cfg is not None and not cfg.active and (cfg.inactive_reason or "").startswith("auto-disabled: ")
