"""The dispatch loop: claim due work, run attempts, apply the policy's decision.

No SQL here (the store has named operations) and no state a restart cannot rebuild:
in-memory counts only bound concurrency; leases in the store are the truth.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .clock import Clock, iso
from .config import Auth, Snapshot
from .health import Change, EndpointState, record, tick
from .sender import Outcome, OutcomeKind, Request, Sender, encode_body
from .errors import InvalidTransition, NotFound, PayloadUnmappable
from .states import ACTIVE, Circuit, Status
from .store import AttemptResult, Claim
from .store_contract import DISPATCH_LOOP, Finish, StoreContract
from .store_file import storage_error
from .store_rows import Configuration, EndpointHealth, StoredActivity

#: builds a named tuple from its fields in order (see :func:`dispatchsim.engine.store._claim`)
_NEW = tuple.__new__
#: seconds between tries while the database cannot take writes (disk full, busy)
STORAGE_RETRY = 1.0


@dataclass(frozen=True)
class Prepared:
    snapshot: Snapshot
    mapper: Callable[[dict[str, Any]], Any] | None


#: Creates the deliveries that are due by ``now`` (e.g. batches of message events); returns when it
#: will next have something to create (None: nothing waits).
Producer = Callable[[float], Awaitable["float | None"]]


async def request_body(store: StoreContract, prep: Prepared, *, activity_id: str | None, batch_id: int | None,
                       activity: StoredActivity | None = None) -> bytes:
    """What a delivery POSTs: its batch of message events as a JSON array, or its activity in the seed
    shape (mapped when the configuration has a mapping; raises PayloadUnmappable). ``activity``: the
    activity already read (with the claim), else it is read here."""
    if batch_id is not None:
        return encode_body(await store.batch_events(batch_id))
    assert activity_id is not None
    if activity is not None:  # read with the claim
        return activity.body() if prep.mapper is None else encode_body(prep.mapper(activity.to_json()))
    if prep.mapper is None:
        return await store.activity_body(activity_id)
    return encode_body(prep.mapper((await store.activity(activity_id)).to_json()))


class ClaimedActivities:
    """The activities sent by the attempts of one claim, read in one query (not one per attempt) when
    the first of them builds its body.

    The attempts' tasks are created one after the other with nothing in between, so their first
    steps, which build the bodies, run one after the other in the next pass of the event loop: every
    body is made from the activity as it is at that moment, exactly as if each attempt had read its
    own (a result or a failure that lands before that pass is in all of them, none lands between)."""

    __slots__ = ("_store", "_ids", "_read")

    def __init__(self, store: StoreContract, activity_ids: list[str]) -> None:
        self._store = store
        self._ids = activity_ids
        self._read: dict[str, StoredActivity] | None = None

    def known(self, activity_id: str) -> StoredActivity | None:
        """The activity when the claim's activities are read already and it is among them; None otherwise
        (not read yet, or gone: :meth:`get` says which), without a coroutine."""
        read = self._read
        return None if read is None else read.get(activity_id)

    async def get(self, activity_id: str) -> StoredActivity:
        """The stored activity (NotFound when it is gone, as a single read says)."""
        if self._read is None:
            self._read = await self._store.stored_activities(self._ids)
        activity = self._read.get(activity_id)  # not popped: two deliveries of one activity may share a claim
        if activity is None:
            raise NotFound(f"activity {activity_id!r} not found")
        return activity


@dataclass(frozen=True, slots=True)
class AttemptObservation:
    """One HTTP try as it ends, for live metrics: outcome kind, latency and how late it started
    after it was due (seconds)."""

    outcome: str
    latency: float | None
    lag: float


#: seconds at most a group commit waits for the attempts still in flight, so that waves of attempts
#: that finish a little apart are recorded (and their successors claimed) together (see :meth:`Dispatcher.merge_waves`)
MERGE_WINDOW = 0.002
#: loop passes without an attempt ending after which a virtual-clock group commit goes (see _instant_flush)
INSTANT_PASSES = 6

#: seconds a stop still leaves operator notifications when the attempts used up its deadline (never more
#: than the deadline itself; see :meth:`Dispatcher.stop`)
NOTIFY_GRACE = 2.0


class Dispatcher:
    """The dispatch loop: claims due deliveries, sends one attempt each, records the outcomes.

    Every decision it acts on lives in the store (leases, statuses, queue heads, circuit state), so a
    crash at any point loses nothing: an attempt whose outcome was not committed is sent again.
    The :class:`Engine` owns one; use the engine rather than this class directly.
    """

    def __init__(self, *, store: StoreContract, sender: Sender, clock: Clock, log: Any,
                 prepared: Callable[[str, int], Awaitable[Prepared]], instance: str,
                 concurrency: int = 100, lease_margin: float = 30.0, produce: Producer | None = None,
                 known: Callable[[tuple[str, int]], Prepared | None] | None = None) -> None:
        """``prepared``: a configuration version's snapshot and mapper; ``known``: the one prepared already
        for a (configuration, version), or None, without a coroutine (what each attempt asks first)."""
        self.store = store
        self.sender = sender
        self.clock = clock
        self.log = log
        self._prepared = prepared
        self._known = known if known is not None else (lambda key: None)
        self._produce = produce
        #: when the producer next has something to create (as of the last cycle)
        self._next_produce: float | None = None
        self._instance = instance
        self._concurrency = concurrency
        self._lease_margin = lease_margin
        self._tokens = itertools.count(1)
        self._inflight: dict[int, asyncio.Task[None]] = {}
        #: called with an :class:`AttemptObservation` as each try ends (serve mode's metrics)
        self.observers: list[Callable[[AttemptObservation], None]] = []
        self._per_config: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._stopping = False
        #: finished attempts waiting for the next group commit (one transaction per loop tick)
        self._results: list[tuple[Claim, Snapshot, Outcome | str]] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        #: circuit breaker / auto-disable state per configuration (persisted in endpoint_health)
        self._health: dict[str, EndpointState] = {}
        #: shared health (see :meth:`share_health`): how often to re-read it, and when it was read
        self._health_every: float | None = None
        self._stand_ins = False  # see share_health
        self._health_read_at = float("-inf")
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._batch_configs: dict[str, Configuration | None] = {}
        #: pacing (serve mode, see :meth:`pace`); off by default
        self._cycle_interval = 0.0
        self._claim_chunk: int | None = None
        self._chunk_limited = False
        #: results were committed since the last cycle: the next one starts at once, whatever the pacing,
        #: so an ordered queue sends its next head as soon as the previous one is recorded
        self._recorded = False
        #: a group commit claims the next head of the ordered queues it frees (see :meth:`pace`): on by
        #: default, so a simulation runs the path serve mode runs (and one transaction less per head)
        self._chain = True
        #: attempts claimed by a group commit that has not committed yet (they count against capacity)
        self._chaining = 0
        #: attempt slots a claim under way may still fill (see :meth:`_free`)
        self._reserved = 0
        #: deliveries this dispatcher is claiming, or claimed in a group commit not committed yet: to another
        #: connection of a shared database they still look due (see :meth:`_not_mine`)
        self._claiming: set[int] = set()
        self._accounting: Counter[str] = Counter()  # configurations a group commit is feeding outcomes to
        self._stale_windows: set[str] = set()  # their breaker windows, to be rebuilt once it ends
        #: a :meth:`run` is going on (a group commit claims next heads only then, as a cycle would)
        self._running = False
        #: the group commit also claims due work (see :meth:`commit_claims`)
        self._commit_claims = not clock.virtual
        #: seconds a group commit waits for the attempts in flight (see :meth:`merge_waves`); 0: none
        self._merge_window = 0.0 if clock.virtual else MERGE_WINDOW
        #: set when the last attempt in flight ends (what a waiting group commit waits for)
        self._drained = asyncio.Event()
        #: a group commit is waiting for attempts in flight: the results it holds keep their room
        self._merging = False
        #: the results waiting for the group commit include an ordered queue's: it goes without waiting
        self._urgent = False

    async def load(self) -> None:
        """Read the persisted endpoint health (the engine calls it once, when it opens)."""
        for row in await self.store.health_rows():
            self._health[row.config_id] = EndpointState(
                circuit=row.circuit, circuit_until=row.circuit_until,
                consecutive_failures=row.consecutive_failures, failing_since=row.failing_since)

    def share_health(self, *, every: float = 1.0) -> None:
        """Several workers on one database (PostgreSQL): read the endpoint health the others stored
        at most every ``every`` seconds, so a circuit one worker opened, and a failure streak it
        counted, hold for all; the breaker's window is then rebuilt from the shared attempts. Each
        claim also offers the store stand-ins for candidates another worker may take first (see
        :meth:`_fill_room`)."""
        self._health_every = every
        self._stand_ins = True

    def _health_due(self, now: float) -> bool:
        """The shared endpoint health is to be read again now (see :meth:`share_health`)."""
        return self._health_every is not None and now - self._health_read_at >= self._health_every

    async def _refresh_health(self, now: float) -> None:
        """Read the shared health at once (the dispatch cycle reads it when due, with its other reads)."""
        self._read_health(await self.store.health_rows(), now)

    def _read_health(self, rows: list[EndpointHealth], now: float) -> None:
        """Take the health the other workers stored (:meth:`share_health`) into this worker's view."""
        self._health_read_at = now
        for row in rows:
            self._adopt(row, now)

    def _adopt(self, row: EndpointHealth, now: float) -> None:
        """Take one endpoint's stored health into this worker's view."""
        st = self._health.setdefault(row.config_id, EndpointState())
        if st.circuit is Circuit.OPEN and row.circuit is not Circuit.OPEN and (st.circuit_until or 0.0) > now:
            # opened here, perhaps not committed yet: a stale read must not close it before its cooldown
            return
        circuit = row.circuit
        if circuit is Circuit.OPEN and (row.circuit_until or 0.0) <= now:
            circuit = Circuit.HALF_OPEN  # cool-down over: what tick() makes of it (stored when probed)
        if st.circuit is not circuit:
            st.probing = False
        st.circuit, st.circuit_until = circuit, row.circuit_until
        st.consecutive_failures, st.failing_since = row.consecutive_failures, row.failing_since
        if self._accounting[row.config_id]:
            # a group commit is feeding this window its outcomes: emptied now, the next outcome would
            # meet a window without the ones before it (a circuit two failures should open stayed
            # closed); it is emptied, to be rebuilt from the shared attempts, once the commit ends
            self._stale_windows.add(row.config_id)
        else:
            st.loaded_window = False
            st.window.clear()

    # -- control ------------------------------------------------------------------------

    def arm(self) -> None:
        """Allow :meth:`run` again after a :meth:`stop` (called before starting a run, never inside it,
        so a stop issued before the run task first gets scheduled is not lost)."""
        self._stopping = False

    def wake(self) -> None:
        """Start the next cycle now instead of at the next due time (e.g. a new activity arrived)."""
        self._wake.set()

    def pace(self, *, interval: float = 0.0, chunk: int | None = None, chain: bool = True) -> None:
        """Pacing for a real-clock engine that shares its event loop with an API (serve mode).

        ``interval``: at most one dispatch cycle per ``interval`` seconds. Every new activity wakes
        the dispatcher, and a cycle costs several queries whether it claims one delivery or twenty:
        at hundreds of activities per second, one cycle per activity made dispatch bookkeeping the
        largest CPU cost of the process. Waiting a few milliseconds claims them in small batches.
        ``chunk``: claim at most this many deliveries per cycle, so one cycle (its claim transaction
        and the first steps of the attempts it starts) never holds the event loop long while API
        requests wait; a cycle that stopped at the limit is followed after one pass of the loop.
        ``chain``: the group commit that records the end of an ordered queue's head also claims the
        queue's next head, when it is due and a dispatch cycle would claim it now (its configuration
        active, its circuit closed, room for one more attempt): one transaction per delivery of an
        ordered queue instead of two, and no cycle between two heads. It is the default of every
        engine (a scenario on the virtual clock too): off, the next cycle claims the same heads at the
        same instant, one transaction later.
        """
        self._cycle_interval = max(0.0, interval)
        self._claim_chunk = chunk if chunk is None else max(1, chunk)
        self._chain = chain

    def commit_claims(self, on: bool = True) -> None:
        """The group commit that records finished attempts also claims the due work their room lets a
        dispatch cycle claim, in the same transaction: one write transaction per wave of attempts
        instead of two, and the next attempts start as soon as it is stored. On by default on the
        real clock; off on the virtual clock, where a simulation's claims stay in the dispatch cycle
        (what a scenario records does not change)."""
        self._commit_claims = on

    def merge_waves(self, window: float = MERGE_WINDOW) -> None:
        """A group commit that finds attempts still in flight waits for them, at most ``window`` seconds,
        so that one transaction records them all and claims their successors together.

        Without it, attempts that answer a little earlier than the rest (a connection kept alive from
        the verification ``GET``, a faster path) form a wave of their own that never merges back: each
        wave costs a group commit (its COMMIT, its claim) whether it records one attempt or fifty, and
        a wave claimed apart stays apart. Waiting moves the early wave onto the late one; once merged
        the wave ends together, so the wait ends when the last of them does. While it waits, the room
        of the attempts it holds is kept for its claim (no dispatch cycle claims it meanwhile). An
        ordered queue's next head is never delayed: a commit holding an ordered queue's result goes
        at once, and one arriving during a wait ends it (otherwise every head of an ordered queue would
        wait out the window whenever another queue, a slow endpoint say, has an attempt in flight).
        On by default on the real clock; off (0) on the virtual clock, where what a simulation
        records must not depend on it."""
        self._merge_window = max(0.0, window)

    @property
    def in_flight(self) -> int:
        """Number of attempts being sent right now by this dispatcher."""
        return len(self._inflight)

    async def idle(self) -> bool:
        """Nothing in flight and nothing that will ever become due without outside action
        (paused configurations and blocked queues do not count as pending)."""
        if self._inflight or self._side_tasks or self._next_produce is not None:
            return False
        blocked = set(await self.store.paused_configs())
        pending_circuit = False
        for cid, st in self._health.items():
            if st.circuit is not Circuit.CLOSED:
                blocked.add(cid)
                pending_circuit = True
        if await self.store.next_wakeup(exclude_configs=sorted(blocked)) is not None:
            return False
        if pending_circuit:
            paused = set(await self.store.paused_configs())
            open_ids = [cid for cid, st in list(self._health.items()) if st.circuit is not Circuit.CLOSED
                        and cid not in paused]
            for cid in open_ids:
                for status in sorted(ACTIVE):
                    if await self.store.deliveries(config_id=cid, status=status, limit=1):
                        return False
        return True

    async def run(self, *, until_idle: bool = False, deadline: float | None = None) -> None:
        """Dispatch until stopped; with ``until_idle`` return once nothing is due, pending or in flight.

        "Pending" includes retries scheduled in the future: on the virtual clock the wait
        for them is instant. Deliveries behind a blocked queue head are not pending.
        """
        self._running = True
        # the loop's statements, and those of the attempts and group commits it starts (tasks inherit it)
        token = DISPATCH_LOOP.set(True)
        try:
            await self._run(until_idle=until_idle, deadline=deadline)
        finally:
            DISPATCH_LOOP.reset(token)
            self._running = False

    async def _run(self, *, until_idle: bool, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            started = loop.time()
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                return
            try:
                # the cycle's first reads, sent together to a network database (one wait)
                view = await self.store.cycle_view(now, sorted(self._per_config), health=self._health_due(now))
                if view.leases_ended:
                    await self._release(now)
                if view.health is not None:
                    self._read_health(view.health, now)
                if self._produce is not None:
                    self._next_produce = await self._produce(now)
                blocked, probes, next_change = await self._gate(now, view.paused)
                limits = {cid: await self._limit_of(cid, cfg) for cid, cfg in view.configs.items()}
                saturated = await self._fill(now, blocked, probes, limits=limits)
            except Exception as exc:
                await self._storage_pause(exc)
                continue
            if self._chunk_limited:
                timeout = 0.0  # more may be due right now: the next cycle follows after one loop pass
            elif self._inflight and len(self._inflight) >= self._concurrency:
                timeout = None
            else:
                try:
                    nxt = await self.store.next_wakeup(exclude_configs=saturated)
                except Exception as exc:  # the same as a failed cycle read (it ended the dispatcher for good)
                    await self._storage_pause(exc)
                    continue
                if self._next_produce is not None:
                    nxt = self._next_produce if nxt is None else min(nxt, self._next_produce)
                # a group commit under way is not idle: the results it stores may retry, and what it
                # claims is counted against the limits (the due read left those configurations out)
                committing = bool(self._results) or any(not t.done() for t in self._flushes)
                # and ``saturated`` is as it was before that read: attempts that ended and were recorded while
                # it awaited the store (a network database) leave room the read did not look at; they set
                # the wake, so the cycle runs again instead (it returned with 1,445 deliveries READY)
                if (nxt is None and next_change is None and not self._inflight and not self._side_tasks
                        and not committing and until_idle and not self._wake.is_set()):
                    return
                timeout = None if nxt is None else max(0.0, nxt - now)
                if timeout == 0.0 and self._inflight:
                    timeout = None  # due work waits for capacity; a finishing attempt wakes us
                if next_change is not None:
                    left = max(0.0, next_change - now)
                    timeout = left if timeout is None else min(timeout, left)
            if deadline is not None:
                left = deadline - now
                timeout = left if timeout is None else min(timeout, left)
            await self.clock.wait(self._wake, timeout)
            recorded, self._recorded = self._recorded, False
            if (self._cycle_interval or self._chunk_limited) and not self._stopping and not recorded:
                left = 0.0 if self._chunk_limited else started + self._cycle_interval - loop.time()
                await asyncio.sleep(max(0.0, left))

    async def _storage_pause(self, exc: Exception) -> None:
        """A read of the loop failed: when the database is unavailable (disk full, busy, read-only, the
        connection lost) nothing was written, so log it and try again shortly; anything else is a bug."""
        unavailable = storage_error(exc)
        if unavailable is None:
            raise exc
        self.log.error("store.unavailable", error=str(unavailable), retry_in=STORAGE_RETRY)
        await self.clock.wait(self._wake, STORAGE_RETRY)

    async def stop(self, *, deadline: float = 10.0) -> int:
        """Stop claiming; wait for attempts in flight up to ``deadline`` seconds, then abandon them.

        Abandoned attempts keep their lease, so the next engine on this file re-sends them.
        Returns how many were abandoned.
        """
        self._stopping = True
        self._wake.set()
        self._drained.set()  # a group commit waiting for attempts in flight (merge_waves) goes at once
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline  # one deadline for the attempts, the group commits and the side tasks
        pending = list(self._inflight.values())
        not_done: set[asyncio.Task[None]] = set()
        if pending:
            _, not_done = await asyncio.wait(pending, timeout=deadline)
            for task in not_done:
                task.cancel()
            if not_done:
                await asyncio.wait(not_done)
        while self._flushes and loop.time() < end:
            # a group commit under way may still claim (chained heads, the next wave): what it leased
            # is in the store once it ends, so a stop that then releases this engine's leases sees it.
            # Waited for until none is left: results that end while one stores start another, which holds
            # them and would still be storing when the stop released their leases: a delivery answered
            # 200 sent again
            await asyncio.wait(list(self._flushes), timeout=max(0.0, end - loop.time()))
        await self.flush()
        # notifications the last commits raised are sent once only: they get a moment even when the
        # attempts used up the deadline
        await self._drain_side_tasks(max(end - loop.time(), min(deadline, NOTIFY_GRACE)))
        return len(not_done)

    async def _drain_side_tasks(self, deadline: float) -> None:
        if self._side_tasks:
            _, late = await asyncio.wait(list(self._side_tasks), timeout=deadline)
            for task in late:
                task.cancel()

    def abandon(self) -> None:
        """Crash simulation: drop every attempt in flight without touching the store."""
        self._stopping = True
        self._results.clear()
        for task in list(self._inflight.values()) + list(self._side_tasks):
            task.cancel()

    # -- one cycle ----------------------------------------------------------------------

    async def _release(self, now: float) -> None:
        for did in await self.store.release_expired_leases(now):
            self.log.warning("attempt.interrupted", delivery_id=did,
                             reason="lease expired; will be re-sent now")

    async def _gate(self, now: float, paused: list[str]) -> tuple[set[str], set[str], float | None]:
        """Configurations nothing may be sent to now (``paused``, open circuit, probe in flight), those
        allowed exactly one probe (half-open), and when a circuit's cool-down ends next."""
        blocked = set(paused)
        probes: set[str] = set()
        next_change: float | None = None
        changes: list[Change] = []
        for cid, st in self._health.items():
            changes += tick(st, now, cid)
            if st.circuit is Circuit.OPEN:
                blocked.add(cid)
                if st.circuit_until is not None:
                    next_change = st.circuit_until if next_change is None else min(next_change, st.circuit_until)
            elif st.circuit is Circuit.HALF_OPEN:
                # a probe is in flight here, or one (perhaps another worker's) holds the probe until circuit_until
                held = st.probing or (st.circuit_until or 0.0) > now
                (blocked if held else probes).add(cid)
                if held and not st.probing and st.circuit_until is not None:
                    next_change = st.circuit_until if next_change is None else min(next_change, st.circuit_until)
        if changes:
            async with self.store.tx():
                events = await self._apply_changes(changes, now)
            self._emit(events)
        return blocked, probes, next_change

    async def _fill(self, now: float, blocked: set[str] | None = None, probes: set[str] | None = None, *,
                    held: list[Claim] | None = None, limits: dict[str, int] | None = None) -> list[str]:
        """Claim as much due work as capacity allows; returns the configs nothing more may be claimed for.

        ``held``: called by a group commit (see :meth:`commit_claims`): the claims are collected there,
        counted against capacity, and their attempts start once the commit is stored; the paused
        configurations are then left out by the due read itself. ``limits``: configurations' limits
        already known (read in this transaction)."""
        probes = probes or set()
        limits = {} if limits is None else limits  # one look-up per configuration and cycle
        # a copy: attempts finishing while a store call awaits change the counts
        saturated = {cid for cid, n in list(self._per_config.items())
                     if n >= await self._limit(cid, limits)} | (blocked or set())
        room = self._free()
        if held is None:
            self._chunk_limited = False
            if self._claim_chunk is not None and room > self._claim_chunk:
                room = self._claim_chunk
                self._chunk_limited = True  # cleared below unless the chunk is used up
        elif self._claim_chunk is not None:
            room = min(room, self._claim_chunk)
        self._reserved += room  # until this fill ends (its claims count twice meanwhile: never too few)
        try:
            left = await self._fill_room(now, room, saturated, probes, limits, held)
        finally:
            self._reserved -= room
        if left > 0 and held is None:
            self._chunk_limited = False
        return sorted(saturated)

    async def _fill_room(self, now: float, room: int, saturated: set[str], probes: set[str], limits: dict[str, int],
                         held: list[Claim] | None) -> int:
        """:meth:`_fill`'s claims for ``room`` reserved slots; returns the slots left unused."""
        while room > 0:
            # with stand-ins (several workers) the rows after the room are offered in place of those another
            # worker takes; alone, rows past the room are read for nothing (one table look-up each): a row
            # skipped here (its configuration saturated) excludes that configuration from the next read
            asked = room * 2 if self._stand_ins else room
            # past what this worker is claiming too (see _not_mine): to another connection it is still due
            mine = len(self._claiming) if self._stand_ins else 0
            read = await self.store.due_candidates(now, asked + mine, exclude_configs=sorted(saturated),
                                                   skip_paused=held is not None)
            rows = self._not_mine(read, asked)
            if not rows:
                break
            leases: list[tuple[int, float]] = []
            preps: dict[tuple[str, int], Prepared] = {}  # most rows share a few versions: one look-up each
            with self._planning() as planned:
                for did, cid, version in rows:
                    if len(leases) >= room and not self._stand_ins:
                        break
                    if cid in saturated:
                        continue
                    prep = preps.get((cid, version))
                    if prep is None:
                        prep = preps[(cid, version)] = await self._prepared(cid, version)
                    limit = 1 if cid in probes else prep.snapshot.ordering.concurrency
                    # the store leases at most ``room`` of the claim, so at most ``room`` of one configuration:
                    # its candidates past that many are stand-ins its limit need not count (``limit=room``)
                    counted = len(leases) < room or planned[cid] < room
                    if counted and self._per_config[cid] >= limit:
                        if len(leases) < room:
                            saturated.add(cid)
                        continue
                    until = self._lease_until(prep.snapshot, now)
                    if len(leases) >= room:
                        # a stand-in: leased only in place of one another worker took meanwhile (the claim's
                        # limit keeps it to the room); counted like the others until the claim returns, so
                        # no configuration's limit can be passed whichever of them the store leases
                        if cid in probes:
                            continue
                    elif cid in probes and not await self._take_probe(cid, now, until):
                        saturated.add(cid)
                        continue
                    if counted:
                        self._count(cid, 1)  # now: a claim running while this one awaits the store sees it
                        planned[cid] += 1
                    leases.append((did, until))
                if not leases:
                    break
                tried = set(planned)
                claims = await self._claim_planned(leases, planned, now, limit=room, uncommitted=held is not None)
            if self._stopping and held is None:
                # stopped while the store claimed: left like any attempt a stop abandons (their leases
                # end, or the stop releases this engine's own), never started behind the stop's back
                for claim in claims:
                    self._count(claim.config_id, -1)
                break
            # the claims become attempts (or the group commit's) before anything else is awaited
            for claim in claims:
                if claim.config_id in probes:
                    self._health[claim.config_id].probing = True
                    saturated.add(claim.config_id)
            if held is not None:
                held.extend(claims)
                self._chaining += len(claims)
            else:
                self._start_attempts(claims)
            room -= len(claims)
            for cid in probes & tried - {c.config_id for c in claims}:
                # the probe's delivery was taken meanwhile: give the probe back at once
                await self.store.save_circuit(cid, circuit=Circuit.HALF_OPEN, circuit_until=now, now=now)
                self._health[cid].circuit_until = now
            for cid, n in list(self._per_config.items()):
                if n >= await self._limit(cid, limits):
                    saturated.add(cid)
            if len(read) < asked + mine or not claims:
                break
        return room

    def _not_mine(self, rows: list[tuple[int, str, int]], asked: int) -> list[tuple[int, str, int]]:
        """The first ``asked`` due candidates but the deliveries this dispatcher holds already. On a
        shared database (:meth:`share_health`) a due read on one connection still sees as due what a
        group commit on another has claimed and not committed yet (and what a claim that committed
        after the read began has leased): claimed again, they were found locked or leased, and about
        one claim in five of a serve worker's benchmark run leased nothing (a due read, a claim and
        their waits for nothing). Alone on SQLite every read sees the dispatcher's own writes: nothing
        to leave out."""
        if not self._stand_ins or not (self._claiming or self._inflight):
            return rows if len(rows) <= asked else rows[:asked]
        return [r for r in rows if r[0] not in self._claiming and r[0] not in self._inflight][:asked]

    def _free(self) -> int:
        """Attempt slots no attempt, chained claim or claim under way holds. A claim reserves its
        slots before its first await and counts each planned lease against its configuration at
        once: on PostgreSQL the store's calls suspend, and a group commit claiming meanwhile (chained
        heads, :meth:`commit_claims`) must not see the same room free."""
        held = len(self._results) if self._merging else 0
        return max(0, self._concurrency - len(self._inflight) - self._chaining - self._reserved - held)

    def _count(self, config_id: str, n: int) -> None:
        """Add ``n`` (negative: release) to the attempts counted against a configuration."""
        left = self._per_config[config_id] + n
        if left > 0:
            self._per_config[config_id] = left
        else:
            del self._per_config[config_id]

    @contextlib.contextmanager
    def _planning(self) -> Iterator[Counter[str]]:
        """Leases planned in this block, per configuration, each already counted (:meth:`_count`);
        when the block fails before :meth:`_claim_planned` returns, their counts are released."""
        planned: Counter[str] = Counter()
        try:
            yield planned
        except BaseException:
            for cid, n in planned.items():
                self._count(cid, -n)
            raise

    async def _claim_planned(self, leases: list[tuple[int, float]], planned: Counter[str], now: float, *,
                             limit: int | None = None, uncommitted: bool = False) -> list[Claim]:
        """Claim planned leases (see :meth:`_planning`), at most ``limit`` of them; the counts of those
        the store did not lease (another worker took them meanwhile, or the limit was reached) are released.
        ``uncommitted``: in a group commit, whose end forgets the claims' deliveries (see :meth:`_not_mine`)."""
        asked = {did for did, _ in leases}
        self._claiming |= asked
        leased: set[int] = set()
        try:
            claims = await self._claim(leases, now, limit=limit)
            if uncommitted:
                leased = {c.delivery_id for c in claims}
        finally:
            self._claiming -= asked - leased
        for cid, n in (planned - Counter(c.config_id for c in claims)).items():
            self._count(cid, -n)
        planned.clear()  # counted by their attempts now: a failure after this releases nothing
        return claims

    def _lease_until(self, snap: Snapshot, now: float) -> float:
        """When a lease taken now ends: the attempt's whole timeout, plus the margin for recording it."""
        return now + snap.timeouts.total + self._lease_margin

    async def _claim(self, leases: list[tuple[int, float]], now: float, *, limit: int | None = None) -> list[Claim]:
        """Lease these deliveries (at most ``limit``) under a new token of this dispatcher (its instance, a counter)."""
        return await self.store.claim(leases, token=f"{self._instance}:{next(self._tokens)}", now=now, limit=limit)

    async def _take_probe(self, config_id: str, now: float, until: float) -> bool:
        """Take the one probe of a half-open endpoint in the store, so that across all workers one
        probe goes at a time. When another worker holds it, the health is read again: this worker
        then waits for that probe's outcome, or for its end if that worker died."""
        st = self._health[config_id]
        if await self.store.take_probe(config_id, now=now, until=until):
            st.circuit_until = until
            return True
        await self._refresh_health(now)
        if st.circuit is Circuit.HALF_OPEN and not st.probing and (st.circuit_until or 0.0) <= now:
            st.circuit_until = now + STORAGE_RETRY  # nothing stored to take (no row): look again shortly
        return False

    async def _limit(self, config_id: str, memo: dict[str, int]) -> int:
        """How many attempts of the configuration (as it is now) may be in flight at once."""
        limit = memo.get(config_id)
        if limit is None:
            limit = memo[config_id] = await self._limit_of(config_id, await self.store.config(config_id))
        return limit

    async def _limit_of(self, config_id: str, cfg: Configuration | None) -> int:
        """:meth:`_limit` of a configuration already read (None: deleted, one attempt at most)."""
        return 1 if cfg is None else (await self._prepared(config_id, cfg.version)).snapshot.ordering.concurrency

    # -- one attempt --------------------------------------------------------------------

    def _start_attempts(self, claims: list[Claim]) -> None:
        """Send each claimed delivery in a task of its own (their configurations' counts are already
        taken). The activities they send are read together, by the first of them to build its body."""
        unread = [c.activity_id for c in claims if c.activity_id is not None and c.activity is None]
        activities = ClaimedActivities(self.store, unread) if unread else None
        # unnamed (asyncio's own "Task-N"): a name is one more Python call and string per attempt, and the
        # task is found by its delivery id in _inflight
        create = asyncio.get_running_loop().create_task
        inflight = self._inflight
        for claim in claims:
            inflight[claim.delivery_id] = create(self._attempt(claim, activities))

    async def _attempt(self, claim: Claim, activities: ClaimedActivities | None) -> None:
        chained = False
        try:
            prep = (self._known((claim.config_id, claim.config_version))
                    or await self._prepared(claim.config_id, claim.config_version))
            snap = prep.snapshot
            started = self.clock.now()
            try:
                # the usual case without a coroutine of its own: the activity read already (with the claim, or
                # by the claim's first attempt: see ClaimedActivities), sent as stored
                known = claim.activity or (activities.known(claim.activity_id) if activities is not None else None)
                if known is not None and prep.mapper is None:
                    body = known.body()
                else:
                    body = await self._body(claim, prep, activities)
            except PayloadUnmappable as exc:
                self._queue_result(claim, snap, str(exc))
                return
            # Request's fields in order (url, body, webhook_id, timestamp, auth, signing_secret, connect_timeout,
            # total_timeout), without the Python call of a named tuple's constructor (see store._claim)
            req = _NEW(Request, (snap.endpoint_url, body, claim.webhook_id, int(started), snap.auth,
                                 snap.signing_secret, snap.timeouts.connect, snap.timeouts.total))
            outcome = await self.sender.send(req)
            for observe in self.observers:
                observe(AttemptObservation(outcome=outcome.kind.value, latency=outcome.latency,
                                           lag=max(0.0, started - claim.due_at)))
            self._queue_result(claim, snap, outcome)
            # its commit frees its ordered queue, claims the next head and wakes the loop unless that
            # left the loop nothing to do (see _replaced): a cycle now would find the queue still leased
            chained = not self._commit_claims and snap.ordering.ordered
        finally:
            self._inflight.pop(claim.delivery_id, None)
            self._count(claim.config_id, -1)
            if not self._inflight:
                self._drained.set()
            if not self._merging and not chained:
                self._wake.set()  # (a waiting group commit wakes the loop once it is stored)

    def _queue_result(self, claim: Claim, snap: Snapshot, result: Outcome | str) -> None:
        """Group commit: results finished in the same loop tick are stored in one transaction.

        Until it commits, the delivery keeps its lease, so nothing else of its queue can start;
        a crash before the commit means the attempt is re-sent (at-least-once).
        """
        self._results.append((claim, snap, result))
        if snap.ordering.ordered:
            # an ordered queue's next head waits for this commit: it never waits for other queues'
            # attempts (see :meth:`merge_waves`), so a merge under way ends now
            self._urgent = True
            if self._merging:
                self._drained.set()
        if not self._flush_scheduled:  # (most results of a wave find it scheduled: no call)
            self._schedule_flush()

    def _schedule_flush(self, delay: float = 0.0) -> None:
        """Run :meth:`flush` as a task of its own: at the end of this loop tick (``delay`` 0, the
        task's first step is as soon as a ``call_soon``), or after ``delay`` seconds."""
        if self._flush_scheduled:
            return
        self._flush_scheduled = True
        loop = asyncio.get_running_loop()
        if delay:
            loop.call_later(delay, self._start_flush)
        else:
            self._start_flush()

    def _start_flush(self) -> None:
        # the attempt whose result scheduled this commit is still counted in flight: others make it wait
        others = len(self._inflight) > 1 and not self._stopping
        instant = others and self.clock.virtual and not self._commit_claims
        self._merging = instant or (others and bool(self._merge_window) and not self._urgent)
        if self._merging and not instant:
            self._drained.clear()  # here, not in the task: an ordered result of this same tick may set it
        commit = self._instant_flush() if instant else self._merged_flush() if self._merging else self.flush()
        task = asyncio.get_running_loop().create_task(commit, name="group-commit")
        self._flushes.add(task)
        task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            asyncio.get_running_loop().call_exception_handler(
                {"message": "group commit failed", "exception": task.exception(), "task": task})

    async def _merged_flush(self) -> None:
        """:meth:`flush` once the attempts in flight have ended too, or after the merge window (see
        :meth:`merge_waves`), or at once when the dispatcher stops."""
        try:
            if self._inflight and not self._stopping and not self._urgent:
                await self.clock.wait(self._drained, self._merge_window)
        finally:
            self._merging = False
        try:
            await self.flush()
        finally:
            # the attempts that ended during the wait did not wake the loop (the commit was to): it
            # must wake even when the commit failed, or a loop waiting for room could sleep on
            self._wake.set()

    async def _instant_flush(self) -> None:
        """Virtual clock: :meth:`flush` once the other attempts of this instant have ended too.

        HTTP takes no simulated time, so a wave's attempts all end at the instant they started, over a
        few passes of the loop (the endpoint reads and answers, the client reads). The commit waits
        while they keep ending and goes after :data:`INSTANT_PASSES` passes without one (or once none
        is in flight): one transaction records the wave and claims its successors. No simulated time
        passes meanwhile (the loop is never idle, so the clock stands still), and what ends when is the
        loop's order alone, not the wall clock's: a run records what it recorded, at the same instants.
        (Without it, the dispatch cycle that followed every attempt's end was what let the rest of the
        wave arrive before the commit.)"""
        try:
            quiet = 0
            while self._inflight and not self._stopping and quiet < INSTANT_PASSES:
                seen = len(self._results)
                await asyncio.sleep(0)
                quiet = 0 if len(self._results) > seen else quiet + 1
        finally:
            self._merging = False
        await self.flush()

    async def flush(self) -> None:
        """Commit the finished attempts waiting for the group commit, in one transaction.

        Called at the end of the loop tick they finished in, and on stop so no finished outcome is lost.
        """
        chained: list[Claim] = []  # what it claims (see _claim_planned): its deliveries are claimed until it ends
        try:
            await self._flush(chained)
        finally:
            # committed (their attempts started), rolled back or given back: no longer claimed here
            self._claiming.difference_update(c.delivery_id for c in chained)

    async def _flush(self, chained: list[Claim]) -> None:
        """:meth:`flush`; ``chained`` collects the claims its transaction makes."""
        self._flush_scheduled = False
        if not self._results:
            return
        batch, self._results = self._results, []
        self._urgent = False
        events: list[tuple[str, str, dict[str, Any]]] = []
        self._batch_configs: dict[str, Configuration | None] = {}
        changed: set[str] = set()  # configurations whose endpoint health changed in this commit
        attempted = {c.config_id: c.attempt_id for c, _, r in batch if not isinstance(r, str)}
        self._accounting.update(attempted.keys())
        try:
            async with self.store.tx():
                # the breaker windows are read before this batch is recorded (its attempts are still open);
                # a configuration no breaker, auto-disable or health state concerns now is not fed below.
                # The configurations are read together first (a network database: one wait for all)
                self._batch_configs.update(await self.store.configs_by_id(list(attempted)))
                concerned = {cid for cid, aid in attempted.items() if await self._endpoint(cid, aid) is not None}
                quiet = getattr(self.log, "quiet", False)  # nobody reads the events: their fields are not built
                plans = [self._plan(claim, snap, result, quiet=quiet) for claim, snap, result in batch]
                done = await self.store.finish_attempts([finish for finish, _ in plans])
                for (claim, _, result), (_, event), moved in zip(batch, plans, done):
                    if isinstance(moved, InvalidTransition):
                        # the transition table refuses the change: the attempt stays recorded, the status
                        # and the lease stay, so the delivery is sent again once its lease ends
                        events.append(("error", "delivery.transition_refused", {**self._fields(claim),
                                                                                "error": str(moved)}))
                    elif not moved:
                        events.extend(self._stale(claim))
                    elif event is not None:
                        events.append(event)
                    if claim.config_id in concerned and not isinstance(result, str):
                        health = await self._account(claim.config_id, result.ok, claim.attempt_id)
                        if health:
                            changed.add(claim.config_id)
                        events.extend(health)
                if self._chain and self._running and not self._stopping:
                    chained += await self._claim_next_heads(
                        [f.claim.queue for (f, _), moved in zip(plans, done) if moved is True and f.ordered
                         and (f.status is Status.DISPATCHED or (f.status is Status.FAILED and not f.block))],
                        changed)
                if self._commit_claims and self._running and not self._stopping:
                    await self._refill(chained, changed)
        except Exception as exc:
            self._give_back(chained)  # rolled back with the group commit: never sent
            self._wake.set()  # the room its attempts left is the loop's to fill again
            if storage_error(exc) is None:
                raise
            # rolled back: the results wait in memory (their deliveries keep their leases) and are
            # stored once the database takes writes again; a crash meanwhile re-sends them
            self.log.error("store.unavailable", error=str(storage_error(exc)), pending_results=len(batch),
                           retry_in=STORAGE_RETRY)
            self._results = batch + self._results
            self._urgent = any(snap.ordering.ordered for _, snap, _ in self._results)
            self._schedule_flush(STORAGE_RETRY)
            self._stale_windows.update(attempted)  # they hold outcomes that will be fed again
            return
        finally:
            self._accounted(attempted.keys())
        if self._stopping:
            # stopped (or crashed) while this commit was being stored: its claims are left like any
            # attempt a stop abandons (their leases end, or the stop releases this engine's own)
            self._give_back(chained)
        else:
            self._chaining -= len(chained)
            self._start_attempts(chained)
        self._emit(events)
        self._recorded = True
        if not self._replaced(batch, chained, changed):
            self._wake.set()

    def _replaced(self, batch: list[tuple[Claim, Snapshot, AttemptResult | str]], chained: list[Claim],
                  changed: set[str]) -> bool:
        """Whether this group commit left nothing for a dispatch cycle to do, so it need not wake the loop:
        every attempt it recorded freed an ordered queue whose next head it claimed (so each
        configuration's room, and the dispatcher's, is what the last cycle saw), no endpoint's health
        changed, and claiming other due work is not the commit's (``commit_claims``, the real clock's).
        What the last cycle planned for a moment (a retry due, a lease ending) stays planned, and a new
        activity wakes the loop itself. A simulation's ordered backlog then runs from commit to commit,
        without a cycle of queries (ended leases, paused configurations, the next wake-up) after each."""
        if changed or self._commit_claims or self._stopping or len(chained) != len(batch):
            return False
        return Counter(c.config_id for c in chained) == Counter(claim.config_id for claim, _, _ in batch)

    async def _refill(self, held: list[Claim], changed: set[str]) -> None:
        """In the group commit, claim the due work a dispatch cycle would claim now for the room the
        finished attempts left (see :meth:`commit_claims`), into ``held``. Configurations that are
        paused (left out by the due read: no round trip of their own), whose circuit is not closed (a
        probe is the cycle's to take) or whose endpoint health changed in this commit are left to the
        cycle that follows. The limits of the configurations this commit already read are not read
        again."""
        blocked = changed | {cid for cid, st in self._health.items() if st.circuit is not Circuit.CLOSED}
        limits = {cid: await self._limit_of(cid, cfg) for cid, cfg in list(self._batch_configs.items())}
        await self._fill(self.clock.now(), blocked, held=held, limits=limits)

    def _give_back(self, claims: list[Claim]) -> None:
        """Claims of a group commit whose attempts will not start here: their counts are released."""
        self._chaining -= len(claims)
        for claim in claims:
            self._count(claim.config_id, -1)

    async def _claim_next_heads(self, queues: list[str], changed: set[str]) -> list[Claim]:
        """In the group commit that freed these ordered queues, claim each one's next head that a
        dispatch cycle would claim now: due, its configuration active, its circuit closed, room for it
        (see :meth:`pace`). Their attempts start once the commit is stored. Configurations whose
        endpoint health changed in this commit (``changed``: a circuit closed by its probe, a streak
        that disabled it) are left to the next cycle, which comes after the change is announced."""
        now = self.clock.now()
        room = self._free()
        if room <= 0 or not queues:
            return []
        self._reserved += room
        try:
            leases: list[tuple[int, float]] = []
            # every head and its configuration read first, each kind together (a network database: one
            # wait each); what follows is what one look-up after the other decided
            heads = await self.store.queue_heads(list(dict.fromkeys(queues)), now)
            unread = [cid for cid in dict.fromkeys(h[1] for h in heads.values() if h is not None)
                      if cid not in self._batch_configs]
            self._batch_configs.update(await self.store.configs_by_id(unread))
            with self._planning() as planned:
                for head in heads.values():
                    if len(leases) >= room:
                        break
                    if head is None:
                        continue
                    did, cid, version = head
                    cfg, st = await self._batch_config(cid), self._health.get(cid)
                    if (cfg is None or not cfg.active or cid in changed
                            or (st is not None and st.circuit is not Circuit.CLOSED)):
                        continue  # paused, deleted, or its endpoint's health decides: the cycle's gate handles it
                    snap = (await self._prepared(cid, version)).snapshot
                    if self._per_config[cid] >= snap.ordering.concurrency:
                        continue
                    self._count(cid, 1)
                    planned[cid] += 1
                    leases.append((did, self._lease_until(snap, now)))
                if not leases:
                    return []
                claims = await self._claim_planned(leases, planned, now, uncommitted=True)
            self._chaining += len(claims)
            return claims
        finally:
            self._reserved -= room

    def _emit(self, events: list[tuple[str, str, dict[str, Any]]]) -> None:
        for level, name, fields in events:
            if name == "_notify":
                self._start_notify(**fields)
                continue
            getattr(self.log, level)(name, **fields)

    # -- endpoint health ------------------------------------------------------------------

    def _accounted(self, config_ids: Iterable[str]) -> None:
        """A group commit no longer feeds these configurations' breaker windows: those a shared health
        read found stale meanwhile are emptied now, to be rebuilt from the store at their next outcome."""
        for cid in config_ids:
            self._accounting[cid] -= 1
            if self._accounting[cid] > 0:
                continue
            del self._accounting[cid]
            if cid in self._stale_windows:
                self._stale_windows.discard(cid)
                st = self._health.get(cid)
                if st is not None:
                    st.loaded_window = False
                    st.window.clear()

    async def _batch_config(self, config_id: str) -> Configuration | None:
        """The configuration as it is now: one look-up per configuration and group commit, not per attempt."""
        if config_id not in self._batch_configs:
            self._batch_configs[config_id] = await self.store.config(config_id)
        return self._batch_configs[config_id]

    async def _endpoint(self, config_id: str, attempt_id: int) -> tuple[Configuration, Snapshot, EndpointState] | None:
        """The configuration as it is now, its snapshot and its health state with the breaker's window
        loaded (rebuilt from the store the first time, minus attempt ``attempt_id``); None when no
        breaker, auto-disable or health state concerns it."""
        cfg = await self._batch_config(config_id)
        if cfg is None:
            return None
        snap = (await self._prepared(config_id, cfg.version)).snapshot
        cb = snap.circuit_breaker
        if cb is None and snap.auto_disable is None and config_id not in self._health:
            return None
        st = self._health.setdefault(config_id, EndpointState())
        if cb is not None and not st.loaded_window:
            # rebuild the sliding window from the store (e.g. after a restart), minus this very attempt;
            # replaced, not added to: a shared health read may have emptied it while the store answered
            rows = await self.store.recent_outcomes(config_id, self.clock.now() - cb.window, exclude_attempt=attempt_id)
            st.window.clear()
            st.window.extend(rows)
            st.loaded_window = True
        return cfg, snap, st

    async def _account(self, config_id: str, ok: bool, attempt_id: int) -> list[tuple[str, str, dict[str, Any]]]:
        """Feed one outcome to the circuit breaker / auto-disable of the configuration as it is now."""
        got = await self._endpoint(config_id, attempt_id)
        if got is None:
            return []
        cfg, snap, st = got
        now = self.clock.now()
        streak = await self.store.count_outcome(config_id, ok=ok, now=now)  # atomic: all workers' outcomes add up
        st.consecutive_failures, st.failing_since = streak.consecutive_failures, streak.failing_since
        changes = record(st, ok, now, snap.circuit_breaker, snap.auto_disable, config_id)
        if not cfg.active:
            changes = [c for c in changes if c.kind != "config.auto_disabled"]
        return await self._apply_changes(changes, now)

    async def reset_streak(self, config_id: str) -> None:
        """Forget the failure streak (not the circuit) of a configuration, e.g. when it is re-enabled."""
        st = self._health.get(config_id)
        if st is not None:
            streak = await self.store.count_outcome(config_id, ok=True, now=self.clock.now())
            st.consecutive_failures, st.failing_since = streak.consecutive_failures, streak.failing_since

    async def _store_changes(self, changes: list[Change], now: float) -> list[Change]:
        """Store each circuit move and auto-disable as a conditional write; return the changes this
        worker made. A change another worker stored first (it saw the same failures) is dropped: the
        stored circuit is adopted as it is, and the cluster records and notifies the change once."""
        made: list[Change] = []
        for ch in changes:
            if ch.source is not None:
                st = self._health[ch.config_id]
                stored = await self.store.move_circuit(ch.config_id, source=ch.source, circuit=st.circuit,
                                                       circuit_until=st.circuit_until, now=now)
                if stored is not None:
                    st.circuit = ch.source  # the view before this change, so that the stored one replaces it
                    self._adopt(stored, now)
                    continue
            elif ch.kind == "config.auto_disabled" and not await self.store.pause_if_active(ch.config_id, now,
                                                                                            ch.message):
                continue
            made.append(ch)
        return made

    async def _apply_changes(self, changes: list[Change], now: float) -> list[tuple[str, str, dict[str, Any]]]:
        """Persist circuit states and notifications (inside the caller's transaction); return events to
        emit. A cool-down's end (half-open) is not stored: it follows from the time, and the store
        records the half-open state when a worker takes the probe (``take_probe``)."""
        events: list[tuple[str, str, dict[str, Any]]] = []
        for ch in await self._store_changes(changes, now):
            fields = {"config_id": ch.config_id, "reason": ch.message, **ch.fields}
            if "until" in fields and fields["until"] is not None:
                fields["until"] = iso(fields["until"])
            level = "warning" if ch.kind in ("circuit.opened", "config.auto_disabled") else "info"
            if ch.kind != "circuit.half_open":
                nid = await self.store.add_notification(at=now, kind=ch.kind, config_id=ch.config_id,
                                                        message=ch.message)
                fields["notification_id"] = nid
            if ch.kind == "config.auto_disabled":
                cached = self._batch_configs.get(ch.config_id)
                if cached is not None:
                    self._batch_configs[ch.config_id] = replace(cached, active=False)
                cfg = await self.store.config(ch.config_id)
                ad = (await self._prepared(ch.config_id, cfg.version)).snapshot.auto_disable if cfg else None
                if ad is not None and ad.notify_url:
                    events.append(("info", "_notify", {
                        "nid": fields["notification_id"], "url": ad.notify_url, "secret": ad.notify_secret,
                        "payload": {"type": ch.kind, "config_id": ch.config_id, "reason": ch.message,
                                    "at": iso(now)}}))
            events.insert(0, (level, ch.kind, fields))
        return events

    def _start_notify(self, *, nid: int, url: str, secret: str | None, payload: dict[str, Any]) -> None:
        task = asyncio.create_task(self._notify(nid, url, secret, payload), name=f"notify-{nid}")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_done)

    def _side_done(self, task: asyncio.Task[None]) -> None:
        self._side_tasks.discard(task)
        self._wake.set()

    async def _notify(self, nid: int, url: str, secret: str | None, payload: dict[str, Any]) -> None:
        """The operator webhook: sent by the engine itself, signed like any delivery."""
        req = Request(url=url, body=encode_body(payload), webhook_id=f"ntf_{nid}", timestamp=int(self.clock.now()),
                      auth=Auth(), signing_secret=secret, connect_timeout=5.0, total_timeout=10.0)
        out = await self.sender.send(req)
        await self.store.set_notification_delivery(nid, out.describe())
        self.log.info("notification.sent", notification_id=nid, outcome=out.describe())

    async def _body(self, claim: Claim, prep: Prepared, activities: ClaimedActivities | None) -> bytes:
        activity = claim.activity
        if activity is None and activities is not None and claim.activity_id is not None:
            activity = await activities.get(claim.activity_id)  # the claim's first attempt reads them all
            if prep.mapper is None:
                return activity.body()
        return await request_body(self.store, prep, activity_id=claim.activity_id, batch_id=claim.batch_id,
                                  activity=activity)

    def _fields(self, claim: Claim) -> dict[str, Any]:
        what = {"activity_id": claim.activity_id} if claim.batch_id is None else {"batch_id": claim.batch_id}
        return {"delivery_id": claim.delivery_id, "queue": claim.queue, "attempt": claim.number, **what,
                "config_id": claim.config_id}

    def _plan(self, claim: Claim, snap: Snapshot, result: Outcome | str, *,
              quiet: bool = False) -> tuple[Finish, tuple[str, str, dict] | None]:
        """Where one finished attempt sends its delivery (for the store), and the event to log once
        the store moved it (None when ``quiet``: the log drops it unread, so a delivered attempt
        builds none). A payload the mapping rejects (``result`` is its message) cannot be fixed by
        resending: FAILED at once, reason mapping_error."""
        now = self.clock.now()
        ordered = snap.ordering.ordered
        block = snap.ordering.on_exhausted == "block"
        if isinstance(result, str):
            res = AttemptResult(finished_at=now, outcome="MAPPING_ERROR", error=result, latency=0.0)
            return (Finish(claim=claim, result=res, status=Status.FAILED, reason="mapping_error", error=result,
                           ordered=ordered, block=block),
                    ("error", "delivery.failed", {**self._fields(claim), "status": Status.FAILED,
                                                  "reason": "mapping_error", "error": result}))
        out = result
        if out.kind is OutcomeKind.SUCCESS and quiet:
            # the usual case, once per attempt: both records made from their fields in order (see
            # store._claim), AttemptResult (finished_at, outcome, status_code, error, retry_after, latency,
            # excerpt) and Finish (claim, result, status, next_at, error, reason, ordered, block)
            res = _NEW(AttemptResult, (now, "SUCCESS", out.status, out.error, out.retry_after, out.latency,
                                       out.excerpt))
            return _NEW(Finish, (claim, res, Status.DISPATCHED, None, "", "", ordered, False)), None
        res = AttemptResult(finished_at=now, outcome=out.kind.value, status_code=out.status,
                            error=out.error, retry_after=out.retry_after, latency=out.latency,
                            excerpt=out.excerpt)
        fields = {**self._fields(claim), "code": out.status, "outcome": out.kind.value, "latency": out.latency}
        if out.kind is OutcomeKind.SUCCESS:
            return (Finish(claim=claim, result=res, status=Status.DISPATCHED, ordered=ordered),
                    ("info", "delivery.dispatched", {**fields, "status": Status.DISPATCHED}))
        decision = snap.retry.decide(attempt=claim.budget_attempts + 1, now=now,
                                     budget_started_at=claim.budget_started_at, retry_after=out.retry_after,
                                     status=out.status, delivery_key=claim.webhook_id)
        error = out.describe()
        if decision.retry:
            assert decision.at is not None
            return (Finish(claim=claim, result=res, status=Status.RETRYING, next_at=decision.at, error=error,
                           ordered=ordered),
                    ("warning", "delivery.retrying", {
                        **fields, "status": Status.RETRYING, "error": out.error, "retry_after": out.retry_after,
                        "next_attempt_at": iso(decision.at), "delay": decision.delay}))
        return (Finish(claim=claim, result=res, status=Status.FAILED, reason=decision.kind,
                       error=f"{error}; {decision.reason}", ordered=ordered, block=block),
                ("error", "delivery.failed", {
                    **fields, "status": Status.FAILED, "reason": decision.kind, "error": out.error,
                    "detail": decision.reason, "queue_blocked": bool(ordered and block)}))

    def _stale(self, claim: Claim) -> list[tuple[str, str, dict]]:
        return [("warning", "attempt.stale", {
            **self._fields(claim),
            "reason": "lease lost before the attempt finished; nothing recorded (the attempt was interrupted and the"
                      " delivery went again)"})]
