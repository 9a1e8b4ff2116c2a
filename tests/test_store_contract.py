"""The store contract, run against every backend: each named operation, each transition, each guard.

``BACKENDS`` maps a name to a factory of an empty store on a fresh database: SQLite (a file in the
test's folder; also as a scenario's scratch file, its journal in memory) and PostgreSQL (a real server started for the session by tests/pg.py; it fails, never
skips, when it cannot start). The module runs on a real-time loop (the ``postgres`` marker): a
network database runs on the real clock, and nothing here waits.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from dispatchsim.engine import (TRANSITIONS, ActivityFilter, Circuit, ConfigDeleted, ConfigKind, DeliveryFilter, IdempotencyStore,
                                IdempotencyStoreContract, InvalidTransition, NotFound, Status, Store, StoreContract,
                                StoreError, open_store)
from dispatchsim.engine.events_store import EventsStore
from dispatchsim.engine.payload import build_stored_payload, encode_body
from dispatchsim.mapping.activity import example_activity
from dispatchsim.engine.store import AttemptResult, Claim
from dispatchsim.engine import states
from dispatchsim.engine.store_contract import EventsStoreContract, Finish, NewActivity, NewDelivery
from dispatchsim.engine.store_rows import ConsoleSession, Streak
from dispatchsim.engine.events_store_pg import PgEventsStore
from dispatchsim.engine.store_idempotency_pg import PgIdempotencyStore
from dispatchsim.engine.store_pg import OWNER_LOCK, PgStore

pytestmark = pytest.mark.postgres


async def _open_sqlite(request: pytest.FixtureRequest, tmp: Path) -> StoreContract:
    return await open_store(tmp / "contract.db")


async def _open_scratch(request: pytest.FixtureRequest, tmp: Path) -> StoreContract:
    """A scenario's temporary database: journal in memory, commits not waited for (``scratch``)."""
    return await open_store(tmp / "scratch.db", scratch=True)


async def _open_postgres(request: pytest.FixtureRequest, tmp: Path) -> StoreContract:
    return await open_store(request.getfixturevalue("pg_url"), pool_size=3)


@dataclass(frozen=True)
class Backend:
    #: an empty store on a fresh database (the fixture closes it); its message-event and idempotency
    #: operations come from the store itself (``events_store()``, ``idempotency_store()``)
    open: Callable[[pytest.FixtureRequest, Path], Awaitable[StoreContract]]


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(open=_open_sqlite),
    "sqlite-scratch": Backend(open=_open_scratch),
    "postgres": Backend(open=_open_postgres),
}
#: every backend's classes: the store, its message-event operations, its idempotency operations
IMPLEMENTATIONS = {"sqlite": (Store, EventsStore, IdempotencyStore),
                   "sqlite-scratch": (Store, EventsStore, IdempotencyStore),
                   "postgres": (PgStore, PgEventsStore, PgIdempotencyStore)}
#: public names that open a backend or serve its own classes, not operations the engine calls
BACKEND_ONLY = {"check", "migrate", "open", "lock_queue"}
T0 = 1_000_000.0
SNAP = {"endpoint_url": "http://127.0.0.1:9/h"}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
async def store(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreContract]:
    s = await backend.open(request, tmp_path)
    await s.add_tenant("t", "Tenant", T0)
    await s.add_provider("p", "Provider", T0)
    await s.insert_config("c", "t", "p", "S", SNAP, T0)
    await s.set_config_active("c", True, T0)
    await s.insert_activity("a1", "t", "TASK", "S", {"id": "a1", "type": "TASK", "status": "PENDING"}, T0)
    await s.insert_activity("a2", "t", "TASK", "S", {"id": "a2", "type": "TASK", "status": "DONE"}, T0 + 1)
    yield s
    await s.close()


async def _delivery(s: StoreContract, n: int, *, queue: str = "c", ordered: bool = True, at: float = T0) -> int:
    return await s.insert_delivery(webhook_id=f"w{n}", activity_id="a1", config_id="c", config_version=1, queue=queue,
                                   ordered=ordered, now=at)


async def _claim(s: StoreContract, did: int, *, at: float = T0, token: str = "me:1") -> Claim:
    [claim] = await s.claim([(did, at + 60)], token=token, now=at)
    return claim


def _result(at: float, outcome: str = "SUCCESS", code: int | None = 200) -> AttemptResult:
    return AttemptResult(finished_at=at, outcome=outcome, status_code=code, latency=0.01)


async def _failed(s: StoreContract, did: int, *, block: bool = False, at: float = T0) -> None:
    assert await s.mark_failed(await _claim(s, did, at=at), _result(at, "HTTP_ERROR", 500), "exhausted", "HTTP 500",
                               ordered=True, block=block)


# -- the contract itself ------------------------------------------------------------------


def test_the_contract_lists_every_operation() -> None:
    """Every public operation of a backend is in the contract, and the backends implement all of it, as
    coroutines where the contract has one (every operation but the factories that do no I/O)."""
    plain = {"tx", "wal_checkpointer", "events_store", "idempotency_store"}
    assert set(IMPLEMENTATIONS) == set(BACKENDS)
    contracts = (StoreContract, EventsStoreContract, IdempotencyStoreContract)
    for impl, contract in ((i, c) for impls in IMPLEMENTATIONS.values() for i, c in zip(impls, contracts)):
        assert issubclass(impl, contract) and not impl.__abstractmethods__
        public = {n for n, _ in inspect.getmembers(impl) if not n.startswith("_")}
        listed = {n for n, _ in inspect.getmembers(contract) if not n.startswith("_")}
        assert public - BACKEND_ONLY == listed, impl
        for name in listed:
            want = inspect.signature(getattr(contract, name)).parameters
            have = inspect.signature(getattr(impl, name)).parameters
            assert list(have) == list(want), name
            assert [p.kind for p in have.values()] == [p.kind for p in want.values()], name
            is_async = inspect.iscoroutinefunction(getattr(contract, name))
            assert is_async == (name not in plain) == inspect.iscoroutinefunction(getattr(impl, name)), name


# -- tenants, providers, configurations -----------------------------------------------------


async def test_tenants_and_providers(store: StoreContract) -> None:
    assert await store.add_tenant("b", "B", T0) is True
    assert await store.add_tenant("b", "Other", T0 + 1) is False  # taken: nothing changes
    assert await store.add_provider("p", "Other", T0 + 1) is False
    assert (await store.tenant("b")).name == "B" and (await store.provider("p")).name == "Provider"
    assert [t.id for t in await store.tenants()] == ["b", "t"]
    assert (await store.tenant("t")).name == "Tenant" and await store.tenant("nope") is None
    assert (await store.provider("p")).created_at == T0 and await store.provider("nope") is None
    assert [p.to_json() for p in await store.providers()] == [{"id": "p", "name": "Provider",
                                                         "created_at": (await store.provider("p")).to_json()["created_at"]}]


async def test_configurations_versions_activation_and_deletion(store: StoreContract) -> None:
    cfg = await store.config("c")
    assert (cfg.kind, cfg.version, cfg.active, cfg.deleted) == (ConfigKind.ACTIVITIES, 1, True, False)
    assert await store.new_config_version("c", {**SNAP, "x": 1}, T0 + 5) == 2
    assert await store.snapshot("c", 1) == SNAP and (await store.snapshot("c", 2))["x"] == 1
    with pytest.raises(NotFound):
        await store.snapshot("c", 3)
    assert await store.active_configs("t", "S") == [("c", 2)] and await store.active_configs("t", "OTHER") == []
    await store.set_config_active("c", False, T0 + 6, "manual")
    cfg = await store.config("c")
    assert (cfg.active, cfg.inactive_reason, cfg.inactive_since) == (False, "manual", T0 + 6)
    assert await store.paused_configs() == ["c"] and await store.inactive_configs() == [("c", "manual", T0 + 6)]
    assert await store.active_configs("t", "S") == []
    await store.insert_config("t@events", "t", None, None, SNAP, T0, kind=ConfigKind.MESSAGE_EVENTS)
    assert [c.id for c in await store.configs()] == ["c"]
    assert [c.id for c in await store.configs("t", kind=None)] == ["c", "t@events"]
    assert await store.configs("other") == []
    await store.delete_config("c", T0 + 7)
    assert (await store.config("c")).deleted and await store.configs() == []
    for op in (lambda: store.delete_config("c", T0), lambda: store.set_config_active("c", True, T0),
               lambda: store.new_config_version("c", SNAP, T0)):
        with pytest.raises(NotFound):
            await op()


# -- activities -------------------------------------------------------------------------------


async def test_activities_results_once_and_pages(store: StoreContract) -> None:
    a = await store.activity("a1")
    assert (a.id, a.tenant_id, a.type, a.channel, a.payload["status"], a.result) == ("a1", "t", "TASK", "S",
                                                                                     "PENDING", None)
    assert not a.can_force_retry
    with pytest.raises(NotFound):
        await store.activity("nope")
    assert await store.set_result("a1", {"status": "COMPLETED"}) is None
    assert await store.set_result("a1", {"status": "FAILED"}) == {"status": "COMPLETED"}  # the guard: first one stays
    assert (await store.activity("a1")).result == {"status": "COMPLETED"}
    with pytest.raises(NotFound):
        await store.set_result("nope", {})
    assert await store.activity_ids() == ["a1", "a2"] and await store.next_activity_seq() == 3
    assert await store.activity_tenant("a2") == "t"
    with pytest.raises(NotFound):
        await store.activity_tenant("nope")
    page = await store.activity_page(ActivityFilter(tenant_id="t"), limit=1)
    assert [aid for _, aid in page] == ["a1"]
    assert [aid for _, aid in await store.activity_page(ActivityFilter(), after_seq=page[0][0])] == ["a2"]
    assert [aid for _, aid in await store.activity_page(ActivityFilter(status="DONE"))] == ["a2"]
    assert [aid for _, aid in await store.activity_page(ActivityFilter(created_from=T0 + 1))] == ["a2"]
    assert [aid for _, aid in await store.activity_page(ActivityFilter(created_to=T0 + 1))] == ["a1"]
    assert await store.activity_page(ActivityFilter(channel="OTHER")) == []
    await _delivery(store, 1)
    assert [aid for _, aid in await store.activity_page(ActivityFilter(dispatch_status="READY"))] == ["a1"]
    assert await store.activity_page(ActivityFilter(dispatch_status="FAILED")) == []
    assert await store.activity_page(ActivityFilter(dispatch_status="LOST")) == []  # no such status: none

