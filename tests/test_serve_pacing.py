"""Serve-mode latency measures: dispatcher pacing, WAL checkpoints off the event loop, their config keys."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dispatchsim.engine.errors import ConfigError
from dispatchsim.server.serve import ServeOptions, load_serve_config
from dispatchsim.engine.store import Store
from support import Receiver

ACT = {"channel": "SALESMAN", "commerceExternalId": "COM-001", "commerceName": "Farmacia Central",
       "reason": {"code": "CHURN_RISK", "label": "Riesgo de fuga"}}


def _recorded_claims(engine, monkeypatch) -> list[int]:
    """How many deliveries each claim leased (it may be offered more, as stand-ins, with a limit)."""
    batches: list[int] = []
    claim = engine.store.claim

    async def recording_claim(leases, **kw):
        claims = await claim(leases, **kw)
        batches.append(len(claims))
        return claims

    monkeypatch.setattr(engine.store, "claim", recording_claim)
    return batches


async def test_paced_dispatcher_claims_in_bounded_chunks_and_delivers_everything(engine, receiver, setup_config,
                                                                                 monkeypatch):
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 50})
    engine.dispatcher.pace(interval=0.005, chunk=3)
    batches = _recorded_claims(engine, monkeypatch)
    made = [await engine.create_activity("acme", ACT) for _ in range(10)]
    summary = await engine.run_until_idle()
    assert summary.counts["DISPATCHED"] == 10 and summary.idle
    assert sorted(h.body["id"] for h in receiver.posts()) == sorted(a["id"] for a in made)
    assert batches == [3, 3, 3, 1]


async def test_a_claim_takes_stand_ins_for_candidates_another_worker_took(engine, receiver, setup_config,
                                                                            monkeypatch):
    """Two workers read the same earliest candidates; the one whose claim comes second leases the
    candidates after them in the same claim instead of coming back with fewer (issue 15: claims per
    delivery with two workers on PostgreSQL). Here "another worker" leases the first two candidates
    between this dispatcher's due read and its claim; its leases end later and they are sent then."""
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 50})
    engine.dispatcher.pace(interval=0.005, chunk=3)
    engine.dispatcher.share_health(every=1.0)  # several workers on one database: claims offer stand-ins
    batches = _recorded_claims(engine, monkeypatch)
    read, store = engine.store.due_candidates, engine.store
    taken: list[int] = []

    async def raced(now, limit, **kw):
        rows = await read(now, limit, **kw)
        if not taken:  # the first read only: the other worker claims its two earliest rows meanwhile
            taken.extend(c.delivery_id for c in await Store.claim(store, [(r[0], now + 60) for r in rows[:2]],
                                                                 token="other:1", now=now))
        return rows

    monkeypatch.setattr(engine.store, "due_candidates", raced)
    made = [await engine.create_activity("acme", ACT) for _ in range(10)]
    summary = await engine.run_until_idle()
    assert len(taken) == 2 and batches[0] == 3  # the room filled in one claim all the same
    assert summary.counts["DISPATCHED"] == 10
    assert sorted(h.body["id"] for h in receiver.posts()) == sorted(a["id"] for a in made)
    assert [len(await engine.store.attempts(d)) for d in taken] == [2, 2]  # the other worker's, then this one's


async def test_pacing_does_not_cap_an_ordered_queue(engine, receiver, setup_config):
    """The next head goes as soon as the previous one is recorded, not one head per cycle interval:
    with a 1 s interval (loop time is virtual here) 20 deliveries of one ordered queue take far less
    than the 20 s a cycle per head would."""
    await setup_config(receiver.url)  # ordered: the default
    engine.dispatcher.pace(interval=1.0, chunk=25)
    await engine.create_activities("acme", [dict(ACT) for _ in range(20)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    summary = await engine.run_until_idle()
    assert summary.counts["DISPATCHED"] == 20
    assert loop.time() - started < 2.0
    assert [h.body["id"] for h in receiver.posts()] == [d.activity_id for d in await engine.deliveries()]


async def test_unpaced_dispatcher_claims_all_due_at_once(engine, receiver, setup_config, monkeypatch):
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 50})
    batches = _recorded_claims(engine, monkeypatch)
    for _ in range(10):
        await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    assert batches == [10]


async def test_wal_checkpointer_takes_over_and_completes_the_wal(tmp_path):
    store = Store(tmp_path / "c.db")
    ck = store.wal_checkpointer()
    assert ck.enabled
    ck.take_over()
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    await store.add_tenant("acme", "acme", 0.0)
    for i in range(50):
        await store.add_provider(f"p{i}", f"p{i}", 0.0)
    log, done = await ck.run()
    assert log > 0 and done == log  # every frame copied: the next write restarts the WAL
    ck.close()
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    await store.close()


