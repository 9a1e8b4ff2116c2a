"""Progress of `dispatchsim run`: measured against the work, drawn on a terminal only."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from dispatchsim.cli import main
from dispatchsim.scenarios.catalogue import resolve
from dispatchsim.scenarios.progress import ProgressBar, last_timeline_event, planned_activities
from dispatchsim.scenarios.runner import run_scenario


def test_counts_follow_the_work_of_a_run_with_failures_and_force_retries():
    """force_retry_failed: deliveries end FAILED (settled), are force-retried (pending again), then settle."""
    scenario = resolve("force_retry_failed")
    bar = ProgressBar(scenario, stream=io.StringIO())
    settled_seen: list[int] = []
    event = bar.event

    def spy(ev):
        event(ev)
        settled_seen.append(bar.counter.settled)

    bar.event = spy  # type: ignore[method-assign]
    result = run_scenario(scenario, progress=bar)
    bar.close()
    planned = planned_activities(scenario)
    assert planned == len(result.activities) > 0
    assert bar.counter.created == planned
    assert bar.counter.settled == planned
    assert max(settled_seen) == planned and any(b < a for a, b in zip(settled_seen, settled_seen[1:])), \
        "a force retry makes a settled activity pending again"


def test_fan_out_settles_an_activity_once_all_its_deliveries_are_final():
    scenario = resolve("fan_out_one_down")
    bar = ProgressBar(scenario, stream=io.StringIO())
    result = run_scenario(scenario, progress=bar)
    assert len(result.deliveries) > len(result.activities)  # really fanned out
    assert bar.counter.created == bar.counter.settled == len(result.activities)


def test_horizon_is_the_last_timeline_event():
    assert last_timeline_event(resolve("outage_6h_10k")) == 3 * 3600
    assert last_timeline_event(resolve("ordered_head_outage")) == 19 * 15 * 60


def _run_on_terminal(*args: str) -> str:
    """`dispatchsim run` with stderr on a pseudo-terminal of 120 columns; returns what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "dispatchsim", "run", *args], stdout=subprocess.DEVNULL,
                            stderr=slave, cwd=Path(__file__).resolve().parent.parent)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_terminal_shows_activities_settled_created_and_simulated_time():
    drawn = _run_on_terminal("ordered_head_outage")
    assert "ordered-head-outage:" in drawn
    assert "20/20 [" in drawn  # all settled at the end
    assert "activities/s" in drawn
    assert "created 20/20, simulated" in drawn and "(last event 4h45m00s)" in drawn


def test_quiet_on_a_terminal_draws_nothing():
    assert _run_on_terminal("ordered_head_outage", "-q") == ""


def test_not_a_terminal_draws_nothing(capsys):
    assert main(["run", "ordered_head_outage"]) == 0
    assert capsys.readouterr().err == ""