async def test_next_activity_seq_within_a_transaction(store: StoreContract) -> None:
    """A burst asks for the next number after each insert of its transaction (SQLite answers that
    one without a query): the answer is always MAX(seq) + 1, across a rollback too."""

    async def seq_of(aid: str) -> int:
        return next(seq for seq, a in await store.activity_page(ActivityFilter(), limit=100) if a == aid)

    n = await store.next_activity_seq()
    async with store.tx():
        await store.insert_activity("a3", "t", "TASK", "S", {"id": "a3"}, T0)
        assert await store.next_activity_seq() == await seq_of("a3") + 1 == n + 1
        await store.insert_activity("a4", "t", "TASK", "S", {"id": "a4"}, T0)
        assert await store.next_activity_seq() == n + 2
    assert await store.next_activity_seq() == n + 2
    with pytest.raises(RuntimeError):
        async with store.tx():
            await store.insert_activity("a5", "t", "TASK", "S", {"id": "a5"}, T0)
            assert await store.next_activity_seq() == await seq_of("a5") + 1
            raise RuntimeError("undo")
    assert await store.next_activity_seq() == n + 2
    async with store.tx():
        assert await store.next_activity_seq() == n + 2
        await store.insert_activity("a6", "t", "TASK", "S", {"id": "a6"}, T0)
        assert await store.next_activity_seq() == await seq_of("a6") + 1
    assert await store.next_activity_seq() == await seq_of("a6") + 1



async def test_a_configuration_read_follows_every_change(store: StoreContract, backend: Backend,
                                                        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What ``config`` answers follows its own changes, a rolled-back transaction and another
    connection's changes (a backend may keep answers; they never go stale)."""
    assert (await store.config("c")).active and await store.config("nope") is None
    with pytest.raises(RuntimeError):
        async with store.tx():
            await store.set_config_active("c", False, T0 + 1)
            assert not (await store.config("c")).active
            raise RuntimeError("roll back")
    assert (await store.config("c")).active
    if request.node.callspec.params["backend"] == "sqlite-scratch":
        # a scratch file is this connection's alone while it lives: a second one is refused, in one line
        with pytest.raises(StoreError, match="locked"):
            await backend.open(request, tmp_path)
        await store.delete_config("c", T0 + 5)
        assert (await store.config("c")).deleted
        return
    other = await backend.open(request, tmp_path)
    try:
        await other.set_config_active("c", False, T0 + 2, "paused elsewhere")
        assert not (await store.config("c")).active
        await other.new_config_version("c", SNAP, T0 + 3)
        assert (await store.config("c")).version == 2
        await other.insert_config("d", "t", "p", "S", SNAP, T0 + 4)
        assert (await store.config("d")).version == 1
    finally:
        await other.close()
    await store.delete_config("c", T0 + 5)
    assert (await store.config("c")).deleted


async def test_the_body_of_an_activity_is_its_rendered_payload_encoded(store: StoreContract) -> None:
    """``activity_body`` is what a delivery without mapping POSTs: exactly the encoded ``to_json()``,
    as the derived fields change (a FAILED delivery, a result), for payloads the engine stored and others."""
    payload = build_stored_payload(example_activity(random.Random(3)), activity_id="a3", created_at=T0)
    await store.insert_activity("a3", "t", "TASK", "S", payload, T0)

    async def same(aid: str) -> bytes:
        body = await store.activity_body(aid)
        seed = (await store.activity(aid)).to_json()
        assert body == encode_body(seed)
        # read together, as a claim's attempts read theirs: the same body and seed JSON, unknown ids left out
        together = await store.stored_activities(["nope", aid, "a2", aid])
        assert sorted(together) == sorted({aid, "a2"})
        assert (together[aid].body(), together[aid].to_json()) == (body, seed)
        assert together["a2"].body() == await store.activity_body("a2")
        return body

    first = await same("a3")
    assert json.loads(first)["canForceRetryDispatch"] is False and json.loads(first)["activityResult"] is None
    await same("a1")  # a payload not written in the engine's own form
    did = await store.insert_delivery(webhook_id="w3", activity_id="a3", config_id="c", config_version=1, queue="q3",
                                      ordered=True, now=T0)
    await _failed(store, did)
    assert json.loads(await same("a3"))["canForceRetryDispatch"] is True
    await store.set_result("a3", {"status": "COMPLETED", "note": "é \"quoted\""})
    assert json.loads(await same("a3"))["activityResult"] == {"status": "COMPLETED", "note": "é \"quoted\""}
    with pytest.raises(NotFound):
        await store.activity_body("nope")


# -- deliveries and the dispatch cycle --------------------------------------------------------


async def test_due_candidates_can_leave_out_paused_configurations(store: StoreContract) -> None:
    """``skip_paused`` reads the configurations' state in the same statement: a paused or deleted
    configuration's deliveries are not candidates, an active one's are, and activating it again
    brings its deliveries back."""
    for cid in ("d", "e"):
        await store.insert_config(cid, "t", "p", "S", SNAP, T0)
        await store.set_config_active(cid, True, T0)
    mine = await _delivery(store, 1, ordered=False)
    paused, deleted = [await store.insert_delivery(webhook_id=f"w{cid}", activity_id="a1", config_id=cid,
                                                   config_version=1, queue=cid, ordered=False, now=T0)
                       for cid in ("d", "e")]
    await store.set_config_active("d", False, T0, "manual")
    await store.delete_config("e", T0)
    everything = [(mine, "c", 1), (paused, "d", 1), (deleted, "e", 1)]
    assert await store.due_candidates(T0, 10) == everything
    assert await store.due_candidates(T0, 10, skip_paused=True) == [(mine, "c", 1)]
    assert await store.due_candidates(T0, 10, exclude_configs=["c"], skip_paused=True) == []
    await store.set_config_active("d", True, T0 + 1)
    assert await store.due_candidates(T0, 10, skip_paused=True) == [(mine, "c", 1), (paused, "d", 1)]
    # configurations left out: the others' deliveries still come (a deleted one's too, unless paused ones
    # are skipped), and when every configuration is left out nothing does
    assert await store.due_candidates(T0, 10, exclude_configs=["c"], skip_paused=True) == [(paused, "d", 1)]
    assert await store.due_candidates(T0, 10, exclude_configs=["c", "d"]) == [(deleted, "e", 1)]
    assert await store.due_candidates(T0, 10, exclude_configs=["c", "d"], skip_paused=True) == []
    assert await store.due_candidates(T0, 10, exclude_configs=["c", "d", "e"]) == []
    assert await store.next_wakeup(exclude_configs=["c", "d"]) == T0
    assert await store.next_wakeup(exclude_configs=["c", "d", "e"]) is None


async def test_a_limited_claim_takes_later_leases_in_place_of_those_taken(store: StoreContract) -> None:
    """``limit``: the first that many of the leases asked for that are still claimable, in the order
    given; those another claim took (or that are not claimable) are replaced by the ones after them."""
    ids = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in range(1, 7)]
    taken = await _claim(store, ids[1], token="other:1")
    head = await _delivery(store, 7)  # an ordered queue's head, and the delivery behind it (not claimable)
    behind = await _delivery(store, 8)
    asked = [(d, T0 + 60) for d in (ids[0], ids[1], behind, ids[2], ids[3], head, ids[4])]
    claims = await store.claim(asked, token="me:1", now=T0, limit=3)
    assert [c.delivery_id for c in claims] == [ids[0], ids[2], ids[3]]
    assert (await store.delivery(ids[1])).lease_token == taken.lease_token  # untouched
    assert [(await store.delivery(d)).lease_until for d in (head, ids[4], ids[5])] == [None] * 3
    assert [a.number for c in claims for a in await store.attempts(c.delivery_id)] == [1, 1, 1]
    rest = await store.claim([(d, T0 + 60) for d in (ids[0], head, ids[4], ids[5])], token="me:2", now=T0, limit=5)
    assert [c.delivery_id for c in rest] == [head, ids[4], ids[5]]  # fewer than the limit: all there are
    assert await store.claim([(ids[5], T0 + 60)], token="me:3", now=T0, limit=1) == []


