"""Run a scenario: engine + simulated providers on one clock, timeline, drain, collect."""
from __future__ import annotations

import asyncio
import functools
import heapq
import json
import os
import random
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dispatchsim.engine import (LIFECYCLE, ActivationRefused, Engine, InvalidArgument, RealClock, StoreError,
                                VirtualClock, check_store, is_url, run_virtual)
from dispatchsim.engine.store_pages import PageReader
from dispatchsim.providers import EndpointSet, ProvidersConfig, Recorder

from .errors import EventsNotKept
from .eventlog import EventLog
from .external import ExternalGate
from .rows import Rows

#: Seconds the requests already sent to an external provider may take to finish once its cap is reached.
SETTLE_CAPPED = 60.0

from .spec import Event, Scenario

if TYPE_CHECKING:
    from .expect import RecordTally


@dataclass(repr=False)
class RunResult:
    """Everything a report or an expectation needs: the run's database (kept until the result is
    closed or collected), its event log and what the simulated providers recorded.

    Deliveries, attempts and activity ids are streamed from the database on each pass (a long run
    has hundreds of thousands of them): iterate them, count them, but do not expect a list.
    """

    scenario: Scenario
    t0: float
    finished_at: float
    wall: float
    idle: bool
    #: the event log, one JSON line each, in a temporary file (it grows with the run); None when the run
    #: was asked not to keep it (``keep_events=False``) and no expectation of the scenario reads it
    events: EventLog | None
    #: the timeline's notes; without the event log only the timeline's own actions (no delivery's story)
    key_events: list[tuple[float, str]]
    deliveries: Rows[dict[str, Any]]  #: as the engine's API shows them (``d["status"]`` …), in id order
    attempts: Rows[dict[str, Any]]  #: in id order, as the API shows them
    activities: Rows[str]  #: activity ids in creation order
    counts: dict[str, int]  #: deliveries per lifecycle status at the end; every status is present
    recorder: Recorder
    endpoint_names: dict[str, str]  #: config id -> provider name
    refused: dict[str, str]  #: config id -> activation refusal reason
    secrets: list[str]
    force_retried: set[int] = field(default_factory=set)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    inactive: list[str] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    reader: PageReader | None = None  #: the run's database (None for a result built without one)
    _cleanup: Callable[[], Any] | None = None  #: removes a temporary database

    @functools.cached_property
    def record_tally(self) -> RecordTally:
        """The order, duplicate and per-endpoint counts of the endpoints' records, made in one pass
        the first time an expectation asks (the records do not change once the run is over)."""
        from .expect import tally_records

        return tally_records(self)

    def attempts_of(self, delivery_id: int) -> list[dict[str, Any]]:
        """The attempts of one delivery, in order (read by the database's index, not by a pass)."""
        if self.reader is None:
            return [a for a in self.attempts if a["delivery_id"] == delivery_id]
        return [a.to_json() for a in self.reader.attempts(delivery_id)]

    def close(self) -> None:
        """Remove the run's temporary database and event log (``--db`` files are kept). Deliveries,
        attempts and events cannot be read afterwards."""
        if self._cleanup is not None:
            self._cleanup()
        if self.events is not None:
            self.events.close()

    @property
    def elapsed(self) -> float:
        """Clock seconds from the scenario's start to the end of the run."""
        return self.finished_at - self.t0

    def __repr__(self) -> str:
        """Short on purpose: asyncio formats the repr of a finished task's result (``asyncio.Runner``
        restoring its SIGINT handler does), and the generated one spelled out every event, delivery
        and attempt: a 55 MB string for 10,000 activities, most of the run's peak memory."""
        events = "events not kept" if self.events is None else f"{len(self.events)} events"
        return f"<RunResult {self.scenario.name!r}: {sum(self.counts.values())} deliveries, {events}>"

    @property
    def ok(self) -> bool:
        """True when every expectation of the scenario held."""
        return all(c.ok for c in self.checks)

    def events_jsonl(self) -> str:
        """The event log as JSON Lines text (one event per line, newline-terminated)."""
        if self.events is None:
            raise EventsNotKept(f"the run of {self.scenario.name!r} did not keep its event log (keep_events=False);"
                                " run with keep_events=True, or with --events, --json or --html, to read it")
        return self.events.jsonl()


