"""The dispatchsim pytest plugin, loaded through the ``pytest11`` entry point wherever dispatchsim
is installed.

Fixtures (for ``async def`` tests under pytest-asyncio, in ``auto`` or ``strict`` mode):

- ``dispatch_engine``: an :class:`~dispatchsim.engine.Engine` on the virtual clock, on a SQLite file
  in the test's temporary directory, collecting its events; closed after the test.
- ``dispatch_endpoints``: ``await dispatch_endpoints({"crm": {"behaviour": {...}}})`` starts simulated
  provider endpoints on 127.0.0.1 (same syntax as ``providers:`` in a scenario file) on the engine's
  clock; stopped after the test.
- ``dispatch_recorder``: the :class:`~dispatchsim.providers.Recorder` every endpoint of the test
  writes to (arrival order is global).
- ``dispatch_history``: ``await dispatch_history()`` reads the run back as a
  :class:`~dispatchsim.testing.History` for :mod:`dispatchsim.testing.invariants`.

A test that uses one of them (or is marked ``@pytest.mark.dispatchsim``) runs on a time-compacting
event loop, so hours of backoff pass in milliseconds; every other test keeps the loop it had.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

try:  # strict mode only runs async fixtures declared through pytest-asyncio
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - without pytest-asyncio these fixtures need another asyncio plugin
    _async_fixture = pytest.fixture

FIXTURES = frozenset({"dispatch_engine", "dispatch_endpoints", "dispatch_recorder", "dispatch_history"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dispatchsim: run this async test on dispatchsim's virtual clock")


def _hypothesis_printer_replaced() -> bool:
    """Whether another plugin swapped hypothesis' example printer for one that prints nothing:
    schemathesis's pytest plugin does so when it loads (for its own speed), and every failing
    example of every hypothesis test in the session then reads ``endpoint=,``."""
    import sys

    core = sys.modules.get("hypothesis.core")
    if core is None:
        return False
    from hypothesis.vendor import pretty

    return getattr(core, "RepresentationPrinter", pretty.RepresentationPrinter) is not pretty.RepresentationPrinter


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """A failing property test is only as good as its printed counterexample: say why it is blank
    and what to do (we do not undo another plugin's patch behind its back)."""
    if terminalreporter.stats.get("failed") and _hypothesis_printer_replaced():
        terminalreporter.write_line(
            "dispatchsim: hypothesis' failing examples above print blank because another pytest plugin "
            "(schemathesis) replaced hypothesis' printer; run pytest with -p no:schemathesis to read them")


def _wants_virtual_time(item: Any) -> bool:
    names = set(getattr(item, "fixturenames", ()) or ())
    return bool(names & FIXTURES) or item.get_closest_marker("dispatchsim") is not None


@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_asyncio_loop_factories(config: pytest.Config, item: Any) -> Iterator[Any]:
    """Our tests get the virtual-time loop; the others keep what another plugin chose or, if none
    chose, a loop from the current policy (what pytest-asyncio makes without this hook)."""
    chosen = yield
    if _wants_virtual_time(item):
        from dispatchsim.engine.clock import new_virtual_loop

        return {"dispatchsim-virtual": new_virtual_loop}
    return chosen if chosen is not None else {"asyncio": asyncio.new_event_loop}


@pytest.fixture
def dispatch_recorder() -> Any:
    from dispatchsim.providers import Recorder

    return Recorder()


@_async_fixture
async def dispatch_engine(tmp_path: Path) -> AsyncIterator[Any]:
    from dispatchsim.engine import Engine

    engine = await Engine.open(tmp_path / "dispatch.db", virtual=True, seed=0)
    events: list[dict[str, Any]] = []
    engine.subscribe(events.append)
    engine.events = events  # type: ignore[attr-defined]
    engine.started_at = engine.clock.now()  # type: ignore[attr-defined]
    try:
        yield engine
    finally:
        await engine.close(deadline=0)


@_async_fixture
async def dispatch_endpoints(dispatch_engine: Any, dispatch_recorder: Any) -> AsyncIterator[
        Callable[[Mapping[str, Any]], Awaitable[Any]]]:
    from dispatchsim.providers import EndpointSet, parse_config

    started: list[Any] = []

    async def start(endpoints: Mapping[str, Any], *, seed: int = 0) -> Any:
        """Start simulated endpoints ({name: settings}) on the engine's clock; returns the EndpointSet."""
        config = parse_config({"endpoints": dict(endpoints)}, source="dispatch_endpoints")
        endpoint_set = EndpointSet(config, seed=seed, now=dispatch_engine.clock.now,
                                   t0=dispatch_engine.started_at)
        endpoint_set.recorder = dispatch_recorder
        await endpoint_set.start()
        started.append(endpoint_set)
        return endpoint_set

    try:
        yield start
    finally:
        for endpoint_set in reversed(started):
            await endpoint_set.stop()


@_async_fixture
async def dispatch_history(dispatch_engine: Any, dispatch_recorder: Any) -> Callable[..., Awaitable[Any]]:
    from .history import History

    async def read(*, idle: bool = True, expected_deliveries: int | None = None) -> History:
        """The run so far as a History (``idle``: whether the last drain finished its work)."""
        return await History.capture(dispatch_engine, dispatch_recorder, events=dispatch_engine.events,
                                     started_at=dispatch_engine.started_at, idle=idle,
                                     expected_deliveries=expected_deliveries)

    return read