async def test_an_ordered_queue_has_one_claimable_head(store: StoreContract) -> None:
    d1, d2, d3 = [await _delivery(store, n) for n in (1, 2, 3)]
    u = await _delivery(store, 4, queue="free", ordered=False)
    assert [row.status for row in await store.deliveries()] == [Status.READY] * 4
    assert [(r.holds, r.eligible) for r in await store.deliveries()] == [(True, True), (True, False), (True, False),
                                                                   (False, True)]
    assert await store.due_candidates(T0, 10) == [(d1, "c", 1), (u, "c", 1)]
    assert await store.due_candidates(T0 - 1, 10) == []
    assert await store.due_candidates(T0, 10, exclude_configs=["c"]) == []
    claim = await _claim(store, d1)
    assert (claim.number, claim.webhook_id, claim.activity_id, claim.queue) == (1, "w1", "a1", "c")
    assert await store.claim([(d1, T0 + 60)], token="other:1", now=T0) == []  # leased: nobody else gets it
    assert await store.claim([(d2, T0 + 60)], token="other:1", now=T0) == []  # not the head
    assert await store.in_flight() == 1 and (await store.delivery(d1)).lease_until == T0 + 60
    assert await store.due_candidates(T0, 10) == [(u, "c", 1)] and await store.next_wakeup() == T0
    assert await store.mark_dispatched(claim, _result(T0 + 1), ordered=True)
    assert (await store.delivery(d1)).status is Status.DISPATCHED and (await store.delivery(d1)).dispatched_at == T0 + 1
    assert await store.due_candidates(T0 + 1, 10) == [(d2, "c", 1), (u, "c", 1)]  # the next one is the head
    assert [a.outcome for a in await store.attempts(d1)] == ["SUCCESS"] and await store.attempt_count("SUCCESS") == 1
    assert await store.deliveries(status=Status.READY, queue="c") == [await store.delivery(d2), await store.delivery(d3)]
    assert [d.id for d in await store.deliveries(after_id=d2, limit=1)] == [d3]
    assert await store.counts() == {"READY": 3, "RETRYING": 0, "DISPATCHED": 1, "FAILED": 0}
    with pytest.raises(NotFound):
        await store.delivery(999)


async def test_deliveries_made_in_one_transaction_queue_behind_the_holder_as_it_is_then(store: StoreContract) -> None:
    """A queue's tail inside one transaction (a burst of activities): the first delivery of an empty queue
    is its head, the later ones wait; once the head is DISPATCHED in that same transaction, the next new
    delivery queues behind the one still waiting, and a queue nothing holds any more takes a new head."""
    async with store.tx():
        d1, d2 = await _delivery(store, 1), await _delivery(store, 2)
        f1 = await _delivery(store, 3, queue="f")
        claim = await _claim(store, d1)
        assert await store.mark_dispatched(claim, _result(T0 + 1), ordered=True)
        assert await store.mark_dispatched(await _claim(store, f1), _result(T0 + 1), ordered=True)
        d3, f2 = await _delivery(store, 4), await _delivery(store, 5, queue="f")
    rows = {d.id: (d.holds, d.eligible) for d in await store.deliveries()}
    assert [rows[d] for d in (d2, d3, f2)] == [(True, True), (True, False), (True, True)]
    assert await store.due_candidates(T0 + 1, 10) == [(d2, "c", 1), (f2, "c", 1)]


async def test_a_burst_inserted_together_is_what_one_insert_after_the_other_makes(store: StoreContract) -> None:
    """``insert_activities`` and ``insert_deliveries`` (a burst in a few statements) leave the rows,
    sequence numbers, heads and tails that ``insert_activity`` and ``insert_delivery`` one after the
    other leave: in a transaction and outside one, behind a queue held before the burst, ordered and
    not; the ids come back in the order given."""
    held = await _delivery(store, 0, queue="held")

    def burst(tag: str) -> tuple[list[NewActivity], list[NewDelivery]]:
        acts = [NewActivity(f"{tag}{i}", "t", "TASK", "S", {"id": f"{tag}{i}", "n": i}) for i in range(5)]
        dels = [NewDelivery(webhook_id=f"{tag}w{i}", activity_id=f"{tag}{i % 5}", config_id="c", config_version=1,
                            queue=f"{tag}{q}" if q != "held" else "held", ordered=q != "free")
                for i, q in enumerate(["q1", "q2", "q1", "free", "held", "q1", "q2", "free"])]
        return acts, dels

    async def shape(tag: str) -> list[tuple]:
        seqs = {aid: seq for seq, aid in await store.activity_page(ActivityFilter(), limit=1000)}
        rows = [d for d in await store.deliveries() if d.webhook_id.startswith(tag)]
        first_seq, first_id = min(seqs[a.id] for a in (await _activities(store, tag))), rows[0].id
        return [(d.webhook_id, d.id - first_id, seqs[d.activity_id] - first_seq, d.queue.removeprefix(tag),
                 d.holds, d.eligible) for d in rows]

    async def _activities(s: StoreContract, tag: str) -> list:
        return [await s.activity(aid) for aid in await s.activity_ids() if aid.startswith(tag)]

    for in_tx in (True, False):
        one, together = ("o", "b") if in_tx else ("O", "B")
        acts, dels = burst(one)
        async with contextlib.AsyncExitStack() as stack:
            if in_tx:
                await stack.enter_async_context(store.tx())
            for a in acts:
                await store.insert_activity(a.activity_id, a.tenant_id, a.typ, a.channel, a.payload, T0)
            singles = [await store.insert_delivery(webhook_id=d.webhook_id, config_id=d.config_id,
                                                   config_version=d.config_version, queue=d.queue, ordered=d.ordered,
                                                   now=T0, activity_id=d.activity_id) for d in dels]
        acts, dels = burst(together)
        async with contextlib.AsyncExitStack() as stack:
            if in_tx:
                await stack.enter_async_context(store.tx())
            await store.insert_activities(acts, T0)
            assert await store.next_activity_seq() == max(
                seq for seq, _ in await store.activity_page(ActivityFilter(), limit=1000)) + 1
            ids = await store.insert_deliveries(dels, T0)
        assert ids == sorted(ids) and [(await store.delivery(i)).webhook_id for i in ids] == [d.webhook_id for d in dels]
        assert len(singles) == len(ids)
        assert [r[1:] for r in await shape(together)] == [r[1:] for r in await shape(one)]
        assert [a.payload for a in await _activities(store, together)] == [
            {"id": f"{together}{i}", "n": i} for i in range(5)]
    assert (await store.delivery(held)).eligible
    assert await store.insert_activities([], T0) is None and await store.insert_deliveries([], T0) == []


async def test_the_head_of_a_queue_while_it_can_be_claimed(store: StoreContract) -> None:
    """queue_head: the claimable delivery of one queue due by now (an ordered queue's head), else None."""
    d1, d2 = await _delivery(store, 1), await _delivery(store, 2)
    assert await store.queue_head("c", T0) == (d1, "c", 1) and await store.queue_head("other", T0) is None
    assert await store.queue_head("c", T0 - 1) is None  # not due yet
    claim = await _claim(store, d1)
    assert await store.queue_head("c", T0) is None  # its head is in flight
    assert await store.schedule_retry(claim, _result(T0 + 1, "HTTP_ERROR", 503), T0 + 60, "HTTP 503")
    assert await store.queue_head("c", T0 + 59) is None and await store.queue_head("c", T0 + 60) == (d1, "c", 1)
    assert await store.mark_dispatched(await _claim(store, d1, at=T0 + 60), _result(T0 + 61), ordered=True)
    assert await store.queue_head("c", T0 + 61) == (d2, "c", 1)


async def test_unordered_rows_of_a_queue_are_neither_its_heads_nor_in_their_way(store: StoreContract) -> None:
    """A configuration switched between ordering modes leaves both kinds of rows in its queue (the queue
    is the configuration): the unordered ones (holding nothing) stay claimable when an ordered head is
    promoted, and one of them in flight does not keep the next ordered head from being promoted."""
    u1 = await _delivery(store, 1, ordered=False)
    d1, d2 = await _delivery(store, 2), await _delivery(store, 3)
    u2 = await _delivery(store, 4, ordered=False)
    assert await store.due_candidates(T0, 10) == [(u1, "c", 1), (d1, "c", 1), (u2, "c", 1)]
    assert await store.queue_head("c", T0) == (d1, "c", 1)
    in_flight = await _claim(store, u1)
    assert await store.mark_dispatched(await _claim(store, d1), _result(T0 + 1), ordered=True)
    assert await store.due_candidates(T0 + 1, 10) == [(d2, "c", 1), (u2, "c", 1)]
    assert await store.queue_head("c", T0 + 1) == (d2, "c", 1)
    assert await store.mark_dispatched(in_flight, _result(T0 + 2), ordered=False)
    assert await store.mark_dispatched(await _claim(store, d2, at=T0 + 2), _result(T0 + 3), ordered=True)
    assert await store.due_candidates(T0 + 3, 10) == [(u2, "c", 1)] and await store.queue_head("c", T0 + 3) is None


async def test_a_claim_skips_what_is_not_due_by_its_time(store: StoreContract) -> None:
    """A candidate read earlier (without locks, on PostgreSQL) may have been sent by another worker
    and scheduled for a retry meanwhile: the claim re-checks it is due, one lease or many, so a
    backoff is never cut short."""
    ds = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in range(1, 7)]
    claim = await _claim(store, ds[0])
    assert await store.schedule_retry(claim, _result(T0 + 1, "HTTP_ERROR", 503), T0 + 3600, "HTTP 503")
    assert await store.claim([(ds[0], T0 + 60)], token="other:1", now=T0 + 2) == []
    many = await store.claim([(d, T0 + 60) for d in ds], token="other:2", now=T0 + 2)  # the batched form
    assert [c.delivery_id for c in many] == ds[1:]
    assert [c.number for c in await store.claim([(ds[0], T0 + 3700)], token="other:3", now=T0 + 3600)] == [2]


def _claimed(d: object, lease_token: str, now: float) -> tuple[object, ...]:
    """What a claim of delivery ``d`` (as read before it) must say of it, its attempt id aside."""
    return (d.id, d.attempts + 1, d.webhook_id, d.activity_id, d.batch_id, d.config_id, d.config_version, d.queue,
            d.budget_attempts, d.budget_started_at, lease_token, d.next_attempt_at, now)


