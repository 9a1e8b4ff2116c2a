"""Clocks: the engine reads time and waits only through one of these.

``RealClock`` follows the wall clock (serve mode, external endpoints).
``VirtualClock`` follows the running event loop's time, which on a loop made by
:func:`new_virtual_loop` jumps to the next timer whenever nothing is ready, so
hours of backoff pass in milliseconds while HTTP over loopback stays real.
"""
from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from .errors import ClockError, InvalidArgument


def _import_looptime() -> Any:
    """looptime, imported without the pytest fixture module it adds when pytest is installed.

    Its ``chronometers`` module does ``import pytest`` only to define a fixture; outside a test run
    that cost every ``dispatchsim`` command 0.1-0.6 s and 5 MB. While looptime is imported,
    ``pytest`` is marked unimportable unless it is already loaded (a test run keeps the fixture);
    the mark is removed right after, so a later ``import pytest`` works as usual.
    """
    import sys

    hide = "pytest" not in sys.modules
    if hide:
        sys.modules["pytest"] = None  # type: ignore[assignment]
    try:
        import looptime
    finally:
        if hide and sys.modules.get("pytest", 0) is None:
            del sys.modules["pytest"]
    return looptime


looptime = _import_looptime()

T = TypeVar("T")

#: Default start of simulated time: a fixed instant so runs are reproducible.
VIRTUAL_EPOCH = datetime(2026, 4, 10, 14, 30, tzinfo=timezone.utc).timestamp()


class Clock(Protocol):
    """What the engine needs from time."""

    virtual: bool

    def now(self) -> float:
        """Seconds since the Unix epoch (float)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time; engine code never calls ``asyncio.sleep`` itself."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        """Wait for ``event`` at most ``timeout`` seconds; True when it was set."""
        ...


class _LoopWaits:
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (a negative wait returns at once)."""
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        if event.is_set():
            return True
        if timeout is None:  # the dispatcher's usual wait (for a finishing attempt): no timer to arm
            await event.wait()
            return True
        if timeout <= 0:
            return False
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False


class RealClock(_LoopWaits):
    """Wall time, for serve mode: ``now`` is the Unix time and waits are real."""

    virtual = False

    #: seconds since the Unix epoch (float): ``time.time`` itself, so that asking (twice per attempt) runs
    #: no Python frame of its own
    now = staticmethod(time.time)


class VirtualClock(_LoopWaits):
    """Simulated time: ``epoch`` plus the loop time elapsed since the clock was made.

    Must be created and used inside a loop from :func:`new_virtual_loop`; any other
    loop would make "virtual" time crawl at wall speed, so that is refused.
    """

    virtual = True

    def __init__(self, epoch: float = VIRTUAL_EPOCH) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or not math.isfinite(epoch):
            raise InvalidArgument(f"must be a finite number of seconds since the Unix epoch, got {epoch!r} "
                                  "(VirtualClock)", field="epoch")
        loop = virtual_loop()
        self._loop = loop
        self._epoch = epoch
        self._t0 = loop.time()

    def now(self) -> float:
        """Seconds since the Unix epoch in simulated time: ``epoch`` plus the loop time elapsed."""
        return self._epoch + (self._loop.time() - self._t0)


def is_clock(value: Any) -> bool:
    """``value`` does what :class:`Clock` promises (a protocol: checked by what it has)."""
    return isinstance(getattr(value, "virtual", None), bool) and all(
        callable(getattr(value, name, None)) for name in ("now", "sleep", "wait"))


def virtual_loop() -> asyncio.AbstractEventLoop:
    """The running loop, when it is one a virtual clock can run on (see :func:`new_virtual_loop`); any other
    loop would make "virtual" time crawl at wall speed, so :class:`ClockError` (a RuntimeError) instead."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, looptime.LoopTimeEventLoop) or not loop.looptime_on:
        raise ClockError("the virtual clock needs a time-compacting event loop: run your coroutine with "
                         "dispatchsim.run_virtual(...) (or on a loop from dispatchsim.engine.new_virtual_loop())")
    return loop


def new_virtual_loop() -> asyncio.AbstractEventLoop:
    """A fresh event loop whose time jumps to the next timer when nothing runs."""
    return looptime.new_event_loop(start=0.0, noop_cycles=42)


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new virtual-time loop."""
    with asyncio.Runner(loop_factory=new_virtual_loop) as runner:
        return runner.run(main)


def iso(ts: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` — the wire format of every timestamp."""
    return _iso_ms(round(ts, 3))


@functools.lru_cache(maxsize=4096)
def _iso_ms(ts: float) -> str:
    """Cached: every event and row view formats its times, and on the virtual clock most of them
    share a few instants (time stands still while HTTP runs), so ``strftime`` was a hot spot."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    # the year by hand: strftime's %Y does not pad years before 1000 (0033 would be written 33)
    return f"{dt.year:04d}-" + dt.strftime("%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso` (also accepts offsets and no fraction)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def fmt_offset(seconds: float) -> str:
    """Compact simulated-time offset: ``+0s``, ``+1m``, ``+2h05m03s``."""
    s = int(round(seconds))
    sign = "-" if s < 0 else "+"
    s = abs(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{sign}{h}h{m:02d}m{sec:02d}s"
    if m:
        return f"{sign}{m}m{sec:02d}s"
    return f"{sign}{sec}s"
