"""Hypothesis drives the real engine (real SQLite file, real HTTP on 127.0.0.1, virtual clock)
through activity creation, endpoint up/down/slow, time passing, force retries and crashes,
and checks the invariants of DESIGN.md after every step."""
from __future__ import annotations

import asyncio
import os
import tempfile
from collections import defaultdict

from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dispatchsim.engine import Engine
from dispatchsim.engine.clock import new_virtual_loop
from dispatchsim.engine.policy import retry_policy_from

MODES = ("up", "down", "slow")
TOTAL_TIMEOUT = 5.0
KEYS = ("A", "B", "C")


class Endpoint:
    """A receiver whose mode the machine switches; it records acknowledgements and overlaps."""

    def __init__(self, now):
        self.now = now
        self.mode = "up"
        self.acks: list[tuple[float, str]] = []  # (time, webhook-id), only 2xx really sent
        self.active: dict[str, int] = defaultdict(int)
        self.max_overlap = 0
        self.port = 0

    async def start(self):
        app = web.Application()
        app.router.add_route("*", "/hooks", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks"

    async def handle(self, request):
        if request.method == "GET":
            return web.Response(text="ok")
        await request.read()
        wid = request.headers["webhook-id"]
        self.active[wid] += 1
        self.max_overlap = max(self.max_overlap, self.active[wid])
        try:
            if self.mode == "down":
                return web.Response(status=500)
            if self.mode == "slow":
                await asyncio.sleep(TOTAL_TIMEOUT * 3)  # the sender times out first
            self.acks.append((self.now(), wid))
            return web.Response(text="ok")
        finally:
            self.active[wid] -= 1


class DispatchMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "prop.db")
        self.runner = asyncio.Runner(loop_factory=new_virtual_loop)
        self.engine = self.run(Engine.open(self.path, virtual=True, seed=5))
        self.clock = self.engine.clock
        self.endpoints = {"crm": Endpoint(self.clock.now), "erp": Endpoint(self.clock.now)}
        for ep in self.endpoints.values():
            self.run(ep.start())
        self.retries = {"crm": retry_policy_from({"max_attempts": 4}), "erp": retry_policy_from({"max_attempts": 3})}
        self.run(self.setup())
        self.expected_deliveries = 0
        self.force_retried: set[int] = set()
        self.force_retry_log: list[tuple[int, float]] = []
        self.failed_before: set[int] = set()
        self.manual: set[int] = set()

    def run(self, coro):
        return self.runner.run(coro)

    async def setup(self):
        e = self.engine
        await e.add_tenant("acme")
        for name in self.endpoints:
            await e.add_provider(name)
        await e.add_config("acme", "crm", "SALESMAN", config_id="crm", endpoint_url=self.endpoints["crm"].url,
                           activate=True, retry={"max_attempts": 4}, timeouts={"connect": 2, "total": TOTAL_TIMEOUT},
                           ordering={"mode": "ordered", "on_exhausted": "skip"})
        await e.add_config("acme", "erp", "SALESMAN", config_id="erp", endpoint_url=self.endpoints["erp"].url,
                           activate=True, retry={"max_attempts": 3}, timeouts={"connect": 2, "total": TOTAL_TIMEOUT},
                           ordering={"mode": "partitioned", "partition_key": "commerceExternalId",
                                     "on_exhausted": "block"})

    def teardown(self):
        try:
            self.run(self.engine.close())
        except Exception:
            pass
        for ep in self.endpoints.values():
            self.run(ep.runner.cleanup())
        self.runner.close()
        self.tmp.cleanup()

    # -- rules --------------------------------------------------------------------------

    @rule(key=st.sampled_from(KEYS), n=st.integers(1, 3))
    def create_activities(self, key, n):
        for _ in range(n):
            self.run(self.engine.create_activity("acme", {"channel": "SALESMAN", "commerceExternalId": key}))
            self.expected_deliveries += 2

    @rule(name=st.sampled_from(("crm", "erp")), mode=st.sampled_from(MODES))
    def switch_endpoint(self, name, mode):
        self.endpoints[name].mode = mode

    @rule(seconds=st.sampled_from((1, 7, 60, 300, 1800, 3600)))
    def advance(self, seconds):
        self.run(self.engine.run_for(seconds))

    @precondition(lambda self: self.engine.counts()["FAILED"] > 0)
    @rule(data=st.data())
    def force_retry(self, data):
        failed = [d.id for d in self.engine.store.deliveries(status="FAILED")]
        did = data.draw(st.sampled_from(failed))
        self.run(self.engine.force_retry(did))
        self.force_retried.add(did)
        self.manual.add(did)
        self.force_retry_log.append((did, self.clock.now()))

    @rule()
    def crash_and_restart(self):
        self.run(self.engine.crash())
        self.engine = self.run(Engine.open(self.path, clock=self.clock, seed=5))

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def nothing_is_lost(self):
        assert len(self.engine.store.deliveries()) == self.expected_deliveries

    @invariant()
    def never_two_attempts_of_one_delivery_at_once(self):
        for ep in self.endpoints.values():
            assert ep.max_overlap <= 1

    @invariant()
    def at_most_one_in_flight_per_ordered_queue(self):
        rows = self.engine.store.conn.execute(
            "SELECT queue, COUNT(*) AS n FROM deliveries WHERE lease_until IS NOT NULL GROUP BY queue").fetchall()
        assert all(r["n"] <= 1 for r in rows)

    @invariant()
    def each_ordered_queue_has_one_head_the_earliest_waiting(self):
        rows = self.engine.store.conn.execute(
            "SELECT queue, GROUP_CONCAT(id) AS ids FROM deliveries WHERE eligible = 1 GROUP BY queue").fetchall()
        for r in rows:
            ids = [int(x) for x in r["ids"].split(",")]
            assert len(ids) == 1, f"queue {r['queue']} has several heads {ids}"
            first = self.engine.store.conn.execute(
                "SELECT MIN(id) FROM deliveries WHERE queue = ? AND (status IN ('READY', 'RETRYING')"
                " OR (status = 'FAILED' AND holds = 1))", (r["queue"],)).fetchone()[0]
            in_flight = self.engine.store.conn.execute(
                "SELECT lease_until FROM deliveries WHERE id = ?", (ids[0],)).fetchone()[0]
            assert ids[0] == first or in_flight is not None, (r["queue"], ids, first)

    @invariant()
    def nothing_leaves_failed_without_manual_action(self):
        now_failed = {d.id for d in self.engine.store.deliveries(status="FAILED")}
        left = self.failed_before - now_failed
        assert left <= self.manual, f"left FAILED without force retry: {left - self.manual}"
        self.failed_before = now_failed
        self.manual = set()

    @invariant()
    def successes_follow_creation_order_per_queue(self):
        store = self.engine.store
        by_wid = {d.webhook_id: d for d in store.deliveries()}
        for ep in self.endpoints.values():
            seen: set[str] = set()
            last_in_queue: dict[str, int] = {}
            for _, wid in ep.acks:
                if wid in seen:
                    continue  # a duplicate (crash mid-flight) says nothing new about order
                seen.add(wid)
                d = by_wid[wid]
                if d.id in self.force_retried:
                    continue
                prev = last_in_queue.get(d.queue, 0)
                assert d.id > prev, f"queue {d.queue}: delivery {d.id} acknowledged after {prev}"
                last_in_queue[d.queue] = d.id

    @invariant()
    def dispatched_means_acknowledged(self):
        acked = {wid for ep in self.endpoints.values() for _, wid in ep.acks}
        for d in self.engine.store.deliveries(status="DISPATCHED"):
            assert d.webhook_id in acked

    @invariant()
    def attempt_times_follow_the_policy_exactly(self):
        store = self.engine.store
        retried_at = defaultdict(list)
        for did, t in self.force_retry_log:
            retried_at[did].append(t)
        queue_of = {d.id: d.queue for d in store.deliveries()}
        queue_retries = defaultdict(list)  # force retries of earlier deliveries take the head back
        for did, t in self.force_retry_log:
            queue_retries[queue_of[did]].append((did, t))
        for d in store.deliveries():
            policy = self.retries[d.config_id]
            k = 0
            prev_next = None
            prev_end = None
            pending_retries = sorted(retried_at[d.id])
            for a in store.attempts(d.id):
                if pending_retries and pending_retries[0] <= a.started_at:
                    pending_retries.pop(0)  # a force retry happened before this attempt: fresh budget
                    k, prev_next = 0, None
                if a.outcome is None or a.outcome == "INTERRUPTED":
                    prev_next = None
                    continue
                if prev_next is not None:
                    overtaken = any(did < d.id and prev_end <= t <= a.started_at
                                    for did, t in queue_retries[d.queue])
                    if overtaken:  # it waited behind a force-retried earlier delivery: later, never earlier
                        assert a.started_at >= prev_next - 1e-3, (d.id, a, prev_next)
                    else:
                        assert abs(a.started_at - prev_next) < 1e-3, (d.id, a, prev_next)
                k += 1
                if a.next_attempt_at is not None:
                    assert abs(a.next_attempt_at - a.finished_at - policy.delay_for(k)) < 1e-3
                prev_next = a.next_attempt_at
                prev_end = a.finished_at

    @invariant()
    def no_duplicates_without_a_crash(self):
        store = self.engine.store
        interrupted = {r["delivery_id"] for r in store.conn.execute(
            "SELECT delivery_id FROM attempts WHERE outcome = 'INTERRUPTED'")}
        by_wid = {d.webhook_id: d.id for d in store.deliveries()}
        for ep in self.endpoints.values():
            counts = defaultdict(int)
            for _, wid in ep.acks:
                counts[wid] += 1
            for wid, n in counts.items():
                if n > 1:
                    assert by_wid[wid] in interrupted or by_wid[wid] in self.force_retried

    @rule()
    def recover_and_drain(self):
        """Once the endpoints recover, everything ends DISPATCHED or FAILED (or waits behind a blocked head)."""
        for ep in self.endpoints.values():
            ep.mode = "up"
        summary = self.run(self.engine.run_until_idle(max_time=48 * 3600))
        assert summary.idle
        store = self.engine.store
        blocked = {d.queue: d.id for d in store.deliveries(status="FAILED") if d.holds}
        for d in store.deliveries():
            if d.status in ("READY", "RETRYING"):
                assert d.queue in blocked and blocked[d.queue] < d.id, d
        assert not store.conn.execute(
            "SELECT 1 FROM deliveries WHERE status = 'RETRYING' AND eligible = 1 AND next_attempt_at < ?",
            (self.clock.now(),)).fetchone()


DispatchMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DISPATCHSIM_PROPERTY_EXAMPLES", "30")), stateful_step_count=25,
    deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestDispatchProperties = DispatchMachine.TestCase
