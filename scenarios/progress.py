"""Progress of a scenario run measured against its work, not against its ``duration`` limit.

A run's work is its activities: the bar counts those *settled* (every delivery DISPATCHED or FAILED,
or none made) against all the timeline creates, with rate and ETA. Beside it: activities created so
far and simulated time against the scenario's last timeline event (time goes on after it while
retries drain). A scenario that creates no activity is measured in simulated time instead.

The counts follow the engine's events, so the store is never queried for a progress line.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from dispatchsim.engine.clock import fmt_offset

from .spec import Scenario

#: seconds of wall time between two redraws
REFRESH = 0.25


def planned_activities(scenario: Scenario) -> int:
    return sum(len(ev.action.offsets) for ev in scenario.timeline if ev.kind == "create")


def last_timeline_event(scenario: Scenario) -> float:
    """Offset of the last thing the timeline does (generators expanded)."""
    ends = [ev.at + (ev.action.offsets[-1] if ev.action.offsets else 0.0) for ev in scenario.timeline]
    return max(ends, default=0.0)


class SettledCounter:
    """Activities created and settled, from the engine's event stream.

    Only activities with a delivery still pending are held (plus FAILED deliveries, which a force
    retry can bring back), so the memory follows the backlog, not the run.
    """

    def __init__(self) -> None:
        self.created = 0
        self.settled = 0
        self._pending: dict[str, int] = {}  #: activity id -> deliveries not yet DISPATCHED/FAILED
        self._failed: dict[int, str] = {}  #: FAILED delivery id -> activity id
        self._last_created: str | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "delivery.created":
            aid = event["activity_id"]
            if aid != self._last_created:  # one create fans out into consecutive delivery.created events
                self._last_created = aid
                self.created += 1
            self._pending[aid] = self._pending.get(aid, 0) + 1
        elif name == "activity.not_dispatched":
            self.created += 1
            self.settled += 1
        elif name in ("delivery.dispatched", "delivery.failed"):
            aid = event["activity_id"]
            if name == "delivery.failed":
                self._failed[event["delivery_id"]] = aid
            left = self._pending.get(aid)
            if left is None:
                return
            if left <= 1:
                del self._pending[aid]
                self.settled += 1
            else:
                self._pending[aid] = left - 1
        elif name == "delivery.force_retry":
            aid = self._failed.pop(event["delivery_id"], None)
            if aid is None:
                return
            if aid not in self._pending:
                self.settled -= 1
            self._pending[aid] = self._pending.get(aid, 0) + 1


class ProgressBar:
    """The terminal display of one run (tqdm on stderr); the CLI creates it only for a terminal."""

    def __init__(self, scenario: Scenario, *, stream: TextIO) -> None:
        from tqdm import tqdm  # only for a terminal: its import is about 0.04 s of every run's start

        self.total = planned_activities(scenario)
        self.horizon = last_timeline_event(scenario)
        self.counter = SettledCounter()
        self._now: Callable[[], float] | None = None
        self._t0 = 0.0
        self._next_draw = 0.0
        by_time = self.total == 0
        self.bar = tqdm(total=(self.horizon or None) if by_time else self.total, desc=scenario.name, file=stream,
                        unit="s simulated" if by_time else " activities", leave=False, dynamic_ncols=True,
                        mininterval=REFRESH, smoothing=0.1)

    def begin(self, now: Callable[[], float]) -> None:
        """The run's clock is ready (called again after a simulated crash and restart)."""
        if self._now is None:
            self._t0 = now()
        self._now = now

    def event(self, event: dict[str, Any]) -> None:
        self.counter(event)
        self.tick()

    def tick(self) -> None:
        """Redraw if the last drawing is old enough (cheap enough to call on every event)."""
        wall = time.monotonic()
        if wall >= self._next_draw:
            self._next_draw = wall + REFRESH
            self.draw()

    def draw(self) -> None:
        sim = self._now() - self._t0 if self._now is not None else 0.0
        c = self.counter
        if self.total:
            self.bar.n = c.settled
            self.bar.set_postfix_str(f"created {c.created:,}/{self.total:,}, simulated {fmt_offset(sim)[1:]} "
                                     f"(last event {fmt_offset(self.horizon)[1:]})", refresh=False)
        else:
            self.bar.n = round(min(sim, self.horizon), 1)
            self.bar.set_postfix_str(f"simulated {fmt_offset(sim)[1:]}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.draw()
        self.bar.close()
