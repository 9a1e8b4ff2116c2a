from __future__ import annotations

import asyncio
import time

import pytest

from dispatchsim.engine.clock import VIRTUAL_EPOCH, VirtualClock, fmt_offset, iso, parse_iso, run_virtual


async def test_virtual_clock_jumps_hours_without_waiting():
    clock = VirtualClock()
    wall = time.monotonic()
    await clock.sleep(6 * 3600)
    assert clock.now() == pytest.approx(VIRTUAL_EPOCH + 6 * 3600)
    assert time.monotonic() - wall < 1.0


async def test_wait_returns_when_event_set_before_timeout():
    clock = VirtualClock()
    ev = asyncio.Event()
    asyncio.get_running_loop().call_later(30, ev.set)
    assert await clock.wait(ev, 3600) is True
    assert clock.now() - VIRTUAL_EPOCH == pytest.approx(30)
    ev.clear()
    assert await clock.wait(ev, 60) is False
    assert clock.now() - VIRTUAL_EPOCH == pytest.approx(90)


def test_virtual_clock_refuses_a_plain_loop():
    async def main():
        VirtualClock()

    with pytest.raises(RuntimeError, match="time-compacting"):
        asyncio.run(main())


def test_run_virtual_returns_result():
    async def main():
        c = VirtualClock()
        await c.sleep(120)
        return c.now() - VIRTUAL_EPOCH

    assert run_virtual(main()) == pytest.approx(120)


def test_iso_format_has_millis_and_z():
    assert iso(VIRTUAL_EPOCH) == "2026-04-10T14:30:00.000Z"
    assert iso(VIRTUAL_EPOCH + 0.1234) == "2026-04-10T14:30:00.123Z"
    assert parse_iso("2026-04-10T14:30:00.000Z") == VIRTUAL_EPOCH
    assert fmt_offset(7503) == "+2h05m03s"
    assert fmt_offset(61) == "+1m01s"


def test_the_engine_does_not_import_pytest_but_pytest_still_imports_after_it():
    """looptime defines a pytest fixture when pytest is importable; the engine imports it without
    (0.1-0.6 s and 5 MB per command), and leaves ``import pytest`` working afterwards."""
    import subprocess
    import sys

    code = ("import sys; import dispatchsim.engine; before = 'pytest' in sys.modules; import pytest; "
            "from dispatchsim.engine.clock import run_virtual; import asyncio; "
            "print(before, pytest.__name__, run_virtual(asyncio.sleep(3600, 'slept')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["False", "pytest", "slept"], res.stderr


def test_iso_formats_milliseconds_the_same_from_its_cache():
    for ts in (0.0, 0.0005, 1.0015, 1775831400.999, 1775831400.9996, 1775831401.0):
        first, again = iso(ts), iso(ts)
        assert first == again
    assert iso(1775831400.9996) == "2026-04-10T14:30:01.000Z" and iso(1775831400.0004) == "2026-04-10T14:30:00.000Z"