async def test_wal_checkpointer_is_off_for_memory_databases():
    store = Store(":memory:")
    ck = store.wal_checkpointer()
    ck.take_over()
    assert not ck.enabled and await ck.run() == (0, 0)
    ck.close()
    await store.close()


def test_pacing_keys_in_the_serve_config(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("dispatch_interval: 0.02\nclaim_chunk: 10\n")
    opts = load_serve_config(cfg, ServeOptions(db="x.db"))
    assert (opts.dispatch_interval, opts.claim_chunk) == (0.02, 10)
    for bad in ("dispatch_interval: fast\n", "dispatch_interval: 5\n", "claim_chunk: 0\n", "claim_chunk: 2.5\n"):
        cfg.write_text(bad)
        with pytest.raises(ConfigError):
            load_serve_config(cfg, ServeOptions(db="x.db"))


async def _run_traced(engine) -> tuple[Any, list[str]]:
    """``run_until_idle`` with every SQL statement the engine's connection ran meanwhile."""
    statements: list[str] = []
    engine.store.conn.set_trace_callback(statements.append)
    try:
        return await engine.run_until_idle(), statements
    finally:
        engine.store.conn.set_trace_callback(None)


@pytest.mark.parametrize("chain", [True, False])
async def test_a_group_commit_claims_the_next_head_of_an_ordered_queue(engine, receiver, setup_config, chain):
    """Serve mode: the transaction that records a head's success also claims the next head, so an ordered
    queue of n deliveries costs n + 1 write transactions instead of 2n (one claim and one group commit
    each); order and the one attempt in flight hold either way."""
    await setup_config(receiver.url)  # ordered: the default
    engine.dispatcher.pace(interval=0.005, chunk=25, chain=chain)
    made = await engine.create_activities("acme", [dict(ACT) for _ in range(12)])
    writes: list[str] = []
    engine.store.conn.set_trace_callback(lambda sql: writes.append(sql) if sql.startswith("BEGIN") else None)
    try:
        summary = await engine.run_until_idle()
    finally:
        engine.store.conn.set_trace_callback(None)
    assert summary.counts["DISPATCHED"] == 12 and summary.idle
    assert [h.body["id"] for h in receiver.posts()] == made
    assert len(writes) == (13 if chain else 24)
    attempts = await engine.store.attempts()
    assert all(a.started_at >= b.finished_at for b, a in zip(attempts, attempts[1:]))  # one in flight at a time


@pytest.mark.parametrize("on", [True, False])
async def test_a_group_commit_claims_the_due_work_its_room_allows(engine, receiver, setup_config, on):
    """A real-clock engine (switched on here on the virtual clock): the transaction that records a wave
    of finished attempts also claims the next wave, so each wave costs one write transaction instead of
    two; every delivery still goes exactly once and the configuration's concurrency holds."""
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 5})
    engine.dispatcher.commit_claims(on)
    made = [await engine.create_activity("acme", ACT) for _ in range(20)]
    summary, statements = await _run_traced(engine)
    assert summary.counts["DISPATCHED"] == 20 and summary.idle
    assert sorted(h.body["id"] for h in receiver.posts()) == sorted(a["id"] for a in made)
    transactions, current = [], []
    for sql in statements:
        current.append(sql)
        if sql == "COMMIT":
            transactions.append(" ".join(current))
            current = []
    # a claim reserves its attempts' ids (schema v10), a finish writes their rows
    claim_only = [t for t in transactions if "UPDATE sqlite_sequence" in t and "INSERT INTO attempts" not in t]
    both = [t for t in transactions if "UPDATE sqlite_sequence" in t and "INSERT INTO attempts" in t]
    if on:
        assert len(claim_only) == 1 and len(both) >= 3  # the first wave's claim, then claims inside group commits
    else:
        assert len(claim_only) >= 4 and both == []
    attempts = await engine.store.attempts()
    assert len(attempts) == 20
    starts = sorted((a.started_at, 1) for a in attempts) + sorted((a.finished_at, -1) for a in attempts)
    in_flight = 0
    for _, step in sorted(starts, key=lambda e: (e[0], e[1])):
        in_flight += step
        assert in_flight <= 5


@pytest.mark.parametrize("merge", [True, False])
async def test_a_group_commit_waits_for_the_attempts_in_flight_so_waves_merge(engine, receiver, setup_config,
                                                                               monkeypatch, merge):
    """A real-clock engine (switched on here on the virtual clock): one attempt of a wave answers at once
    (a connection kept alive, say), the others a millisecond later. Without waiting, its group commit
    records it alone and claims one successor, and the wave of one never rejoins the others; a group
    commit that waits (at most its window) for the attempts still in flight records and claims whole
    waves. Every delivery still goes exactly once."""
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 5})
    engine.dispatcher.commit_claims(True)
    engine.dispatcher.merge_waves(0.002 if merge else 0.0)
    receiver.respond = lambda hit, n: (200, {}, 0.0 if n == 2 else 0.001)  # the first POST (after the GET) is fast
    made = [await engine.create_activity("acme", ACT) for _ in range(20)]
    batches = _recorded_claims(engine, monkeypatch)
    summary = await engine.run_until_idle()
    assert summary.counts["DISPATCHED"] == 20 and summary.idle
    assert sorted(h.body["id"] for h in receiver.posts()) == sorted(a["id"] for a in made)
    if merge:
        assert batches == [5, 5, 5, 5]
    else:
        assert batches[:2] == [5, 1] and len(batches) == 5  # the early answer made a group commit of its own


