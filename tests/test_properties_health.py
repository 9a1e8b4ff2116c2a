"""Properties of endpoint health and recovery (issue 9), checked by hypothesis against the real engine:
a real SQLite store, real HTTP to an aiohttp receiver on 127.0.0.1, the virtual clock.

Each example builds a fresh engine on its own virtual-time loop (``run_virtual``), so hours of
backoff, cool-downs and pauses take milliseconds.
"""
from __future__ import annotations

import asyncio
import os
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatchsim.engine import Engine, run_virtual
from dispatchsim.engine.policy import retry_policy_from
from dispatchsim.testing import invariants, simulate
from dispatchsim.testing import strategies as ds

from support import Receiver

EXAMPLES = int(os.environ.get("DISPATCHSIM_HEALTH_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
#: a drain that has not finished after this much virtual time is looping forever
NEVER = 10 * 365 * 86400.0
ACT = {"channel": "SALESMAN"}


def _virtual(main):
    """Run ``main(engine)`` on a fresh virtual-time loop; the engine is closed even when it fails."""
    async def wrapper():
        eng = await _engine()
        try:
            await main(eng)
        finally:
            await eng.close()

    run_virtual(wrapper())


async def _engine():
    eng = await Engine.open(":memory:", virtual=True, seed=3)
    await eng.add_tenant("acme")
    await eng.add_provider("crm")
    events: list[tuple[float, dict]] = []
    eng.subscribe(lambda e: events.append((eng.clock.now(), e)))
    eng.events = events  # type: ignore[attr-defined]
    return eng


async def _drain(eng: Engine, max_time: float | None = None):
    """run_until_idle, failing (instead of hanging) if it never returns."""
    return await asyncio.wait_for(eng.run_until_idle(max_time=max_time), timeout=NEVER)


async def _acks_in_order(eng: Engine, receiver: Receiver, ok=lambda hit: True) -> None:
    """Per queue, the first acknowledgement of each webhook-id comes in creation (id) order."""
    by_wid = {d.webhook_id: d for d in await eng.store.deliveries()}
    last: dict[str, int] = {}
    seen: set[str] = set()
    for hit in receiver.posts():
        if not ok(hit) or hit.webhook_id in seen:
            continue
        seen.add(hit.webhook_id)
        d = by_wid[hit.webhook_id]
        assert d.id > last.get(d.queue, 0), f"queue {d.queue}: {d.id} acknowledged after {last}"
        last[d.queue] = d.id


# -- strategies (the public ones, from dispatchsim.testing.strategies) --------------------------

def outages(horizon: int = 6 * 3600):
    """Disjoint down windows [from, to) in seconds after the start, all over before ``horizon``."""
    return ds.outage_windows(horizon=horizon, max_windows=3)


def _down(windows, t):
    return any(a <= t < b for a, b in windows)


# -- 1. a finite budget ends in FAILED after exactly the budgeted attempts ---------------------

@SETTINGS
@given(policy=ds.retry_policies(finite=True, permanent=False), n=st.integers(1, 4),
       mode=st.sampled_from(["ordered", "none"]), permanent=st.booleans())
def test_always_403_fails_every_delivery_after_exactly_its_budget(policy, n, mode, permanent):
    if isinstance(policy, str):
        policy = {"preset": policy}
    if permanent:
        policy = {**policy, "permanent_statuses": [403]}
    budget = 1 if permanent else retry_policy_from(policy).budget
    assert budget is not None

    async def main(eng):
        async with Receiver(eng.clock.now) as r:
            r.respond = lambda hit, k: (403, {}, 0)
            await eng.add_config("acme", "crm", "SALESMAN", config_id="c", endpoint_url=r.url, activate=True,
                                 retry=policy, ordering={"mode": mode, "on_exhausted": "skip"})
            for _ in range(n):
                await eng.create_activity("acme", ACT)
            summary = await _drain(eng)  # no max_time: a finite budget must end by itself
            assert summary.idle
            ds = await eng.store.deliveries()
            assert [d.status for d in ds] == ["FAILED"] * n
            assert [d.attempts for d in ds] == [budget] * n
            assert {d.failed_reason for d in ds} == {"permanent_status" if permanent else "exhausted"}
            per_wid = defaultdict(int)
            for hit in r.posts():
                per_wid[hit.webhook_id] += 1
            assert sorted(per_wid.values()) == [budget] * n

    _virtual(main)


# -- 2. retries never silently stop ---------------------------------------------------------

@SETTINGS
@given(windows=outages(), policy=st.one_of(st.just("reteno"), st.just("svix"), ds.retry_policies(finite=True)),
       activities=ds.activity_streams(max_activities=8, horizon=4 * 3600, partitions=("C0", "C1")),
       ordering=ds.ordering_policies(), breaker=ds.circuit_breakers())
def test_no_retry_is_left_overdue_once_drained(windows, policy, activities, ordering, breaker):
    config = {"retry": policy, "ordering": {**ordering, "on_exhausted": "skip"}, "circuit_breaker": breaker}
    history = simulate(configuration=config, endpoint=ds.down_between(windows), activities=activities)
    # drained before the end, nothing left overdue, and — the endpoint recovered — what is not
    # DISPATCHED was FAILED by its policy
    invariants.check(history, invariants.all_settled, invariants.no_overdue_retry, invariants.failed_only_by_policy,
                     invariants.nothing_lost, invariants.nothing_sent_while_circuit_open)
    for d in history.deliveries:
        assert d.status in ("DISPATCHED", "FAILED"), d
        if d.status == "FAILED":
            assert d.failed_reason == "exhausted"


# -- 3. an open circuit sends nothing; order holds across open / half-open / closed -----------

@SETTINGS
@given(windows=outages(horizon=3 * 3600), n=st.integers(2, 8),
       mode=st.sampled_from(["ordered", "partitioned", "none"]),
       window=st.sampled_from([60.0, 600.0]), rate=st.sampled_from([0.5, 1.0]), min_requests=st.integers(1, 4),
       cooldown=st.sampled_from([30.0, 120.0, 900.0]), latency=st.sampled_from([0.0, 0.0, 2.0]),
       paced=st.booleans())
def test_open_circuit_receives_nothing_and_order_holds(windows, n, mode, window, rate, min_requests, cooldown,
                                                         latency, paced):
    ordering = {"mode": mode, "on_exhausted": "skip", "concurrency": 4}
    if mode == "partitioned":
        ordering["partition_key"] = "commerceExternalId"
    windows = [(0.0, 600.0)] + [(a + 600, b + 600) for a, b in windows]  # start with an outage

    async def main(eng):
        t0 = eng.clock.now()
        if paced:  # serve mode: a group commit also claims the next head of the queues it frees
            eng.dispatcher.pace(interval=0.005, chunk=25)
        async with Receiver(eng.clock.now) as r:
            r.respond = lambda hit, k: ((503, {}, latency) if _down(windows, hit.at - t0) else (200, {}, latency))
            claim = eng.store.claim

            async def sending(leases, **kw):  # each claimed attempt is one request on its way to the endpoint
                claims = await claim(leases, **kw)
                eng.events.extend((eng.clock.now(), {"event": "sent"}) for _ in claims)
                return claims

            eng.store.claim = sending
            await eng.add_config("acme", "crm", "SALESMAN", config_id="c", endpoint_url=r.url, activate=True,
                                 retry="reteno", ordering=ordering, timeouts={"connect": 5, "total": 30},
                                 circuit_breaker={"window": window, "failure_rate": rate,
                                                  "min_requests": min_requests, "cooldown": cooldown})
            for i in range(n):
                await eng.create_activity("acme", {**ACT, "commerceExternalId": f"C{i % 3}"})
            summary = await _drain(eng, max_time=30 * 86400)
            assert summary.idle
            assert [d.status for d in await eng.store.deliveries()] == ["DISPATCHED"] * n

            # open intervals from the notifications: opened at t, half-open at t + cool-down
            notes = await eng.notifications("c")
            opened = [parse(x["at"]) for x in notes if x["kind"] == "circuit.opened"]
            log = [(t, e["event"]) for t, e in eng.events if e["event"].startswith("circuit.")]
            assert [e for _, e in log if e != "circuit.half_open"] == [x["kind"] for x in notes]
            half_opens = [t for t, e in log if e == "circuit.half_open"]
            for t in opened:
                assert any(abs(h - (t + cooldown)) < 1e-6 for h in half_opens), (t, half_opens)
            arrivals = [h.at for h in r.posts()]
            for t in opened:
                inside = [a - t0 for a in arrivals if t + 1e-6 < a < t + cooldown - 1e-6]
                assert not inside, f"circuit open {t - t0:g}s..{t + cooldown - t0:g}s, yet requests at {inside}"
            # the same on the exact sequence of events (requests sent interleaved with the log; a request
            # already on its way when the circuit opens is not one sent while open): nothing is sent
            # between opened and half_open, and exactly one probe between half_open and what follows
            state, sent = "closed", 0
            for _, e in eng.events:
                name = e["event"]
                if name == "sent":
                    assert state != "open", "a request was sent to the endpoint while its circuit was open"
                    sent += 1
                    assert state != "half_open" or sent <= 1, "more than one probe while half-open"
                elif name in ("circuit.opened", "circuit.half_open", "circuit.closed"):
                    assert state != "half_open" or sent == 1, "half-open ended without a probe"
                    state, sent = name.split(".")[1].replace("opened", "open"), 0
            assert state == "closed"
            if mode != "none":
                await _acks_in_order(eng, r, ok=lambda hit: not _down(windows, hit.at - t0))

    _virtual(main)


def parse(text):
    from dispatchsim.engine.clock import parse_iso

    return parse_iso(text)


# -- 4. a disabled configuration receives nothing and loses nothing ---------------------------

@SETTINGS
@given(n=st.integers(1, 6), how=st.sampled_from(["manual", "auto"]), after_failures=st.integers(1, 4),
       pause=st.sampled_from([60.0, 3600.0, 86400.0, 5 * 86400.0]), mode=st.sampled_from(["ordered", "partitioned"]),
       created_while_paused=st.integers(0, 3), first_run=st.sampled_from([0.0, 30.0, 200.0]), paced=st.booleans())
def test_disabled_configuration_receives_nothing_loses_nothing_then_delivers_in_order(
        n, how, after_failures, pause, mode, created_while_paused, first_run, paced):
    ordering = {"mode": mode}
    if mode == "partitioned":
        ordering["partition_key"] = "commerceExternalId"
    fields = {"retry": "reteno", "ordering": ordering}
    if how == "auto":
        fields["auto_disable"] = {"after_failures": after_failures}

    async def main(eng):
        if paced:
            eng.dispatcher.pace(interval=0.005, chunk=25)
        async with Receiver(eng.clock.now) as r:
            healthy = False
            r.respond = lambda hit, k: ((200, {}, 0) if healthy else (500, {}, 0))
            await eng.add_config("acme", "crm", "SALESMAN", config_id="c", endpoint_url=r.url, activate=True,
                                 **fields)
            for i in range(n):
                await eng.create_activity("acme", {**ACT, "commerceExternalId": f"C{i % 2}"})
            if how == "auto":
                # idle once paused (a paused configuration is not pending), long before 30 days
                summary = await _drain(eng, max_time=30 * 86400)
                assert summary.idle
                # the attempt that disabled it, plus those of other queues already on their way
                queues = min(n, 2) if mode == "partitioned" else 1
                assert after_failures <= len(r.posts()) <= after_failures + queues - 1
                since = parse((await eng.config_view("c"))["inactive_since"])
                assert all(h.at <= since for h in r.posts())
            else:
                await eng.run_for(first_run)
                while eng.dispatcher.in_flight:
                    await asyncio.sleep(0.001)
                await eng.deactivate("c", reason="maintenance")
            view = await eng.config_view("c")
            assert view["active"] is False and view["inactive_reason"]
            before = {d.id: (d.status, d.attempts) for d in await eng.store.deliveries()}
            sent = len(r.posts())
            assert all(s in ("READY", "RETRYING") for s, _ in before.values())

            await eng.run_for(pause / 2)
            for _ in range(created_while_paused):  # an inactive configuration gets no new deliveries
                await eng.create_activity("acme", ACT)
            healthy = True  # even a healthy endpoint hears nothing while the configuration is inactive
            summary = await _drain(eng, max_time=pause / 2)
            assert summary.idle
            assert len(r.posts()) == sent, "a disabled configuration received requests"
            after = {d.id: (d.status, d.attempts) for d in await eng.store.deliveries()}
            assert after == before, "waiting while disabled changed deliveries"

            await eng.activate("c")
            summary = await _drain(eng)
            assert summary.idle
            ds = await eng.store.deliveries()
            assert len(ds) == n and [d.status for d in ds] == ["DISPATCHED"] * n
            resumed = r.posts()[sent:]
            assert len(resumed) == n  # after re-enable each goes out once, acknowledged
            await _acks_in_order(eng, r, ok=lambda hit: any(hit is x for x in resumed))

    _virtual(main)