async def test_a_claim_after_due_reads_in_its_transaction_is_the_claim_on_its_own(store: StoreContract) -> None:
    """A group commit claims what its due reads (``due_candidates``, ``queue_head``) returned in the same
    transaction (SQLite makes the claims from those rows): it leases and returns what a claim on its own
    does, many leases or one, an ordered head among them; a write in between (another claim) or a read
    at a later time than the claim's makes it check each row again."""
    ds = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in range(1, 9)]
    head = await _delivery(store, 9)  # the ordered queue c's head
    later = [await _delivery(store, n, queue=f"l{n}", ordered=False, at=T0 + 5) for n in range(10, 15)]
    before = {d: await store.delivery(d) for d in [*ds, head, *later]}

    def shape(c: Claim) -> tuple[object, ...]:
        return (c.delivery_id, c.number, c.webhook_id, c.activity_id, c.batch_id, c.config_id, c.config_version,
                c.queue, c.budget_attempts, c.budget_started_at, c.lease_token, c.due_at, c.started_at)

    async with store.tx():
        assert [r[0] for r in await store.due_candidates(T0, 5)] == ds[:5]
        assert await store.queue_heads(["c"], T0) == {"c": (head, "c", 1)}
        many = await store.claim([(d, T0 + 60) for d in (ds[3], head, ds[0], ds[1], ds[2])], token="me:1", now=T0)
    assert [shape(c) for c in many] == [_claimed(before[d], "me:1", T0) for d in (ds[3], head, ds[0], ds[1], ds[2])]
    ids = [c.attempt_id for c in many]
    assert sorted(ids) == list(range(min(ids), min(ids) + 5))
    assert ids == sorted(ids) or not isinstance(store, Store)  # SQLite numbers them in the order of the leases
    assert [(await store.delivery(d)).lease_until for d in (ds[3], head, ds[0])] == [T0 + 60] * 3
    async with store.tx():
        await store.due_candidates(T0, 5)
        [one] = await store.claim([(ds[5], T0 + 30)], token="me:2", now=T0)
    assert shape(one) == _claimed(before[ds[5]], "me:2", T0) and one.attempt_id == max(ids) + 1
    assert [a.number for a in await store.attempts(ds[5])] == [1]
    async with store.tx():
        await store.due_candidates(T0, 10)
        await store.claim([(ds[6], T0 + 60)], token="other:1", now=T0)  # a write since the read
        rest = await store.claim([(ds[6], T0 + 60), (ds[7], T0 + 60)], token="me:3", now=T0)
    assert [shape(c) for c in rest] == [_claimed(before[ds[7]], "me:3", T0)]
    async with store.tx():
        assert [r[0] for r in await store.due_candidates(T0 + 5, 10)] == [ds[4], *later]
        assert await store.claim([(d, T0 + 60) for d in later], token="me:4", now=T0) == []  # not due by T0
        claims = await store.claim([(d, T0 + 65) for d in later], token="me:5", now=T0 + 5)
    assert [shape(c) for c in claims] == [_claimed(before[d], "me:5", T0 + 5) for d in later]


async def test_a_repeated_id_in_a_claim_is_leased_once_with_its_first_lease(store: StoreContract) -> None:
    ds = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in range(1, 4)]
    for leases, limit in (([(ds[0], T0 + 10), (ds[0], T0 + 20)], None),
                          ([(ds[1], T0 + 10), (ds[1], T0 + 20), (ds[2], T0 + 30), (ds[2], T0 + 40)], 2)):
        claims = await store.claim(leases, token="me:1", now=T0, limit=limit)
        assert [c.delivery_id for c in claims] == list(dict.fromkeys(d for d, _ in leases))
        assert [(await store.delivery(c.delivery_id)).lease_until for c in claims] == [
            dict(reversed(leases))[c.delivery_id] for c in claims]


async def test_one_claim_leases_many_in_the_order_given(store: StoreContract) -> None:
    """A claim of several leases returns them in the order given, each with its own lease end, and skips
    what is not claimable."""
    ds = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in range(1, 5)]
    await _claim(store, ds[3])
    claims = await store.claim([(ds[2], T0 + 30), (ds[0], T0 + 10), (ds[3], T0 + 40), (ds[1], T0 + 20)],
                               token="me:2", now=T0)
    assert [c.delivery_id for c in claims] == [ds[2], ds[0], ds[1]]
    assert len({c.attempt_id for c in claims}) == 3
    assert [(await store.delivery(c.delivery_id)).lease_until for c in claims] == [T0 + 30, T0 + 10, T0 + 20]
    assert [len(await store.attempts(d)) for d in ds] == [1, 1, 1, 1]
    assert all(c.number == 1 and c.lease_token == "me:2" for c in claims)


async def test_retry_keeps_the_head_and_a_lost_lease_refuses_every_finish(store: StoreContract) -> None:
    d1, d2 = await _delivery(store, 1), await _delivery(store, 2)
    claim = await _claim(store, d1)
    assert await store.schedule_retry(claim, _result(T0 + 1, "HTTP_ERROR", 503), T0 + 61, "HTTP 503")
    d = await store.delivery(d1)
    assert (d.status, d.next_attempt_at, d.last_error, d.budget_attempts) == (Status.RETRYING, T0 + 61, "HTTP 503", 1)
    assert await store.due_candidates(T0 + 60, 10) == [] and await store.next_wakeup() == T0 + 61
    assert await store.due_candidates(T0 + 61, 10) == [(d1, "c", 1)]  # still the head; d2 waits
    for finish in (lambda: store.mark_dispatched(claim, _result(T0 + 2), ordered=True),
                   lambda: store.schedule_retry(claim, _result(T0 + 2), T0 + 99, "x"),
                   lambda: store.mark_failed(claim, _result(T0 + 2), "exhausted", "x", ordered=True, block=False)):
        assert await finish() is False  # the lease is gone: the stale claim changes nothing
    assert (await store.delivery(d1)).status is Status.RETRYING and (await store.delivery(d2)).eligible is False
    claim2 = await _claim(store, d1, at=T0 + 61)
    assert claim2.number == 2 and claim2.budget_attempts == 1
    assert await store.mark_dispatched(claim2, _result(T0 + 62), ordered=True)
    assert [a.number for a in await store.attempts(d1)] == [1, 2] and (await store.attempts(d1))[-1].next_attempt_at is None


@pytest.mark.parametrize("how", ["schedule_retry", "group commit"])
async def test_a_delivery_force_retried_behind_an_attempt_in_flight_is_the_head_once_it_retries(
        store: StoreContract, how: str) -> None:
    """A force retry puts a delivery back at its place in its queue; while a later head's attempt is in
    flight the promotion waits for it. When that attempt ended in a retry, the later delivery stayed the
    head and the earlier one waited behind it (a property test found it)."""
    d1, d2 = await _delivery(store, 1), await _delivery(store, 2)
    await _failed(store, d1)  # not blocking: d2 is the head
    claim = await _claim(store, d2, at=T0 + 1)
    await store.force_retry(d1, T0 + 2, ordered=True, config_version=1)
    assert not (await store.delivery(d1)).eligible  # not while d2's attempt is in flight
    result = _result(T0 + 3, "HTTP_ERROR", 503)
    if how == "schedule_retry":
        assert await store.schedule_retry(claim, result, T0 + 63, "HTTP 503", ordered=True)
    else:
        assert await store.finish_attempts([Finish(claim=claim, result=result, status=Status.RETRYING,
                                                   next_at=T0 + 63, error="HTTP 503", ordered=True)]) == [True]
    first, second = await store.delivery(d1), await store.delivery(d2)
    assert first.eligible and not second.eligible and second.status is Status.RETRYING
    assert await store.due_candidates(T0 + 3, 10) == [(d1, "c", 1)]
    # with nothing force-retried, a retry keeps its head and writes no promotion
    assert await store.mark_dispatched(await _claim(store, d1, at=T0 + 3), _result(T0 + 4), ordered=True)
    assert (await store.delivery(d2)).eligible


async def test_a_late_outcome_after_the_lease_was_lost_writes_neither_attempt_nor_status(store: StoreContract) -> None:
    """An engine whose lease expired mid-attempt reports its outcome after the delivery went again:
    its attempt stays INTERRUPTED and the new holder's lease, status and attempt stay untouched."""
    did = await _delivery(store, 1, ordered=False)
    late = await _claim(store, did, token="slow:1")
    assert await store.release_expired_leases(T0 + 60) == [did]
    current = await _claim(store, did, at=T0 + 60, token="fast:1")
    for finish in (lambda: store.mark_dispatched(late, _result(T0 + 61), ordered=False),
                   lambda: store.schedule_retry(late, _result(T0 + 61, "TIMEOUT", None), T0 + 99, "timeout"),
                   lambda: store.mark_failed(late, _result(T0 + 61, "HTTP_ERROR", 400), "permanent_status",
                                             "HTTP 400", ordered=False, block=False)):
        assert await finish() is False
    first, second = await store.attempts(did)
    assert (first.id, first.outcome, first.finished_at, first.status_code) == (late.attempt_id, "INTERRUPTED",
                                                                             T0 + 60, None)
    assert (second.id, second.outcome, second.finished_at) == (current.attempt_id, None, None)
    d = await store.delivery(did)
    assert (d.status, d.lease_until, d.budget_attempts) == (Status.READY, T0 + 120, 0)
    assert await store.mark_dispatched(current, _result(T0 + 62), ordered=False)
    assert [a.outcome for a in await store.attempts(did)] == ["INTERRUPTED", "SUCCESS"]