class Progress(Protocol):
    """Follows a run as it goes (``scenarios.progress.ProgressBar`` draws it on a terminal)."""

    def begin(self, now: Callable[[], float]) -> None:
        """The engine is open (again, after a simulated crash); ``now`` reads the run's clock."""

    def event(self, event: dict[str, Any]) -> None:
        """One engine event, as logged."""

    def tick(self) -> None:
        """The timeline or the drain made a step."""


def check_new_database(db: str | Path) -> None:
    """A scenario starts from an empty database, so ``db`` (``--db``) must be a new or empty file: one
    that holds an earlier run would fail on its first tenant ("already exists") after half a setup.
    A file that cannot be used at all is refused with what ``dispatchsim status`` says about it."""
    path = Path(db)
    try:
        if is_url(str(db)) or not path.is_file() or path.stat().st_size == 0:
            return  # a new file, or one whose problem (a folder, no permission) opening it names
    except OSError as exc:  # a name the system refuses (too long, ...)
        raise StoreError(f"{db}: {exc.strerror or exc}") from None
    try:
        check_store(db, write=False)
    except StoreError as exc:
        raise StoreError(f"{exc}; --db needs a new file") from None
    raise StoreError(f"{db}: already holds a dispatchsim database (an earlier run's); a scenario starts from an "
                     "empty one: give --db a new file")


def _check_run(scenario: Any, db: Any, keep_events: Any, keep_records: Any, call: str, progress: Any = None) -> None:
    """The arguments of a scenario run, refused with :class:`InvalidArgument` naming the one at fault."""
    if not isinstance(scenario, Scenario):
        raise InvalidArgument(f"must be a Scenario, got {type(scenario).__name__}: read a file with "
                              f"dispatchsim.load_scenario(path) first ({call})", field="scenario")
    if db is not None and (not isinstance(db, (str, os.PathLike)) or isinstance(db, bytes)):
        raise InvalidArgument(f"must be a SQLite file path (str or pathlib.Path) or None, got {type(db).__name__} "
                              f"({call})", field="db")
    for name, value in (("keep_events", keep_events), ("keep_records", keep_records)):
        if not isinstance(value, bool):
            raise InvalidArgument(f"must be True or False, got {value!r} ({call})", field=name)
    if progress is not None and not all(callable(getattr(progress, m, None)) for m in ("begin", "event", "tick")):
        raise InvalidArgument(f"must have begin, event and tick (see scenarios.progress.ProgressBar) or be None, "
                              f"got {type(progress).__name__} ({call})", field="progress")


def run_scenario(scenario: Scenario, *, db: str | Path | None = None, progress: Progress | None = None,
                 keep_events: bool = True, keep_records: bool = True) -> RunResult:
    """Run to completion (virtual clock by default) and evaluate its expectations (``keep_events``,
    ``keep_records``: see :func:`run_scenario_async`)."""
    from .expect import evaluate

    _check_run(scenario, db, keep_events, keep_records, "run_scenario", progress)  # before the coroutine is made
    coro = run_scenario_async(scenario, db=db, progress=progress, keep_events=keep_events, keep_records=keep_records)
    if scenario.clock == "virtual":
        result = run_virtual(coro)
    else:
        result = asyncio.run(coro)
    result.checks = evaluate(result)
    return result


