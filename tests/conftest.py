"""Shared fixtures: every async test runs on a virtual-time loop (no real sleeps)."""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings as _hypothesis_settings

sys.path.insert(0, os.path.dirname(__file__))

from dispatchsim.engine.clock import new_virtual_loop  # noqa: E402

# CI runs the properties with a fixed seed, so a landing is never decided by a lucky draw; locally
# each run explores new examples (and `DISPATCHSIM_PROPERTY_EXAMPLES` explores more).
# No per-example deadline anywhere: the suite runs one process per core, so an example's wall time says
# how busy the machine was, not whether the code is slow (speed is for bench/); pytest-timeout bounds a test.
_hypothesis_settings.register_profile("dev", deadline=None)
_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None)
_hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_sessionstart(session):
    """Give the main thread a loop of its own up front and close it at the end.

    pytest-asyncio asks ``asyncio.get_event_loop()`` for "the previous loop" around each test; with
    none set, Python creates one that nobody closes, which ``filterwarnings=error`` turns into a
    failure whenever a sync test runs first.
    """
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        session.config._dispatchsim_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(session.config._dispatchsim_loop)


def pytest_sessionfinish(session, exitstatus):
    import asyncio
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loops = [getattr(session.config, "_dispatchsim_loop", None)]
        try:
            loops.append(asyncio.get_event_loop_policy().get_event_loop())
        except RuntimeError:
            pass
        asyncio.set_event_loop(None)
        for loop in loops:
            if loop is not None and not loop.is_running() and not loop.is_closed():
                loop.close()


def pytest_asyncio_loop_factories(config, item):
    """Async tests and fixtures run on a time-compacting loop; those marked ``postgres`` on a real one
    (a network database runs on the real clock)."""
    if item.get_closest_marker("postgres") is not None:
        import asyncio

        return {"real": asyncio.new_event_loop}
    return {"virtual": new_virtual_loop}


import io
from collections.abc import AsyncIterator, Callable

from dispatchsim.engine import Engine

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
        if await engine.store.tenant("acme") is None:
            await engine.add_tenant("acme")
        if await engine.store.provider(provider) is None:
            await engine.add_provider(provider)
        return await engine.add_config("acme", provider, channel, endpoint_url=url, activate=True, **fields)
    return make


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium via Playwright (see tests/browser.py); a missing browser is an error."""
    import browser as _browser

    reason = _browser.missing_reason()
    if reason:
        pytest.fail(reason)
    b = _browser.Browser()
    yield b
    b.close()


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL server for the session (tests/pg.py); it FAILS the test when it cannot start."""
    import pg

    server = pg.server_or_fail()
    yield server
    pg.stop_server(server)


@pytest.fixture
def pg_url(pg_server):
    """An empty migrated PostgreSQL database for one test (shared by the tests of the process, emptied
    before each)."""
    return pg_server.reset()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The probe's score against the corpus of broken receivers (tests/probe_corpus.py), when it ran."""
    corpus = sys.modules.get("probe_corpus")
    if corpus is None or not corpus.SCORE:
        return
    broken = {c.name: c for c in corpus.CORPUS}
    ran = [name for name in broken if name in corpus.SCORE]
    caught = [name for name in ran if corpus.SCORE[name]]
    terminalreporter.section("probe corpus")
    for name in ran:
        mark = "caught" if corpus.SCORE[name] else "MISSED"
        terminalreporter.write_line(f"  {mark:6}  {name:<22} {broken[name].receiver.bug}")
    if "CorrectReceiver" in corpus.SCORE:
        verdict = "passed every check" if corpus.SCORE["CorrectReceiver"] else "FAILED a check"
        terminalreporter.write_line(f"  the correct receiver {verdict}")
    terminalreporter.write_line(f"probe score: caught {len(caught)}/{len(ran)} broken receivers")