async def test_a_group_commit_finishes_each_attempt_as_its_own_operation_would(
        store: StoreContract, monkeypatch: pytest.MonkeyPatch) -> None:
    """finish_attempts: unordered and ordered attempts, a lost lease and a refused transition in one
    call, each ending as mark_dispatched / schedule_retry / mark_failed would have left it."""
    sent, retried, failed, lost = [await _delivery(store, n, queue=f"u{n}", ordered=False) for n in (1, 2, 3, 4)]
    head, behind = await _delivery(store, 5), await _delivery(store, 6)
    claims = await store.claim([(d, T0 + 60) for d in (sent, retried, failed, lost, head)], token="me:1", now=T0)
    body, seed = await store.activity_body("a1"), (await store.activity("a1")).to_json()
    assert all(c.activity is None or (c.activity.body(), c.activity.to_json()) == (body, seed)
               for c in claims)  # read with the claim, or when the request is built
    assert await store.release_leases(T0, ending_by=T0 + 61, error="gone", owner=None) != []
    again = await store.claim([(d, T0 + 60) for d in (sent, retried, failed, head)], token="me:2", now=T0)
    await _claim(store, lost, token="other:1")  # lost: another worker holds it now
    by_id = {c.delivery_id: c for c in again} | {lost: claims[3]}
    done = await store.finish_attempts([
        Finish(claim=by_id[sent], result=_result(T0 + 1), status=Status.DISPATCHED),
        Finish(claim=by_id[retried], result=_result(T0 + 1, "HTTP_ERROR", 503), status=Status.RETRYING,
               next_at=T0 + 90, error="HTTP 503"),
        Finish(claim=by_id[failed], result=_result(T0 + 1, "HTTP_ERROR", 400), status=Status.FAILED,
               reason="permanent_status", error="HTTP 400"),
        Finish(claim=by_id[lost], result=_result(T0 + 1), status=Status.DISPATCHED),
        Finish(claim=by_id[head], result=_result(T0 + 1), status=Status.DISPATCHED, ordered=True)])
    assert done == [True, True, True, False, True]
    rows = {d: await store.delivery(d) for d in (sent, retried, failed, lost, head, behind)}
    assert (rows[sent].status, rows[sent].dispatched_at, rows[sent].lease_until) == (Status.DISPATCHED, T0 + 1, None)
    assert (rows[retried].status, rows[retried].next_attempt_at, rows[retried].last_error,
            rows[retried].budget_attempts) == (Status.RETRYING, T0 + 90, "HTTP 503", 1)
    assert (rows[failed].status, rows[failed].failed_reason, rows[failed].last_error) == (
        Status.FAILED, "permanent_status", "HTTP 400")
    assert (rows[lost].status, rows[lost].lease_token) == (Status.READY, "other:1")
    assert rows[head].status is Status.DISPATCHED and rows[behind].eligible  # the next one is the head
    outcomes = {d: [(a.outcome, a.status_code, a.next_attempt_at) for a in await store.attempts(d)]
                for d in (retried, lost)}
    assert outcomes[retried] == [("INTERRUPTED", None, None), ("HTTP_ERROR", 503, T0 + 90)]
    assert outcomes[lost] == [("INTERRUPTED", None, None), (None, None, None)]  # the late outcome wrote nothing
    monkeypatch.delitem(states.TRANSITIONS, (Status.READY, Status.DISPATCHED))
    refused, later = await _delivery(store, 7, queue="u7", ordered=False), await _delivery(store, 8, queue="u8",
                                                                                           ordered=False)
    [first] = await store.claim([(later, T0 + 60)], token="me:3", now=T0 + 2)
    assert await store.schedule_retry(first, _result(T0 + 2, "HTTP_ERROR", 503), T0 + 2, "HTTP 503")
    claims = await store.claim([(refused, T0 + 60), (later, T0 + 60)], token="me:4", now=T0 + 2)
    async with store.tx():  # as the dispatcher calls it: the refusal does not undo the group commit
        error, ok = await store.finish_attempts([Finish(claim=c, result=_result(T0 + 3), status=Status.DISPATCHED)
                                                 for c in claims])
    assert isinstance(error, InvalidTransition) and ok is True  # READY -> DISPATCHED refused, RETRYING -> it not
    d = await store.delivery(refused)
    assert (d.status, d.lease_token) == (Status.READY, "me:4")  # status and lease stay; the attempt is recorded
    assert [a.outcome for a in await store.attempts(refused)] == ["SUCCESS"]
    assert (await store.delivery(later)).status is Status.DISPATCHED
    [recorded] = await store.attempts(refused)
    assert refused in await store.release_expired_leases(T0 + 60)  # the lease ends: its attempt is recorded already
    assert await store.attempts(refused) == [recorded]


async def test_a_group_commit_holding_a_stale_and_the_current_result_of_one_delivery_records_each_once(
        store: StoreContract) -> None:
    """A worker keeps its results through a database outage; meanwhile its lease was released (the
    attempt written INTERRUPTED) and the delivery claimed again and attempted: one group commit then
    holds both results of the delivery. The current one moves it and is recorded; the stale one moves
    nothing and writes nothing (on PostgreSQL it wrote its attempt again: a duplicate key failed the
    whole commit, found with pg_terminate_backend under load)."""
    did = await _delivery(store, 1, queue="u1", ordered=False)
    [stale] = await store.claim([(did, T0 + 60)], token="me:1", now=T0)
    assert await store.release_leases(T0 + 1, ending_by=T0 + 61, error="its worker's session ended",
                                      owner=None) == [did]
    [current] = await store.claim([(did, T0 + 120)], token="me:2", now=T0 + 1)
    assert current.attempt_id != stale.attempt_id
    done = await store.finish_attempts([Finish(claim=stale, result=_result(T0 + 2, "HTTP_ERROR", 503),
                                               status=Status.RETRYING, next_at=T0 + 90, error="HTTP 503"),
                                        Finish(claim=current, result=_result(T0 + 2), status=Status.DISPATCHED)])
    assert done == [False, True]
    assert [(a.id, a.outcome) for a in await store.attempts(did)] == [(stale.attempt_id, "INTERRUPTED"),
                                                                      (current.attempt_id, "SUCCESS")]
    assert (await store.delivery(did)).status is Status.DISPATCHED


async def test_an_attempt_in_flight_is_listed_from_its_lease_and_keeps_its_id_once_recorded(store: StoreContract) -> None:
    """The claim writes no attempt row, the finish writes it with its outcome (schema v10). Meanwhile the
    attempt is listed from its delivery's lease (what the API, the console and the metrics show in
    flight) with the id its row then gets: ids in the order of the claims, a replay's after them; a
    lease that ends without a finish leaves its attempt INTERRUPTED under that id."""
    ds = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in range(1, 6)]
    claims = await store.claim([(d, T0 + 60) for d in ds], token="me:1", now=T0)
    ids = [c.attempt_id for c in claims]
    assert ids == list(range(ids[0], ids[0] + 5))
    assert [(a.id, a.delivery_id, a.number, a.started_at, a.finished_at, a.outcome, a.config_id, a.replay)
            for a in await store.attempts()] == [(c.attempt_id, c.delivery_id, 1, T0, None, None, "c", False)
                                                 for c in claims]
    assert [a.id for a in await store.attempts(ds[2])] == [ids[2]]
    assert (await store.metrics()).attempts == {"IN_FLIGHT": 5} and await store.attempt_count() == 5
    assert await store.finish_attempts([Finish(claim=c, result=_result(T0 + 1), status=Status.DISPATCHED)
                                        for c in claims[:2]]) == [True, True]
    replay = await store.start_replay(ds[0], T0 + 2)
    assert replay > ids[-1]
    listed = await store.attempts()
    assert [(a.id, a.outcome, a.started_at, a.finished_at) for a in listed] == [
        (ids[0], "SUCCESS", T0, T0 + 1), (ids[1], "SUCCESS", T0, T0 + 1), (ids[2], None, T0, None),
        (ids[3], None, T0, None), (ids[4], None, T0, None), (replay, None, T0 + 2, None)]
    assert (await store.metrics()).attempts == {"SUCCESS": 2, "IN_FLIGHT": 4}
    assert await store.release_expired_leases(T0 + 60) == ds[2:]
    assert [(a.id, a.number, a.outcome, a.finished_at, a.error is not None) for a in await store.attempts()][2:5] == [
        (i, 1, "INTERRUPTED", T0 + 60, True) for i in ids[2:]]
    again = await _claim(store, ds[2], at=T0 + 61)
    assert (again.number, again.attempt_id > replay) == (2, True)
    assert [(a.id, a.number, a.outcome) for a in await store.attempts(ds[2])] == [
        (ids[2], 1, "INTERRUPTED"), (again.attempt_id, 2, None)]


async def test_a_group_commit_of_ordered_heads_moves_each_queue_before_anything_reads_it(store: StoreContract) -> None:
    """Ordered heads of several queues finished in one group commit (PostgreSQL: in the dispatcher's
    transaction each promotion's writes go with the next finish's statements, the last one's before the
    call returns): every queue's next head is eligible to the reads that follow in the same transaction;
    a blocking failure keeps its queue, a retry its head. Alone (no transaction) the same."""
    for in_tx in (False, True):
        q = f"t{int(in_tx)}"
        pairs = {n: (await _delivery(store, 10 * n + 100 * in_tx, queue=f"{q}{n}"),
                     await _delivery(store, 10 * n + 100 * in_tx + 1, queue=f"{q}{n}")) for n in (1, 2, 3, 4, 5)}
        claims = {c.delivery_id: c for c in await store.claim([(h, T0 + 60) for h, _ in pairs.values()],
                                                               token="me:9", now=T0)}
        fail = {"status": Status.FAILED, "reason": "exhausted", "error": "HTTP 500", "ordered": True}
        finishes = [Finish(claim=claims[pairs[1][0]], result=_result(T0 + 1), status=Status.DISPATCHED, ordered=True),
                    Finish(claim=claims[pairs[2][0]], result=_result(T0 + 1), status=Status.DISPATCHED, ordered=True),
                    Finish(claim=claims[pairs[3][0]], result=_result(T0 + 1, "HTTP_ERROR", 500), **fail),
                    Finish(claim=claims[pairs[4][0]], result=_result(T0 + 1, "HTTP_ERROR", 500), block=True, **fail),
                    Finish(claim=claims[pairs[5][0]], result=_result(T0 + 1, "HTTP_ERROR", 503),
                           status=Status.RETRYING, next_at=T0 + 90, error="HTTP 503", ordered=True)]
        finishes.reverse()  # the last one promotes: its writes are the last the call sends
        queues = [f"{q}{n}" for n in pairs]
        want = {f"{q}1": pairs[1][1], f"{q}2": pairs[2][1], f"{q}3": pairs[3][1], f"{q}4": None, f"{q}5": None}
        async with store.tx() if in_tx else contextlib.nullcontext():
            assert await store.finish_attempts(finishes) == [True] * 5
            heads = await store.queue_heads(queues, T0 + 1)
            assert {k: h and h[0] for k, h in heads.items()} == want
        assert {k: h and h[0] for k, h in (await store.queue_heads(queues, T0 + 1)).items()} == want
        assert (await store.queue_head(f"{q}5", T0 + 90))[0] == pairs[5][0]  # the retrying head, when due