@pytest.mark.parametrize(("fast_unordered", "n"), [(False, 20), (True, 20), (True, 5)])
async def test_an_ordered_queue_never_waits_for_another_queues_attempts(engine, receiver, setup_config,
                                                                         fast_unordered, n):
    """Merged waves must not tax an ordered queue: with a slow endpoint's attempt always in flight (10 s
    each, loop time virtual), a group commit that waited its window for it would hold every head of the
    ordered queue 2 ms, n heads at least n times that. A commit holding an ordered queue's result goes at once,
    so the heads take no loop time at all (HTTP takes none here). With a fast unordered endpoint as
    well, its results land in the same loop tick as the ordered queue's, often first: a commit that began
    to wait for them must not wait once the ordered result joins it (it waited 2 ms at every head: the
    waiting task cleared the signal the ordered result had set in the same tick)."""
    async with Receiver(engine.clock.now) as slow, Receiver(engine.clock.now) as fast:
        slow.respond = lambda hit, n: (200, {}, 10.0)
        await setup_config(slow.url, provider="slowcrm", ordering={"mode": "none", "concurrency": 2})
        if fast_unordered:
            # both answer after 1 s; the unordered queue's deliveries (another channel) are made and
            # started first, so at each whole second its result lands first, in the same loop tick
            fast.respond = receiver.respond = lambda hit, n: (200, {}, 1.0)
            await setup_config(fast.url, provider="fastcrm", channel="EMAIL",
                               ordering={"mode": "none", "concurrency": 1})
            await engine.create_activities("acme", [dict(ACT, channel="EMAIL") for _ in range(n)])
        await setup_config(receiver.url)  # ordered: the default
        engine.dispatcher.commit_claims(True)
        engine.dispatcher.merge_waves(0.002)
        await engine.create_activities("acme", [dict(ACT) for _ in range(n)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        ordered_done: list[float] = []
        record = engine.dispatcher._queue_result

        def timed(claim, snap, result):
            if snap.ordering.ordered:
                ordered_done.append(loop.time() - started)
            record(claim, snap, result)

        engine.dispatcher._queue_result = timed
        summary = await engine.run_until_idle()
        assert summary.counts["DISPATCHED"] == (3 if fast_unordered else 2) * n
        # every head ends when its answer comes (after 0 s, or 1 s after its predecessor's end): no wait
        assert len(ordered_done) == n, ordered_done
        assert all(abs(t - i * fast_unordered) < 0.001 for i, t in enumerate(ordered_done, 1)), ordered_done
        assert len(slow.posts()) == n and len(fast.posts()) == (n if fast_unordered else 0)


async def test_a_simulations_ordered_backlog_runs_from_commit_to_commit(engine, receiver, setup_config):
    """On the virtual clock, a group commit that claimed the next head of every queue it freed leaves
    the dispatch loop asleep (its room is what the last cycle saw): three ordered queues of eight
    deliveries each go out in order, in one commit per wave of three, with a few dispatch cycles in
    all instead of one after every commit. An activity created meanwhile still starts a cycle."""
    await setup_config(receiver.url, ordering={"mode": "partitioned", "partition_key": "commerceExternalId"})
    made = await engine.create_activities("acme", [dict(ACT, commerceExternalId=f"COM-{i % 3}") for i in range(24)])
    summary, statements = await _run_traced(engine)
    assert summary.counts["DISPATCHED"] == 24 and summary.idle
    got = [h.body["id"] for h in receiver.posts()]
    for q in range(3):
        assert [a for a in got if made.index(a) % 3 == q] == [a for i, a in enumerate(made) if i % 3 == q]
    cycles = sum(1 for sql in statements if sql.startswith("SELECT id FROM configurations WHERE active = 0"))
    commits = [sql for sql in statements if sql == "COMMIT"]
    assert cycles <= 3 and len(commits) <= 9, (cycles, len(commits))  # was a cycle per commit, 3 heads per commit
    late = await engine.create_activity("acme", dict(ACT, commerceExternalId="COM-9"))
    summary = await engine.run_until_idle()
    assert summary.counts["DISPATCHED"] == 25 and receiver.posts()[-1].body["id"] == late["id"]