async def run_scenario_async(scenario: Scenario, *, db: str | Path | None = None, progress: Progress | None = None,
                             keep_events: bool = True, keep_records: bool = True) -> RunResult:
    """The scenario as a plain async call, in the running loop (a virtual-time loop from
    ``engine.new_virtual_loop()`` for ``clock: virtual``). Expectations are not evaluated here:
    ``scenarios.expect.evaluate(result)`` does that; :func:`run_scenario` does both.

    ``keep_events=False``: nobody will read the event log (``dispatchsim run -q`` without an output
    that shows it), so the run does not follow the engine's events: the result's ``events`` is None
    and its ``key_events`` hold the timeline's own notes only. An expectation that reads the log
    (``no_secrets_in_logs``) keeps it anyway. Without a subscriber the engine builds no event at all:
    about a twentieth of a large run's CPU. What the engine does is the same either way.

    ``keep_records=False``: nobody will read the endpoints' records themselves (their headers and
    bodies: ``--record``, the reports), so the recorder keeps each request's receipt only (endpoint,
    method, acknowledged, delivery key), which is what the counts, order and duplicate checks read;
    an expectation that reads whole records (``mapping_shape``, ``events_received``,
    ``no_secrets_in_logs``) keeps them anyway. See ``providers.Recorder(keep=...)``."""
    from .expect import reads

    _check_run(scenario, db, keep_events, keep_records, "run_scenario_async", progress)
    if db is not None:
        check_new_database(db)
    wall = time.perf_counter()
    clock = VirtualClock(scenario.start) if scenario.clock == "virtual" else RealClock()
    needs = reads(scenario)
    events = EventLog() if keep_events or "events" in needs else None
    key_events: list[tuple[float, str]] = []
    t0 = clock.now()
    endpoints = EndpointSet(scenario.simulated or ProvidersConfig(endpoints={}), seed=scenario.seed,
                            now=clock.now, t0=t0, keep_records=keep_records or "records" in needs)
    await endpoints.start()
    names: dict[str, str] = {}
    sanitize = _Sanitizer()
    gate = None
    if scenario.external_limits:  # the team's own URLs: recorded from the sender's side, and capped
        gate = ExternalGate(list(scenario.external_limits.values()), recorder=endpoints.recorder, now=clock.now,
                            sleep=clock.sleep, t0=t0)
    tmp = None
    if db is None:  # kept until the result is done with: the expectations and reports read it
        tmp = tempfile.mkdtemp(prefix="dispatchsim-")
        db = Path(tmp) / "scenario.db"
    run = ScenarioRun(scenario, clock, db, endpoints, events, key_events, sanitize, progress, gate=gate,
                      scratch=tmp is not None)
    done = False
    try:
        for name in (scenario.simulated.endpoints if scenario.simulated else {}):
            sanitize.endpoint(name, endpoints.url(name), endpoints.host, endpoints.ports[name])
        await run.open()
        await run.setup()
        for cfg in scenario.configurations:
            names[cfg.id] = cfg.provider
        await run.timeline()
        remaining = max(0.0, scenario.duration - (clock.now() - t0))
        idle = await run.drain(remaining)
        stored = await run.engine.store.counts()
        counts = {s.value: stored.get(s.value, 0) for s in LIFECYCLE}
        notifications = await run.engine.notifications()
        inactive = [c.id for c in await run.engine.store.configs(kind=None) if not c.active]
        await endpoints.settle()
        endpoints.recorder.map_headers(sanitize)  # the Host header names a port that changes run to run
        finished = clock.now()
        await run.engine.close()
        run.closed = done = True
    finally:
        await endpoints.stop()
        if run.engine is not None and not run.closed:
            try:
                await run.engine.close()
            except Exception:
                pass
        if tmp is not None and not done:  # the run failed: nobody will read its database
            shutil.rmtree(tmp, ignore_errors=True)
    reader = PageReader(db)
    result = RunResult(scenario=scenario, t0=t0, finished_at=finished, wall=time.perf_counter() - wall, idle=idle,
                       events=events, key_events=key_events, deliveries=_stream(reader.deliveries, reader, "deliveries"),
                       attempts=_stream(reader.attempts, reader, "attempts"),
                       activities=Rows(reader.activity_ids, lambda: reader.count("activities")), counts=counts,
                       recorder=endpoints.recorder, endpoint_names=names, refused=run.refused, secrets=run.secrets,
                       force_retried=run.force_retried, notifications=notifications, inactive=inactive, reader=reader)
    if tmp is not None:  # a result is often dropped without being closed: the folder then goes with it
        result._cleanup = weakref.finalize(result, shutil.rmtree, tmp, True)
    return result