async def test_dead_owners_hold_leases_without_a_live_mark(store: StoreContract) -> None:
    """On PostgreSQL a lease owner is alive while a store it registered on stays open; on SQLite a
    file has one owner and nobody to watch."""
    d1, d2 = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in (1, 2)]
    await _claim(store, d1, token="gone:1")
    await _claim(store, d2, token="here:1")
    await store.register_owner("here")
    assert await store.dead_owners() == (["gone"] if isinstance(store, PgStore) else [])
    await store.register_owner("gone")
    assert await store.dead_owners() == []
    assert await store.release_leases(T0, ending_by=float("inf"), owner="gone", error="x") == [d1]


@pytest.mark.postgres
async def test_workers_registering_one_tenant_at_once_both_succeed(pg_url: str) -> None:
    """Every serve worker of a cluster registers its config file's tenants and providers when it
    starts. Two stores inserting the same ids at once: one insert each, no unique violation."""
    a, b = await open_store(pg_url, pool_size=2), await open_store(pg_url, pool_size=2)
    try:
        ids = [f"t{n}" for n in range(20)]
        made = await asyncio.gather(*(s.add_tenant(i, i, T0) for i in ids for s in (a, b)))
        assert [made[2 * n] + made[2 * n + 1] for n in range(len(ids))] == [1] * len(ids)
        made = await asyncio.gather(*(s.add_provider(i, i, T0) for i in ids for s in (b, a)))
        assert [made[2 * n] + made[2 * n + 1] for n in range(len(ids))] == [1] * len(ids)
        assert [t.id for t in await a.tenants()] == sorted(ids)
    finally:
        await a.close()
        await b.close()


@pytest.mark.postgres
async def test_a_live_owner_whose_lock_session_was_lost_takes_its_lock_again(pg_url: str) -> None:
    """The session holding a worker's owner lock ends while the worker lives (a restarted server, a
    dropped connection): its next sweep's ``register_owner`` opens a new one and locks every owner
    registered on the store again, so the other workers stop taking it for dead."""
    store = await open_store(pg_url, pool_size=3)
    try:
        await store.add_tenant("t", "Tenant", T0)
        await store.add_provider("p", "Provider", T0)
        await store.insert_config("c", "t", "p", "S", SNAP, T0)
        await store.insert_activity("a1", "t", "TASK", "S", {"id": "a1", "type": "TASK", "status": "PENDING"}, T0)
        for n, owner in ((1, "here"), (2, "also")):
            await _claim(store, await _delivery(store, n, queue=f"q{n}", ordered=False), token=f"{owner}:1")
            await store.register_owner(owner)
        assert await store.dead_owners() == []
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:  # the server drops it
            killed = await (await admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
                " AND classid = %s::bigint::oid AND database = (SELECT oid FROM pg_database WHERE datname ="
                " current_database()) GROUP BY pid", (OWNER_LOCK,))).fetchall()
        assert killed == [(True,)]
        assert await store.dead_owners() == ["also", "here"]
        await store.register_owner("here")
        assert await store.dead_owners() == []
    finally:
        await store.close()


async def test_failed_skip_or_block_force_retry_and_skip(store: StoreContract) -> None:
    d1, d2 = await _delivery(store, 1), await _delivery(store, 2)
    await _failed(store, d1, block=True)
    d = await store.delivery(d1)
    assert (d.status, d.failed_reason, d.blocks_queue) == (Status.FAILED, "exhausted", True)
    assert (await store.activity("a1")).can_force_retry
    assert await store.due_candidates(T0, 10) == [] and await store.blocked_heads() == [(d1, "c")]
    assert await store.failed_ids() == [d1] and await store.failed_ids(reason="other") == [] and await store.failed_ids(
        config_id="c", since=T0, until=T0) == [d1]
    assert await store.recent_failures() == [(d1, "c", "exhausted", "HTTP 500")]
    skipped = await store.skip(d1, T0 + 1)
    assert skipped.status is Status.FAILED and not skipped.blocks_queue
    assert await store.due_candidates(T0 + 1, 10) == [(d2, "c", 1)]
    with pytest.raises(InvalidTransition):
        await store.skip(d1, T0 + 2)  # no longer blocks its queue
    with pytest.raises(NotFound):
        await store.skip(999, T0)
    again = await store.force_retry(d1, T0 + 3, ordered=True, config_version=1)
    assert (again.status, again.budget_attempts, again.failed_reason) == (Status.READY, 0, None)
    assert again.eligible  # back at its original place: ahead of d2, which waits again
    assert await store.due_candidates(T0 + 3, 10) == [(d1, "c", 1)] and not (await store.delivery(d2)).eligible


async def test_force_retry_only_from_failed_as_the_table_says(store: StoreContract) -> None:
    assert {src for (src, dst) in TRANSITIONS if dst is Status.READY} == {Status.FAILED}
    d1 = await _delivery(store, 1, ordered=False)
    for status in (Status.READY, Status.DISPATCHED):
        if status is Status.DISPATCHED:
            assert await store.mark_dispatched(await _claim(store, d1), _result(T0), ordered=False)
        with pytest.raises(InvalidTransition):
            await store.force_retry(d1, T0, ordered=False)
        assert (await store.delivery(d1)).status is status
    with pytest.raises(NotFound):
        await store.force_retry(999, T0, ordered=False)


async def test_a_delivery_of_a_deleted_configuration_is_not_force_retried(store: StoreContract) -> None:
    """Nothing would send it: READY, it would wait for ever (the check is the store's, in its transaction,
    so no delete slips between an engine's read of the configuration and the retry)."""
    d1 = await _delivery(store, 1)
    await _failed(store, d1)
    await store.delete_config("c", T0 + 1)
    with pytest.raises(ConfigDeleted, match=f"delivery {d1} cannot be retried: its configuration was deleted"):
        await store.force_retry(d1, T0 + 2, ordered=True)
    assert (await store.delivery(d1)).status is Status.FAILED


async def test_every_transition_of_the_table_happens_through_its_operation(store: StoreContract) -> None:
    """Each (from, to) pair of the table, reached through the named operation that makes it."""
    seen: set[tuple[Status, Status]] = set()

    async def fresh(n: int) -> int:
        return await _delivery(store, n, queue=f"q{n}", ordered=False)

    async def step(did: int, op: Callable[[Claim], Awaitable[bool]]) -> None:
        before = (await store.delivery(did)).status
        assert await op(await _claim(store, did, at=(await store.delivery(did)).next_attempt_at))
        seen.add((before, (await store.delivery(did)).status))

    async def retry(c: Claim) -> bool:
        return await store.schedule_retry(c, _result(T0, "TIMEOUT", None), T0 + 1, "timeout")

    async def ok(c: Claim) -> bool:
        return await store.mark_dispatched(c, _result(T0), ordered=False)

    async def fail(c: Claim) -> bool:
        return await store.mark_failed(c, _result(T0, "HTTP_ERROR", 400), "permanent_status", "HTTP 400",
                                       ordered=False, block=False)

    for n, ops in enumerate(([ok], [retry], [fail], [retry, ok], [retry, retry], [retry, fail]), start=1):
        did = await fresh(n)
        for op in ops:
            await step(did, op)
    did = await fresh(99)
    await step(did, fail)
    await store.force_retry(did, T0 + 5, ordered=False)
    seen.add((Status.FAILED, (await store.delivery(did)).status))
    assert seen == set(TRANSITIONS)


async def test_the_cycle_view_answers_what_its_operations_answer(store: StoreContract) -> None:
    """One call for the reads that open a dispatch cycle (PostgreSQL sends them in one pipeline): each
    part equals what its own operation answers; a lease that ended is reported where the backend checks
    it (PostgreSQL), never missed (SQLite leaves the check to the release itself)."""
    await store.insert_config("d", "t", "p", "S", SNAP, T0)  # never activated: paused
    await store.save_circuit("c", circuit=Circuit.OPEN, circuit_until=T0 + 30, now=T0)
    did = await _delivery(store, 1, ordered=False)
    await _claim(store, did)  # its lease ends at T0 + 60
    view = await store.cycle_view(T0 + 59, ["c", "nope"], health=True)
    assert view.paused == await store.paused_configs() == ["d"]
    assert view.configs == {"c": await store.config("c"), "nope": None}
    assert view.health == await store.health_rows() and [h.circuit for h in view.health] == [Circuit.OPEN]
    ended = await store.cycle_view(T0 + 60, [], health=False)
    assert (ended.configs, ended.health, ended.leases_ended) == ({}, None, True)
    assert view.leases_ended is not isinstance(store, PgStore)  # PostgreSQL asks; SQLite's release checks itself
    assert await store.release_expired_leases(T0 + 60) == [did]


