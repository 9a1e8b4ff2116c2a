"""Was each acknowledged delivery processed — once, and in order? Verification for every check.

A 2xx only says the receiver took the request. The bugs that hurt most hide behind it: data lost
after the acknowledgement, a retry processed twice, an older delivery overwriting a newer one.
The probe sees processing through the channels a team can give it: the seed's **results callback**
(``POST …/activity-results/tasks`` with ``activity_id``, counted by a :class:`ResultsListener`) and a
**status URL** (``…/{id}`` answering ``{"processed": n}``, optionally ``"sequence": k`` increasing with
processing order). Given both, both are read and each may find a fault.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from .http import outcome_ok
from .listener import ResultsListener
from .report import Evidence


#: Longest pause between two reads of the status URL while waiting for processing.
MAX_POLL = 2.0
#: Callbacks arriving closer together than this are not taken as evidence of their processing order.
ARRIVAL_SLACK = 0.005


class Fault(str, Enum):
    #: Acknowledged (2xx), but no channel ever saw it processed.
    LOST = "acknowledged but never processed"
    #: Processed more than once (a duplicate or a retry was not recognised).
    TWICE = "processed more than once"
    #: Deliveries of one queue processed in another order than they were acknowledged.
    ORDER = "processed in the wrong order"
    #: Rejected (401/403) but processed anyway.
    REJECTED = "rejected but processed anyway"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class Tracked:
    """One activity the probe sent, and what a correct receiver does with it."""

    check: str
    activity_id: str
    label: str
    times: int  #: 1: must be processed once; 0: must not be processed (it was rejected)
    answer: str  #: what the endpoint answered, e.g. "HTTP 200"
    queue: str | None = None  #: ordered deliveries: processed in the order they were tracked
    exact: bool = True  #: False: never acknowledged (timed out), so only "more than once" is a fault
    status_counts: int | None = None  #: final answer of the status URL (None: no usable answer)
    status_sequence: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    fault: Fault
    text: str  #: one line with the evidence: which delivery, which channel, what it said


@dataclass
class Verifier:
    """Tracks deliveries as the checks send them; after the run, waits for processing and judges."""

    listener: ResultsListener | None
    status_url: str | None
    tracked: list[Tracked] = field(default_factory=list)

    @property
    def channels(self) -> list[str]:
        return [name for name, on in (("results callback", self.listener is not None),
                                      ("status URL", self.status_url is not None)) if on]

    def track(self, check: str, activity_id: str, *, label: str, times: int, answer: str,
              queue: str | None = None, exact: bool = True) -> None:
        for t in self.tracked:
            if t.activity_id == activity_id:  # a re-send (duplicate checks, a retry after a timeout)
                if exact and not t.exact:
                    t.label, t.answer, t.exact = label, answer, True
                return
        self.tracked.append(Tracked(check, activity_id, label, times, answer, queue, exact))

    def _seen_by_callback(self, t: Tracked) -> bool:
        return self.listener is not None and self.listener.count(t.activity_id) > 0

    async def wait(self, *, deadline: float, settle: float, poll: float, sleep: Callable[[float], Awaitable[None]],
                   status: Callable[[Tracked, bool], Awaitable[Evidence]]) -> None:
        """Wait until every delivery that must be processed was seen processed (or ``deadline``, loop
        time), then ``settle`` seconds more for late duplicates, then read the status URL once per
        delivery. ``status(t, keep)`` fetches the status URL (``keep``: as evidence of the check)."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            pending = [t for t in self.tracked if t.times > 0 and t.exact and not self._seen_by_callback(t)
                       and (t.status_counts or 0) < 1]
            if not pending:
                break
            if self.listener is None and self.status_url is not None:
                for t in pending:
                    _read_status(t, await status(t, False))
            await sleep(max(0.0, min(poll, deadline - loop.time())))
            poll = min(poll * 2, MAX_POLL)  # a status URL is read a few times per delivery, not hammered
        await sleep(settle)
        if self.status_url is not None:
            for t in self.tracked:
                t.status_counts = t.status_sequence = None
                _read_status(t, await status(t, True))

    def findings(self, wait: float) -> tuple[list[Finding], list[str]]:
        """The faults found, and notes for deliveries no channel could judge."""
        out: list[Finding] = []
        notes: list[str] = []
        for t in self.tracked:
            counts: list[tuple[str, int]] = []
            if self.listener is not None:
                counts.append(("results callbacks", self.listener.count(t.activity_id)))
            if self.status_url is not None:
                if t.status_counts is None:
                    notes.append(f"{t.check}: {t.label} ({t.activity_id}): the status URL gave no processed count")
                else:
                    counts.append(("status URL processed", t.status_counts))
            for channel, n in counts:
                if t.times == 1 and n == 0 and t.exact:
                    out.append(Finding(t.check, Fault.LOST, f"{t.label} ({t.activity_id}) acknowledged with "
                                       f"{t.answer} but never processed: {channel} = 0 after {wait:g}s"))
                elif t.times == 1 and n > 1:
                    out.append(Finding(t.check, Fault.TWICE, f"{t.label} ({t.activity_id}) processed {n} times "
                                       f"({channel} = {n})"))
                elif t.times == 0 and n > 0:
                    out.append(Finding(t.check, Fault.REJECTED, f"{t.label} ({t.activity_id}) rejected with "
                                       f"{t.answer} but processed ({channel} = {n})"))
        out.extend(self._order())
        return out, notes

    def _order(self) -> list[Finding]:
        out = []
        queues: dict[tuple[str, str], list[Tracked]] = {}
        for t in self.tracked:
            if t.queue is not None and t.times == 1:
                queues.setdefault((t.check, t.queue), []).append(t)
        for (check, queue), items in queues.items():
            for channel, keys, slack in self._order_keys(items):
                seen = [(k, i + 1) for i, k in enumerate(keys) if k is not None]
                late = any(later < earlier - slack for n, (earlier, _) in enumerate(seen) for later, _ in seen[n + 1:])
                if late:
                    processed = [i for _, i in sorted(seen)]
                    out.append(Finding(check, Fault.ORDER, f"queue {queue}: sent 1..{len(items)} in sequence, each "
                                       f"after the previous answer; processed {','.join(map(str, processed))} "
                                       f"({channel})"))
        return out

    def _order_keys(self, items: list[Tracked]) -> list[tuple[str, list[float | None], float]]:
        """Per channel: each item's processing-order key, and how much earlier counts as out of order.

        A callback's own ``sequence`` is exact; without one its arrival time is used, with a few
        milliseconds of slack for callbacks sent concurrently by a receiver that processed in order."""
        keys: list[tuple[str, list[float | None], float]] = []
        if self.listener is not None:
            first = [self.listener.first(t.activity_id) for t in items]
            exact = all(c is None or c.sequence is not None for c in first)
            keys.append(("results callbacks", [None if c is None else c.sequence if exact else c.at for c in first],
                         0.0 if exact else ARRIVAL_SLACK))
        if self.status_url is not None:
            keys.append(("status URL sequence", [t.status_sequence for t in items], 0.0))
        return keys


def _read_status(t: Tracked, ev: Evidence) -> None:
    """``{"processed": n}`` (also ``count``/``times_processed``), optional ``sequence`` (``seq``/``order``)."""
    if not outcome_ok(ev) or not ev.response_excerpt:
        return
    try:
        data = json.loads(ev.response_excerpt)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    for key in ("processed", "count", "times_processed"):
        if _number(data.get(key)) is not None:
            t.status_counts = int(data[key])
            break
    for key in ("sequence", "seq", "order"):
        if _number(data.get(key)) is not None:
            t.status_sequence = float(data[key])
            break


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
