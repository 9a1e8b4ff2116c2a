"""Shared fixtures: every async test runs on a virtual-time loop (no real sleeps)."""
from __future__ import annotations

import pytest
import sys, os
sys.path.insert(0, os.path.dirname(__file__))

from engine.clock import new_virtual_loop


def pytest_asyncio_loop_factories(config, item):
    """All async tests and fixtures run on a time-compacting loop."""
    return {"virtual": new_virtual_loop}


import io
from collections.abc import AsyncIterator, Callable

from engine import Engine

from support import Receiver


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "dispatch.db"


@pytest.fixture
async def engine(db_path) -> AsyncIterator[Engine]:
    """A real engine on a temp SQLite file, on the virtual clock, logging JSON to ``engine.log_buffer``."""
    buf = io.StringIO()
    eng = await Engine.open(db_path, virtual=True, seed=1, log_stream=buf)
    eng.log_buffer = buf  # type: ignore[attr-defined]
    try:
        yield eng
    finally:
        try:
            await eng.close()
        except Exception:
            pass


@pytest.fixture
async def receiver(engine) -> AsyncIterator[Receiver]:
    async with Receiver(engine.clock.now) as r:
        yield r


@pytest.fixture
async def setup_config(engine) -> Callable:
    """``await setup_config(url, **fields)`` -> config view, with tenant acme / provider crm created."""
    async def make(url: str, *, provider: str = "crm", channel: str = "SALESMAN", **fields):
        if engine.store.tenant("acme") is None:
            await engine.add_tenant("acme")
        if engine.store.provider(provider) is None:
            await engine.add_provider(provider)
        return await engine.add_config("acme", provider, channel, endpoint_url=url, activate=True, **fields)
    return make