async def test_several_configurations_and_queue_heads_read_at_once(store: StoreContract) -> None:
    """What the group commit reads together (PostgreSQL: one pipeline each, inside its transaction too):
    each answer equals its own operation's, in the order asked, None for what does not exist."""
    await store.insert_config("d", "t", "p", "S", SNAP, T0)
    assert await store.configs_by_id([]) == {} and await store.queue_heads([], T0) == {}
    want = {cid: await store.config(cid) for cid in ("d", "nope", "c")}
    d1, d2 = await _delivery(store, 1, queue="q1"), await _delivery(store, 2, queue="q1")
    d3 = await _delivery(store, 3, queue="q2", at=T0 + 5)
    for in_tx in (False, True):  # on its own, then first in a transaction (PostgreSQL: with its BEGIN)
        async with store.tx() if in_tx else contextlib.nullcontext():
            got = await store.configs_by_id(["d", "nope", "c"])
            heads = await store.queue_heads(["q2", "q1", "q3"], T0)
            assert list(got) == ["d", "nope", "c"] and got == want
            assert list(heads) == ["q2", "q1", "q3"] and heads == {"q2": None, "q1": (d1, "c", 1), "q3": None}
            assert heads["q1"] == await store.queue_head("q1", T0)
            assert await store.configs_by_id(["c"]) == {"c": want["c"]}
            assert await store.queue_heads(["q2"], T0 + 5) == {"q2": (d3, "c", 1)}
    assert (await store.delivery(d2)).status is Status.READY


async def test_leases_expire_are_released_by_owner_and_replays_leave_status_alone(store: StoreContract) -> None:
    d1, d2 = [await _delivery(store, n, queue=f"q{n}", ordered=False) for n in (1, 2)]
    await _claim(store, d1, token="me:1")
    await _claim(store, d2, token="you:1")
    assert await store.next_wakeup() == T0 + 60  # only leases are left: the earliest end
    assert await store.release_expired_leases(T0 + 59) == []
    assert await store.release_own_leases(T0 + 1, "me") == [d1]
    assert (await store.delivery(d1)).lease_until is None and (await store.delivery(d2)).lease_until == T0 + 60
    assert [a.outcome for a in await store.attempts(d1)] == ["INTERRUPTED"]
    assert await store.release_leases(T0 + 2, ending_by=T0 + 59, error="x") == []
    assert await store.release_expired_leases(T0 + 60) == [d2]
    assert (await store.delivery(d2)).next_attempt_at == T0 + 60
    d3 = await _delivery(store, 3, queue="q3", ordered=False)
    await _claim(store, d3, token="ghost:1")
    assert await store.release_dead_owners_leases(T0 + 3) == [d3] and await store.in_flight() == 0
    with pytest.raises(InvalidTransition):
        await store.start_replay(d1, T0)  # READY: only DISPATCHED deliveries are replayed
    assert await store.mark_dispatched(await _claim(store, d1, at=T0 + 4), _result(T0 + 4), ordered=False)
    attempt = await store.start_replay(d1, T0 + 5)
    await store.finish_replay(attempt, _result(T0 + 6, "HTTP_ERROR", 500))
    replay = (await store.attempts(d1))[-1]
    assert (replay.id, replay.replay, replay.outcome, replay.number) == (attempt, True, "HTTP_ERROR", 3)
    assert (await store.delivery(d1)).status is Status.DISPATCHED
    with pytest.raises(NotFound):
        await store.start_replay(999, T0)


# -- endpoint health, notifications, reports, keys, housekeeping --------------------------------


async def test_health_and_notifications(store: StoreContract) -> None:
    assert await store.count_outcome("c", ok=False, now=T0) == Streak(1, T0)  # a first row
    await store.save_circuit("c", circuit=Circuit.OPEN, circuit_until=T0 + 30, now=T0)
    assert await store.count_outcome("c", ok=False, now=T0 + 1) == Streak(2, T0)  # adds to what is stored
    assert not await store.take_probe("c", now=T0 + 29, until=T0 + 90)  # still cooling down
    assert await store.take_probe("c", now=T0 + 30, until=T0 + 90)
    assert not await store.take_probe("c", now=T0 + 31, until=T0 + 91)  # taken: one probe at a time
    [h] = await store.health_rows()
    assert (h.config_id, h.circuit, h.circuit_until, h.consecutive_failures, h.failing_since) == (
        "c", Circuit.HALF_OPEN, T0 + 90, 2, T0)
    assert await store.take_probe("c", now=T0 + 90, until=T0 + 150)  # its taker never reported: taken again
    await store.save_circuit("c", circuit=Circuit.CLOSED, circuit_until=None, now=T0 + 91)
    assert not await store.take_probe("c", now=T0 + 200, until=T0 + 260)  # closed: nothing to probe
    assert await store.count_outcome("c", ok=True, now=T0 + 92) == Streak(0, None)
    assert await store.count_outcome("c", ok=False, now=T0 + 93) == Streak(1, T0 + 93)
    assert not await store.take_probe("other", now=T0, until=T0 + 60)  # no health stored
    d1 = await _delivery(store, 1, ordered=False)
    assert await store.schedule_retry(await _claim(store, d1), _result(T0 + 1, "HTTP_ERROR", 500), T0 + 2, "x")
    assert await store.mark_dispatched(await _claim(store, d1, at=T0 + 2), _result(T0 + 3), ordered=False)
    assert await store.recent_outcomes("c", T0) == [(T0 + 1, False), (T0 + 3, True)]
    assert await store.recent_outcomes("c", T0 + 2) == [(T0 + 3, True)]
    first = await store.add_notification(at=T0, kind="circuit.opened", config_id="c", message="open")
    await store.add_notification(at=T0 + 1, kind="circuit.closed", config_id=None, message="closed")
    await store.set_notification_delivery(first, "HTTP 200")
    assert [(n.kind, n.delivery) for n in await store.notifications("c")] == [("circuit.opened", "HTTP 200")]
    assert [n.kind for n in await store.notifications()] == ["circuit.opened", "circuit.closed"]
    assert [n.kind for n in await store.latest_notifications(1)] == ["circuit.closed"]


async def test_a_circuit_moves_and_a_configuration_pauses_once_however_many_workers_ask(store: StoreContract) -> None:
    """Workers that saw the same failures each ask for the same change: the first makes it, the others
    get the health as it is stored (to adopt, not to record the change again)."""
    trip = {"source": Circuit.CLOSED, "circuit": Circuit.OPEN}
    assert await store.move_circuit("c", **trip, circuit_until=T0 + 30, now=T0) is None  # no row counts as closed
    other = await store.move_circuit("c", **trip, circuit_until=T0 + 31, now=T0 + 1)
    assert other is not None and (other.circuit, other.circuit_until, other.updated_at) == (Circuit.OPEN, T0 + 30, T0)
    end = {"source": Circuit.HALF_OPEN, "circuit": Circuit.CLOSED, "circuit_until": None}
    assert (await store.move_circuit("c", **end, now=T0 + 30)).circuit is Circuit.OPEN  # no probe taken yet
    assert await store.take_probe("c", now=T0 + 30, until=T0 + 90)
    assert await store.move_circuit("c", **end, now=T0 + 31) is None  # the probe's end, stored by its taker
    late = await store.move_circuit("c", source=Circuit.HALF_OPEN, circuit=Circuit.OPEN, circuit_until=T0 + 92,
                                    now=T0 + 32)
    assert late is not None and (late.circuit, late.circuit_until) == (Circuit.CLOSED, None)
    assert await store.count_outcome("c", ok=False, now=T0 + 33) == Streak(1, T0 + 33)  # the streak is apart
    assert await store.move_circuit("c", **trip, circuit_until=T0 + 63, now=T0 + 33) is None
    [h] = await store.health_rows()
    assert (h.circuit, h.circuit_until, h.consecutive_failures) == (Circuit.OPEN, T0 + 63, 1)
    assert await store.pause_if_active("c", T0 + 34, "auto-disabled: 5 consecutive failed attempts")
    assert not await store.pause_if_active("c", T0 + 35, "auto-disabled: 6 consecutive failed attempts")
    cfg = await store.config("c")
    assert cfg is not None and not cfg.active and cfg.inactive_reason == "auto-disabled: 5 consecutive failed attempts"
    assert cfg.inactive_since == T0 + 34
    await store.delete_config("c", T0 + 36)
    assert not await store.pause_if_active("c", T0 + 37, "auto-disabled")  # deleted: nothing to pause


async def test_console_sessions_are_kept_by_digest_until_they_end_or_are_closed(store: StoreContract) -> None:
    session = ConsoleSession("k1", "d" * 64, "ops (k1)", "t", "csrf-1", T0 + 100)
    await store.open_console_session("a" * 64, session, T0)
    await store.open_console_session("b" * 64, ConsoleSession("k1", "d" * 64, "ops (k1)", "t", "csrf-2", T0 + 50), T0)
    assert await store.console_session("a" * 64, T0 + 99) == session
    assert await store.console_session("a" * 64, T0 + 100) is None  # ended: ignored before the job deletes it
    assert await store.console_session("c" * 64, T0) is None
    await store.close_console_session("a" * 64)
    assert await store.console_session("a" * 64, T0) is None
    await store.close_console_session("a" * 64)  # closed twice (signed out on two workers): nothing to do
    assert await store.expire_console_sessions(T0 + 49) == 0
    assert await store.expire_console_sessions(T0 + 50) == 1
    assert await store.console_session("b" * 64, T0) is None


async def test_reports_metrics_public_ids_and_retention(store: StoreContract) -> None:
    d1, d2 = await _delivery(store, 1), await _delivery(store, 2)
    assert await store.schedule_retry(await _claim(store, d1), _result(T0 + 1, "HTTP_ERROR", 500), T0 + 2, "x")
    assert await store.mark_dispatched(await _claim(store, d1, at=T0 + 2), _result(T0 + 3), ordered=True)
    m = await store.metrics()
    assert m.deliveries["DISPATCHED"] == 1 and m.attempts == {"HTTP_ERROR": 1, "SUCCESS": 1}
    assert m.queue_depth == {"c": 1} and m.latency_count == 2 and m.in_flight == 0
    assert await store.attempt_count() == 2
    assert await store.queue_status_counts() == [("c", "DISPATCHED", 1), ("c", "READY", 1)]
    assert await store.oldest_pending() == (d2, "c", T0)
    assert await store.delivery_tenant(d1) == "t" and await store.delivery_by_public_id("w2") == (d2, "w2", "t")
    assert await store.delivery_by_public_id("nope") is None and await store.public_delivery_ids([d1, d2]) == {d1: "w1",
                                                                                                  d2: "w2"}
    with pytest.raises(NotFound):
        await store.delivery_tenant(999)
    assert await store.delete_old_attempts(T0 + 10) == 1  # the first try of the finished delivery; its last stays
    assert [a.outcome for a in await store.attempts(d1)] == ["SUCCESS"]
    await store.ping()
    assert await store.schema_version() >= 1