def _stream(read: Callable[[], Iterator[Any]], reader: PageReader, table: str) -> Rows[dict[str, Any]]:
    """Rows of ``table`` as the engine's API shows them, read a page at a time on each pass."""
    return Rows(lambda: (row.to_json() for row in read()), lambda: reader.count(table))


def _event_steps(ev: Event) -> Iterator[tuple[float, int, int, Event]]:
    """One event's steps in play order (its offsets, sorted if a kind ever gives them out of order)."""
    steps = ((ev.at + off, ev.index, k, ev) for k, off in enumerate(ev.action.offsets))
    offsets = ev.action.offsets
    if any(b < a for a, b in pairwise(offsets)):
        return iter(sorted(steps, key=lambda s: s[:3]))
    return steps


class _Sanitizer:
    """Ports of simulated endpoints change run to run; the event log names them instead."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self._re: re.Pattern[str] | None = None

    def add(self, old: str, new: str) -> None:
        self.pairs.append((old, new))
        self.pairs.sort(key=lambda p: -len(p[0]))
        self._map = dict(self.pairs)
        self._olds = tuple(self._map)
        # a text ending in a port's digits is not the start of a longer number (port 4321 in 43210)
        self._re = re.compile("|".join(re.escape(o) + (r"(?!\d)" if o[-1:].isdigit() else "") for o, _ in self.pairs))

    def endpoint(self, name: str, url: str, host: str, port: int) -> None:
        """Every form the address of simulated endpoint ``name`` takes in a text: its URL, ``host:port``
        (aiohttp's "Cannot connect to host 127.0.0.1:PORT"), ``[host]:port`` (IPv6), and the socket
        address tuple of an OS error (``Connect call failed ('127.0.0.1', PORT)``; an IPv6 one has four
        items, so its start is replaced)."""
        self.add(url, f"sim://{name}")
        self.add(f"{host}:{port}", f"sim:{name}")
        self.add(f"[{host}]:{port}", f"sim:{name}")
        self.add(f"({host!r}, {port}", f"(sim:{name}")

    def __call__(self, text: str) -> str:
        # most texts (every delivery's events, most header values) name no endpoint: a substring test
        # per port is several times cheaper than the regular expression's scan, and finds every text
        # it would change
        if self._re is not None:
            for old in self._olds:
                if old in text:
                    return self._re.sub(lambda m: self._map[m.group(0)], text)
        return text


#: one encoder for every event line (``json.dumps`` with options builds one per call)
_event_json = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


class ScenarioRun:
    """A scenario while it runs: the engine, the simulated endpoints, the clock and what is noted.

    Timeline actions (:mod:`.actions`) act on it through these attributes and methods.
    """

    def __init__(self, scenario: Scenario, clock: Any, db: str | Path, endpoints: EndpointSet,
                 events: EventLog | None, key_events: list[tuple[float, str]], sanitize: _Sanitizer,
                 progress: Progress | None = None, *, gate: ExternalGate | None = None, scratch: bool = False) -> None:
        self.s = scenario
        #: the database is the run's temporary file (no --db): nobody keeps it, see Engine.open(scratch=...)
        self.scratch = scratch
        self.gate = gate
        self.clock = clock
        self.db = db
        self.endpoints = endpoints
        self.events = events
        self.key_events = key_events
        self.sanitize = sanitize
        self.progress = progress
        self.engine: Engine | None = None  # type: ignore[assignment]
        self.closed = False
        self.t0 = clock.now()
        self.rng = random.Random(f"{scenario.seed}:activities")
        self.refused: dict[str, str] = {}
        self.secrets: list[str] = []
        self.force_retried: set[int] = set()
        self.crashed = False
        self._failing: set[str] = set()
        from .expect import unordered_configs
        self._unordered = unordered_configs(scenario)

    def note(self, text: str) -> None:
        self.key_events.append((self.clock.now() - self.t0, self.sanitize(text)))

    def _sink(self, event: dict[str, Any]) -> None:
        assert self.events is not None  # subscribed only with a log to keep
        event.pop("level", None)
        # ports are replaced in the serialised line (one regex pass) rather than in every value of
        # the event; the names and URLs they appear in need no JSON escaping, so the text is the same
        self.events.append(self.sanitize(_event_json(event)))
        name = event.get("event")
        if name == "delivery.retrying" and event.get("attempt") == 1 and event.get("queue") not in self._failing \
                and event.get("config_id") not in self._unordered:
            self._failing.add(event.get("queue"))
            what = f"HTTP {event['code']}" if event.get("code") else event.get("outcome", "").lower()
            self.note(f"queue {event.get('queue')}: delivery {event.get('delivery_id')} failed ({what}), retrying")
        elif name == "delivery.dispatched" and event.get("queue") in self._failing:
            self._failing.discard(event.get("queue"))
            self.note(f"queue {event.get('queue')}: delivery {event.get('delivery_id')} DISPATCHED "
                      f"on attempt {event.get('attempt')}; the queue flows again")
        elif name == "delivery.failed":
            self.note(f"delivery {event.get('delivery_id')} FAILED ({event.get('reason')}) on {event.get('queue')}")
        elif name in ("circuit.opened", "circuit.closed", "config.auto_disabled"):
            self.note(f"{name} {event.get('config_id')}: {event.get('reason')}")
        elif name == "attempt.interrupted":
            self.note(f"attempt of delivery {event.get('delivery_id')} interrupted by the crash; re-sent")

    async def open(self) -> None:
        self.engine = await Engine.open(self.db, clock=self.clock, seed=self.s.seed, sender=self.gate,
                                        scratch=self.scratch)
        if self.events is not None:
            self.engine.subscribe(self._sink)
        if self.progress is not None:
            self.engine.subscribe(self.progress.event)
            self.progress.begin(self.clock.now)
        self.closed = False

    def start(self) -> None:
        self.engine.start()

    async def _stop(self) -> None:
        if self.gate is not None and self.gate.capped.is_set():
            await self.gate.settle(self.clock.wait, SETTLE_CAPPED)
            await self.engine.stop(deadline=0)
        else:
            await self.engine.stop()

    async def setup(self) -> None:
        e = self.engine
        for tid, name in self.s.tenants.items():
            await e.add_tenant(tid, name)
        for provider in sorted({c.provider for c in self.s.configurations}):
            await e.add_provider(provider)
        for c in self.s.configurations:
            url = self.s.external.get(c.provider) or self.endpoints.url(c.provider)
            await e.add_config(c.tenant, c.provider, c.channel, config_id=c.id, endpoint_url=url, **c.fields)
            for key in ("auth", "signing_secret"):
                val = c.fields.get(key)
                if isinstance(val, dict):
                    self.secrets += [v for k, v in val.items() if k in ("value", "token", "password") and v]
                elif isinstance(val, str):
                    self.secrets.append(val)
            if c.active:
                await self.activate(c.id)
        for acc, spec in self.s.accounts.items():
            url = self.s.external.get(spec["provider"]) or self.endpoints.url(spec["provider"])
            for key in ("auth", "signing_secret"):
                val = spec["webhook"].get(key)
                if isinstance(val, dict):
                    self.secrets += [v for k, v in val.items() if k in ("value", "token", "password") and v]
                elif isinstance(val, str):
                    self.secrets.append(val)
            try:
                await self.engine.events.configure_webhook(acc, {**spec["webhook"], "url": url})
                self.note(f"account {acc}: message-event webhook saved (test GET answered 2xx)")
            except ActivationRefused as exc:
                self.refused[f"account:{acc}"] = self.sanitize(str(exc))
                self.note(f"account {acc}: webhook NOT saved: {self.sanitize(str(exc)).split('failed: ', 1)[-1]}")

    async def activate(self, cid: str) -> None:
        try:
            await self.engine.activate(cid)
            self.note(f"configuration {cid} activated (verification GET answered 2xx)")
        except ActivationRefused as exc:
            reason = self.sanitize(str(exc))
            self.refused[cid] = reason
            self.note(f"configuration {cid} NOT activated: {reason.split('failed: ', 1)[-1]}")

    async def timeline(self) -> None:
        """Play every step of every event in time order with the dispatcher running."""
        stream = self._steps()
        self.start()
        pending = next(stream, None)
        while pending is not None:
            at, _, k, ev = pending
            pending = next(stream, None)
            steps = [k]
            batch = getattr(ev.action, "apply_batch", None)
            if batch is not None:  # consecutive steps of one generator at one instant: one call
                while pending is not None and pending[0] == at and pending[3] is ev:
                    steps.append(pending[2])
                    pending = next(stream, None)
            wait = self.t0 + at - self.clock.now()
            if self.gate is not None:
                if await self.clock.wait(self.gate.capped, wait):
                    break
            elif wait > 0:
                await self.clock.sleep(wait)
            if len(steps) > 1:
                await batch(self, ev.at, steps)
            else:
                await ev.action.apply(self, ev.at, k)
            if self.progress is not None:
                self.progress.tick()
        await self._stop()

    def _steps(self) -> Iterator[tuple[float, int, int, Event]]:
        """(time, the event's place in the file, step number, event) for every step, in that order:
        merged from each event's own offsets rather than sorted in one list, which held a tuple per
        step (100,000 for a generator of 100,000 activities) for the whole timeline."""
        return heapq.merge(*(_event_steps(ev) for ev in self.s.timeline), key=lambda s: s[:3])

    async def drain(self, remaining: float) -> bool:
        await self._stop()
        end = self.clock.now() + remaining
        while True:
            left = end - self.clock.now()
            if left <= 0:
                return False
            summary = await self._run_until_idle(min(left, 3600))
            if summary is None:
                return False
            if self.progress is not None:
                self.progress.tick()
            if summary.idle:
                return True

    async def _run_until_idle(self, max_time: float) -> Any:
        """The engine's drain; None when an external provider's request cap stopped it."""
        if self.gate is None:
            return await self.engine.run_until_idle(max_time=max_time)
        if self.gate.capped.is_set():
            return self._capped()
        drain = asyncio.ensure_future(self.engine.run_until_idle(max_time=max_time))
        capped = asyncio.ensure_future(self.gate.capped.wait())
        await asyncio.wait({drain, capped}, return_when=asyncio.FIRST_COMPLETED)
        capped.cancel()
        if not self.gate.capped.is_set():
            return drain.result()
        await self.gate.settle(self.clock.wait, SETTLE_CAPPED)
        await self.engine.stop(deadline=0)
        await asyncio.gather(drain, return_exceptions=True)
        return self._capped()

    def _capped(self) -> None:
        p = self.gate.capped_provider if self.gate is not None else None
        if p is not None and not any("max_requests" in text for _, text in self.key_events):
            self.note(f"stopped: {p.max_requests} requests sent to {p.name}, its max_requests; nothing more was sent")
        return None

    async def crash(self) -> None:
        """Stop as a killed process would: in-flight attempts lost, leases left in the database."""
        await self.engine.crash()
        self.closed = True