async def test_api_keys_keep_only_the_hash(store: StoreContract) -> None:
    await store.add_api_key("key_1", "f" * 64, tenant_id="t", name="ops", now=T0)
    await store.add_api_key("key_2", "e" * 64, tenant_id=None, name=None, now=T0 + 1)
    assert [(k.id, k.tenant_id, k.name, k.revoked_at) for k in await store.api_keys()] == [
        ("key_1", "t", "ops", None), ("key_2", None, None, None)]
    assert await store.api_key_by_hash("f" * 64) == ("key_1", "t") and await store.api_key_by_hash("0" * 64) is None


async def test_transactions_roll_back_together(store: StoreContract) -> None:
    with pytest.raises(RuntimeError):
        async with store.tx():
            await store.add_tenant("gone", "Gone", T0)
            async with store.tx():  # a nested call joins the outer transaction
                await store.add_provider("gone", "Gone", T0)
            raise RuntimeError
    assert await store.tenant("gone") is None and await store.provider("gone") is None


async def test_wal_checkpointer_is_part_of_the_contract(store: StoreContract) -> None:
    ck = store.wal_checkpointer()
    ck.take_over()
    ck.close()


async def test_message_event_batches(store: StoreContract) -> None:
    events = store.events_store()
    assert not await events.has_webhooks()
    await store.insert_config("t@events", "t", None, None, SNAP, T0, kind=ConfigKind.MESSAGE_EVENTS)
    await store.set_config_active("t@events", True, T0)
    assert await events.has_webhooks() and await events.webhooks_free() == []  # no event waits
    assert await events.insert_events("t", [{"n": 1}, {"n": 2}, {"n": 3}], T0) == [1, 2, 3]
    assert [c.id for c in await events.webhooks_free()] == ["t@events"]
    assert await events.pending("t", 2) == (2, T0)
    bid, did, size = await events.form_batch(account_id="t", config_id="t@events", config_version=1, size=2, now=T0, id_key="k")
    assert size == 2 and await store.batch_events(bid) == [{"n": 1}, {"n": 2}]
    assert await events.webhooks_free() == []  # its queue holds the batch: no second one is formed meanwhile
    batch = await events.batch(bid)
    assert (batch.status, batch.size, batch.delivery_id) == (Status.READY, 2, did)
    assert [b.id for b in await events.batches("t")] == [bid] and await events.batches("t", after_id=bid) == []
    assert (await events.counts("t"))["READY"] == 1 and (await events.counts())["unbatched_events"] == 1
    with pytest.raises(NotFound):
        await events.batch(999)


async def test_no_batch_is_formed_for_a_webhook_paused_or_deleted_since_it_was_read(store: StoreContract) -> None:
    """form_due_batches reads the free webhooks, then forms their batches: one deleted in between would
    get a READY batch nothing sends; one paused, a batch formed while it is paused."""
    events = store.events_store()
    await store.insert_config("t@events", "t", None, None, SNAP, T0, kind=ConfigKind.MESSAGE_EVENTS)
    await store.set_config_active("t@events", True, T0)
    await events.insert_events("t", [{"n": 1}], T0)
    assert [c.id for c in await events.webhooks_free()] == ["t@events"]
    await store.set_config_active("t@events", False, T0, "manual")
    form = dict(account_id="t", config_id="t@events", config_version=1, size=2, now=T0, id_key="k")
    assert await events.form_batch(**form) is None
    await store.delete_config("t@events", T0)
    assert await events.form_batch(**form) is None
    assert await store.deliveries(config_id="t@events") == [] and (await events.counts())["unbatched_events"] == 1


async def test_keys_are_revoked_and_rotated_once(store: StoreContract) -> None:
    await store.add_api_key("key_1", "f" * 64, tenant_id="t", name="ops", now=T0)
    assert await store.replace_api_key("key_1", "key_2", "e" * 64, T0 + 1)
    assert await store.api_key_by_hash("f" * 64) is None and await store.api_key_by_hash("e" * 64) == ("key_2", "t")
    assert [(k.id, k.name, k.revoked_at) for k in await store.api_keys()] == [("key_1", "ops", T0 + 1),
                                                                            ("key_2", "ops", None)]
    assert not await store.replace_api_key("key_1", "key_3", "d" * 64, T0 + 2)  # revoked: nothing changes
    assert await store.revoke_api_key("key_2", T0 + 3) and not await store.revoke_api_key("key_2", T0 + 4)
    assert not await store.revoke_api_key("nope", T0) and len(await store.api_keys()) == 2


async def test_latest_time_is_the_last_thing_that_happened(store: StoreContract) -> None:
    assert await store.latest_time() == T0 + 1  # the second activity
    d1 = await _delivery(store, 1, at=T0 + 5)
    assert await store.schedule_retry(await _claim(store, d1, at=T0 + 6), _result(T0 + 7, "TIMEOUT", None),
                                      T0 + 999, "timeout")
    assert await store.latest_time() == T0 + 7  # a due time in the future is a schedule, not an event


async def test_console_pages_and_ordered_queues(store: StoreContract) -> None:
    d1, d2, d3 = [await _delivery(store, n, at=T0 + n) for n in (1, 2, 3)]
    u = await _delivery(store, 4, queue="free", ordered=False, at=T0 + 4)
    await _failed(store, d1, block=True, at=T0 + 5)
    page, cursor = await store.console_deliveries(DeliveryFilter(config_ids=("c",)), limit=2)
    assert [d.id for d in page] == [d1, u] and cursor is not None  # FAILED first, then READY newest first
    rest, end = await store.console_deliveries(DeliveryFilter(config_ids=("c",)), cursor=cursor, limit=2)
    assert [d.id for d in rest] == [d3, d2] and end is None
    ready, _ = await store.console_deliveries(DeliveryFilter(config_ids=("c",), status=Status.READY,
                                                             created_to=T0 + 3))
    assert [d.id for d in ready] == [d2]
    [q] = await store.ordered_queues(["c"])
    assert (q.queue, q.backlog, q.head_id, q.head_status, q.next_attempt_at) == ("c", 3, d1, Status.FAILED, None)
    assert await store.ordered_queues([]) == [] and await store.ordered_queues(["other"]) == []
    await store.bench_fill_deliveries(tenant_id="t", config_id="c", config_version=1, count=10, failed_every=5,
                                      now=T0 + 10)
    counts = await store.counts()
    assert (counts["DISPATCHED"], counts["FAILED"]) == (8, 3)
    await store.bench_fill_deliveries(tenant_id="t", config_id="c", config_version=1, count=5, failed_every=0,
                                      now=T0 + 20, pending=True)
    assert len(await store.due_candidates(T0 + 20.004, 10)) == 4 + 1  # four of them due, and the unordered one


async def test_idempotency_keys_reserve_complete_release_expire(store: StoreContract) -> None:
    keys = store.idempotency_store()
    window = {"expired_before": T0 - 100, "abandoned_before": T0 - 10}
    assert await keys.reserve("t", "k1", "fp1", T0, **window) is None
    held = await keys.reserve("t", "k1", "fp2", T0 + 1, **window)
    assert held is not None and (held.fingerprint, held.status) == ("fp1", None)  # in progress
    await keys.complete("t", "k1", status=201, body='{"id": 1}', location="/api/x")
    done = await keys.reserve("t", "k1", "fp1", T0 + 2, **window)
    assert done is not None and (done.status, done.body, done.location) == (201, '{"id": 1}', "/api/x")
    assert await keys.reserve("other", "k1", "fp1", T0, **window) is None  # scoped per tenant
    await keys.release("other", "k1")
    assert await keys.reserve("other", "k1", "fp1", T0, **window) is None  # released: free again
    assert await keys.reserve("t", "k1", "fp3", T0 + 200, expired_before=T0 + 100,
                              abandoned_before=T0 + 190) is None  # expired: reserved anew
    assert await keys.count() == 2 and await keys.delete_expired(T0 + 150) == 1 and await keys.count() == 1


async def test_a_late_release_frees_only_the_reservation_it_was_for(store: StoreContract) -> None:
    """A request's reservation is freed after it failed, maybe late (the database was down then): by
    that time the reservation may have been abandoned and the key reserved again by the client's retry,
    on another worker. The late release must not free that one, or a third retry would run the request
    a second time beside it."""
    keys = store.idempotency_store()
    assert await keys.reserve("t", "k1", "fp", T0, expired_before=T0 - 100, abandoned_before=T0 - 60) is None
    assert await keys.reserve("t", "k1", "fp", T0 + 61, expired_before=T0 - 100,
                              abandoned_before=T0 + 1) is None  # abandoned: the retry holds it now
    await keys.release("t", "k1", reserved_at=T0)  # the first request's late release
    held = await keys.reserve("t", "k1", "fp", T0 + 62, expired_before=T0 - 100, abandoned_before=T0 + 2)
    assert held is not None and held.status is None  # the retry's reservation stays: "still running"
    await keys.release("t", "k1", reserved_at=T0 + 61)
    assert await keys.reserve("t", "k1", "fp", T0 + 63, expired_before=T0 - 100, abandoned_before=T0 + 3) is None
