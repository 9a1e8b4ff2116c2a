"""The store contract, run against every backend: each named operation, each transition, each guard.

``BACKENDS`` maps a name to a factory of an empty store on a fresh database; a second backend
(PostgreSQL) is one more entry and then has to pass everything here unchanged.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatchsim.engine import (TRANSITIONS, ActivityFilter, Circuit, ConfigKind, InvalidTransition, NotFound, Status,
                                Store, StoreContract)
from dispatchsim.engine.events_store import EventsStore
from dispatchsim.engine.store import AttemptResult, Claim
from dispatchsim.engine.store_contract import EventsStoreContract



@dataclass(frozen=True)
class Backend:
    open: Callable[[Path], StoreContract]  #: an empty store on a fresh database in the given folder
    events: Callable[[StoreContract], EventsStoreContract]  #: its message-event operations


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(open=lambda tmp: Store(tmp / "contract.db"), events=EventsStore),  # type: ignore[arg-type]
}
T0 = 1_000_000.0
SNAP = {"endpoint_url": "http://127.0.0.1:9/h"}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Iterator[StoreContract]:
    s = backend.open(tmp_path)
    s.add_tenant("t", "Tenant", T0)
    s.add_provider("p", "Provider", T0)
    s.insert_config("c", "t", "p", "S", SNAP, T0)
    s.set_config_active("c", True, T0)
    s.insert_activity("a1", "t", "TASK", "S", {"id": "a1", "type": "TASK", "status": "PENDING"}, T0)
    s.insert_activity("a2", "t", "TASK", "S", {"id": "a2", "type": "TASK", "status": "DONE"}, T0 + 1)
    yield s
    s.close()


def _delivery(s: StoreContract, n: int, *, queue: str = "c", ordered: bool = True, at: float = T0) -> int:
    return s.insert_delivery(webhook_id=f"w{n}", activity_id="a1", config_id="c", config_version=1, queue=queue,
                             ordered=ordered, now=at)


def _claim(s: StoreContract, did: int, *, at: float = T0, token: str = "me:1") -> Claim:
    [claim] = s.claim([(did, at + 60)], token=token, now=at)
    return claim


def _result(at: float, outcome: str = "SUCCESS", code: int | None = 200) -> AttemptResult:
    return AttemptResult(finished_at=at, outcome=outcome, status_code=code, latency=0.01)


def _failed(s: StoreContract, did: int, *, block: bool = False, at: float = T0) -> None:
    assert s.mark_failed(_claim(s, did, at=at), _result(at, "HTTP_ERROR", 500), "exhausted", "HTTP 500",
                         ordered=True, block=block)


# -- the contract itself ------------------------------------------------------------------


def test_the_contract_lists_every_operation() -> None:
    """Every public operation of a backend is in the contract, and the backends implement all of it."""
    sqlite_only = {"check", "migrate"}  # opening a file: SQLite's, not an operation the engine calls
    for impl, contract in ((Store, StoreContract), (EventsStore, EventsStoreContract)):
        assert issubclass(impl, contract) and not impl.__abstractmethods__
        public = {n for n, _ in inspect.getmembers(impl) if not n.startswith("_")}
        listed = {n for n, _ in inspect.getmembers(contract) if not n.startswith("_")}
        assert public - sqlite_only == listed
        for name in listed - {"schema_version"}:
            want = inspect.signature(getattr(contract, name)).parameters
            have = inspect.signature(getattr(impl, name)).parameters
            assert list(have) == list(want), name
            assert [p.kind for p in have.values()] == [p.kind for p in want.values()], name


# -- tenants, providers, configurations -----------------------------------------------------


def test_tenants_and_providers(store: StoreContract) -> None:
    store.add_tenant("b", "B", T0)
    assert [t.id for t in store.tenants()] == ["b", "t"]
    assert store.tenant("t").name == "Tenant" and store.tenant("nope") is None
    assert store.provider("p").created_at == T0 and store.provider("nope") is None
    assert [p.to_json() for p in store.providers()] == [{"id": "p", "name": "Provider",
                                                         "created_at": store.provider("p").to_json()["created_at"]}]


def test_configurations_versions_activation_and_deletion(store: StoreContract) -> None:
    cfg = store.config("c")
    assert (cfg.kind, cfg.version, cfg.active, cfg.deleted) == (ConfigKind.ACTIVITIES, 1, True, False)
    assert store.new_config_version("c", {**SNAP, "x": 1}, T0 + 5) == 2
    assert store.snapshot("c", 1) == SNAP and store.snapshot("c", 2)["x"] == 1
    with pytest.raises(NotFound):
        store.snapshot("c", 3)
    assert store.active_configs("t", "S") == [("c", 2)] and store.active_configs("t", "OTHER") == []
    store.set_config_active("c", False, T0 + 6, "manual")
    cfg = store.config("c")
    assert (cfg.active, cfg.inactive_reason, cfg.inactive_since) == (False, "manual", T0 + 6)
    assert store.paused_configs() == ["c"] and store.inactive_configs() == [("c", "manual", T0 + 6)]
    assert store.active_configs("t", "S") == []
    store.insert_config("t@events", "t", None, None, SNAP, T0, kind=ConfigKind.MESSAGE_EVENTS)
    assert [c.id for c in store.configs()] == ["c"]
    assert [c.id for c in store.configs("t", kind=None)] == ["c", "t@events"]
    assert store.configs("other") == []
    store.delete_config("c", T0 + 7)
    assert store.config("c").deleted and store.configs() == []
    for op in (lambda: store.delete_config("c", T0), lambda: store.set_config_active("c", True, T0),
               lambda: store.new_config_version("c", SNAP, T0)):
        with pytest.raises(NotFound):
            op()


# -- activities -------------------------------------------------------------------------------


def test_activities_results_once_and_pages(store: StoreContract) -> None:
    a = store.activity("a1")
    assert (a.id, a.tenant_id, a.type, a.channel, a.payload["status"], a.result) == ("a1", "t", "TASK", "S",
                                                                                     "PENDING", None)
    assert not a.can_force_retry
    with pytest.raises(NotFound):
        store.activity("nope")
    assert store.set_result("a1", {"status": "COMPLETED"}) is None
    assert store.set_result("a1", {"status": "FAILED"}) == {"status": "COMPLETED"}  # the guard: first one stays
    assert store.activity("a1").result == {"status": "COMPLETED"}
    with pytest.raises(NotFound):
        store.set_result("nope", {})
    assert store.activity_ids() == ["a1", "a2"] and store.next_activity_seq() == 3
    assert store.activity_tenant("a2") == "t"
    with pytest.raises(NotFound):
        store.activity_tenant("nope")
    page = store.activity_page(ActivityFilter(tenant_id="t"), limit=1)
    assert [aid for _, aid in page] == ["a1"]
    assert [aid for _, aid in store.activity_page(ActivityFilter(), after_seq=page[0][0])] == ["a2"]
    assert [aid for _, aid in store.activity_page(ActivityFilter(status="DONE"))] == ["a2"]
    assert [aid for _, aid in store.activity_page(ActivityFilter(created_from=T0 + 1))] == ["a2"]
    assert [aid for _, aid in store.activity_page(ActivityFilter(created_to=T0 + 1))] == ["a1"]
    assert store.activity_page(ActivityFilter(channel="OTHER")) == []
    _delivery(store, 1)
    assert [aid for _, aid in store.activity_page(ActivityFilter(dispatch_status="READY"))] == ["a1"]


# -- deliveries and the dispatch cycle --------------------------------------------------------


def test_an_ordered_queue_has_one_claimable_head(store: StoreContract) -> None:
    d1, d2, d3 = (_delivery(store, n) for n in (1, 2, 3))
    u = _delivery(store, 4, queue="free", ordered=False)
    assert [row.status for row in store.deliveries()] == [Status.READY] * 4
    assert [(r.holds, r.eligible) for r in store.deliveries()] == [(True, True), (True, False), (True, False),
                                                                   (False, True)]
    assert store.due_candidates(T0, 10) == [(d1, "c", 1), (u, "c", 1)]
    assert store.due_candidates(T0 - 1, 10) == []
    assert store.due_candidates(T0, 10, exclude_configs=["c"]) == []
    claim = _claim(store, d1)
    assert (claim.number, claim.webhook_id, claim.activity_id, claim.queue) == (1, "w1", "a1", "c")
    assert store.claim([(d1, T0 + 60)], token="other:1", now=T0) == []  # leased: nobody else gets it
    assert store.claim([(d2, T0 + 60)], token="other:1", now=T0) == []  # not the head
    assert store.in_flight() == 1 and store.delivery(d1).lease_until == T0 + 60
    assert store.due_candidates(T0, 10) == [(u, "c", 1)] and store.next_wakeup() == T0
    assert store.mark_dispatched(claim, _result(T0 + 1), ordered=True)
    assert store.delivery(d1).status is Status.DISPATCHED and store.delivery(d1).dispatched_at == T0 + 1
    assert store.due_candidates(T0 + 1, 10) == [(d2, "c", 1), (u, "c", 1)]  # the next one is the head
    assert [a.outcome for a in store.attempts(d1)] == ["SUCCESS"] and store.attempt_count("SUCCESS") == 1
    assert store.deliveries(status=Status.READY, queue="c") == [store.delivery(d2), store.delivery(d3)]
    assert [d.id for d in store.deliveries(after_id=d2, limit=1)] == [d3]
    assert store.counts() == {"READY": 3, "RETRYING": 0, "DISPATCHED": 1, "FAILED": 0}
    with pytest.raises(NotFound):
        store.delivery(999)


def test_retry_keeps_the_head_and_a_lost_lease_refuses_every_finish(store: StoreContract) -> None:
    d1, d2 = _delivery(store, 1), _delivery(store, 2)
    claim = _claim(store, d1)
    assert store.schedule_retry(claim, _result(T0 + 1, "HTTP_ERROR", 503), T0 + 61, "HTTP 503")
    d = store.delivery(d1)
    assert (d.status, d.next_attempt_at, d.last_error, d.budget_attempts) == (Status.RETRYING, T0 + 61, "HTTP 503", 1)
    assert store.due_candidates(T0 + 60, 10) == [] and store.next_wakeup() == T0 + 61
    assert store.due_candidates(T0 + 61, 10) == [(d1, "c", 1)]  # still the head; d2 waits
    for finish in (lambda: store.mark_dispatched(claim, _result(T0 + 2), ordered=True),
                   lambda: store.schedule_retry(claim, _result(T0 + 2), T0 + 99, "x"),
                   lambda: store.mark_failed(claim, _result(T0 + 2), "exhausted", "x", ordered=True, block=False)):
        assert finish() is False  # the lease is gone: the stale claim changes nothing
    assert store.delivery(d1).status is Status.RETRYING and store.delivery(d2).eligible is False
    claim2 = _claim(store, d1, at=T0 + 61)
    assert claim2.number == 2 and claim2.budget_attempts == 1
    assert store.mark_dispatched(claim2, _result(T0 + 62), ordered=True)
    assert [a.number for a in store.attempts(d1)] == [1, 2] and store.attempts(d1)[-1].next_attempt_at is None


def test_failed_skip_or_block_force_retry_and_skip(store: StoreContract) -> None:
    d1, d2 = _delivery(store, 1), _delivery(store, 2)
    _failed(store, d1, block=True)
    d = store.delivery(d1)
    assert (d.status, d.failed_reason, d.blocks_queue) == (Status.FAILED, "exhausted", True)
    assert store.activity("a1").can_force_retry
    assert store.due_candidates(T0, 10) == [] and store.blocked_heads() == [(d1, "c")]
    assert store.failed_ids() == [d1] and store.failed_ids(reason="other") == [] and store.failed_ids(
        config_id="c", since=T0, until=T0) == [d1]
    assert store.recent_failures() == [(d1, "c", "exhausted", "HTTP 500")]
    skipped = store.skip(d1, T0 + 1)
    assert skipped.status is Status.FAILED and not skipped.blocks_queue
    assert store.due_candidates(T0 + 1, 10) == [(d2, "c", 1)]
    with pytest.raises(InvalidTransition):
        store.skip(d1, T0 + 2)  # no longer blocks its queue
    with pytest.raises(NotFound):
        store.skip(999, T0)
    again = store.force_retry(d1, T0 + 3, ordered=True, config_version=1)
    assert (again.status, again.budget_attempts, again.failed_reason) == (Status.READY, 0, None)
    assert again.eligible  # back at its original place: ahead of d2, which waits again
    assert store.due_candidates(T0 + 3, 10) == [(d1, "c", 1)] and not store.delivery(d2).eligible


def test_force_retry_only_from_failed_as_the_table_says(store: StoreContract) -> None:
    assert {src for (src, dst) in TRANSITIONS if dst is Status.READY} == {Status.FAILED}
    d1 = _delivery(store, 1, ordered=False)
    for status in (Status.READY, Status.DISPATCHED):
        if status is Status.DISPATCHED:
            assert store.mark_dispatched(_claim(store, d1), _result(T0), ordered=False)
        with pytest.raises(InvalidTransition):
            store.force_retry(d1, T0, ordered=False)
        assert store.delivery(d1).status is status
    with pytest.raises(NotFound):
        store.force_retry(999, T0, ordered=False)


def test_every_transition_of_the_table_happens_through_its_operation(store: StoreContract) -> None:
    """Each (from, to) pair of the table, reached through the named operation that makes it."""
    seen: set[tuple[Status, Status]] = set()

    def fresh(n: int) -> int:
        return _delivery(store, n, queue=f"q{n}", ordered=False)

    def step(did: int, op: Callable[[Claim], bool]) -> None:
        before = store.delivery(did).status
        assert op(_claim(store, did, at=store.delivery(did).next_attempt_at))
        seen.add((before, store.delivery(did).status))

    def retry(c: Claim) -> bool:
        return store.schedule_retry(c, _result(T0, "TIMEOUT", None), T0 + 1, "timeout")

    def ok(c: Claim) -> bool:
        return store.mark_dispatched(c, _result(T0), ordered=False)

    def fail(c: Claim) -> bool:
        return store.mark_failed(c, _result(T0, "HTTP_ERROR", 400), "permanent_status", "HTTP 400",
                                 ordered=False, block=False)

    for n, ops in enumerate(([ok], [retry], [fail], [retry, ok], [retry, retry], [retry, fail]), start=1):
        did = fresh(n)
        for op in ops:
            step(did, op)
    did = fresh(99)
    step(did, fail)
    store.force_retry(did, T0 + 5, ordered=False)
    seen.add((Status.FAILED, store.delivery(did).status))
    assert seen == set(TRANSITIONS)


def test_leases_expire_are_released_by_owner_and_replays_leave_status_alone(store: StoreContract) -> None:
    d1, d2 = (_delivery(store, n, queue=f"q{n}", ordered=False) for n in (1, 2))
    _claim(store, d1, token="me:1")
    _claim(store, d2, token="you:1")
    assert store.next_wakeup() == T0 + 60  # only leases are left: the earliest end
    assert store.release_expired_leases(T0 + 59) == []
    assert store.release_own_leases(T0 + 1, "me") == [d1]
    assert store.delivery(d1).lease_until is None and store.delivery(d2).lease_until == T0 + 60
    assert [a.outcome for a in store.attempts(d1)] == ["INTERRUPTED"]
    assert store.release_leases(T0 + 2, ending_by=T0 + 59, error="x") == []
    assert store.release_expired_leases(T0 + 60) == [d2]
    assert store.delivery(d2).next_attempt_at == T0 + 60
    d3 = _delivery(store, 3, queue="q3", ordered=False)
    _claim(store, d3, token="ghost:1")
    assert store.release_dead_owners_leases(T0 + 3) == [d3] and store.in_flight() == 0
    with pytest.raises(InvalidTransition):
        store.start_replay(d1, T0)  # READY: only DISPATCHED deliveries are replayed
    assert store.mark_dispatched(_claim(store, d1, at=T0 + 4), _result(T0 + 4), ordered=False)
    attempt = store.start_replay(d1, T0 + 5)
    store.finish_replay(attempt, _result(T0 + 6, "HTTP_ERROR", 500))
    replay = store.attempts(d1)[-1]
    assert (replay.id, replay.replay, replay.outcome, replay.number) == (attempt, True, "HTTP_ERROR", 3)
    assert store.delivery(d1).status is Status.DISPATCHED
    with pytest.raises(NotFound):
        store.start_replay(999, T0)


# -- endpoint health, notifications, reports, keys, housekeeping --------------------------------


def test_health_and_notifications(store: StoreContract) -> None:
    store.save_health("c", circuit=Circuit.OPEN, circuit_until=T0 + 30, consecutive_failures=3, failing_since=T0,
                      now=T0)
    store.save_health("c", circuit=Circuit.HALF_OPEN, circuit_until=None, consecutive_failures=4,
                      failing_since=T0, now=T0 + 1)
    [h] = store.health_rows()
    assert (h.config_id, h.circuit, h.consecutive_failures) == ("c", Circuit.HALF_OPEN, 4)
    d1 = _delivery(store, 1, ordered=False)
    assert store.schedule_retry(_claim(store, d1), _result(T0 + 1, "HTTP_ERROR", 500), T0 + 2, "x")
    assert store.mark_dispatched(_claim(store, d1, at=T0 + 2), _result(T0 + 3), ordered=False)
    assert store.recent_outcomes("c", T0) == [(T0 + 1, False), (T0 + 3, True)]
    assert store.recent_outcomes("c", T0 + 2) == [(T0 + 3, True)]
    first = store.add_notification(at=T0, kind="circuit.opened", config_id="c", message="open")
    store.add_notification(at=T0 + 1, kind="circuit.closed", config_id=None, message="closed")
    store.set_notification_delivery(first, "HTTP 200")
    assert [(n.kind, n.delivery) for n in store.notifications("c")] == [("circuit.opened", "HTTP 200")]
    assert [n.kind for n in store.notifications()] == ["circuit.opened", "circuit.closed"]
    assert [n.kind for n in store.latest_notifications(1)] == ["circuit.closed"]


def test_reports_metrics_public_ids_and_retention(store: StoreContract) -> None:
    d1, d2 = _delivery(store, 1), _delivery(store, 2)
    assert store.schedule_retry(_claim(store, d1), _result(T0 + 1, "HTTP_ERROR", 500), T0 + 2, "x")
    assert store.mark_dispatched(_claim(store, d1, at=T0 + 2), _result(T0 + 3), ordered=True)
    m = store.metrics()
    assert m.deliveries["DISPATCHED"] == 1 and m.attempts == {"HTTP_ERROR": 1, "SUCCESS": 1}
    assert m.queue_depth == {"c": 1} and m.latency_count == 2 and m.in_flight == 0
    assert store.attempt_count() == 2
    assert store.queue_status_counts() == [("c", "DISPATCHED", 1), ("c", "READY", 1)]
    assert store.oldest_pending() == (d2, "c", T0)
    assert store.delivery_tenant(d1) == "t" and store.delivery_by_public_id("w2") == (d2, "w2", "t")
    assert store.delivery_by_public_id("nope") is None and store.public_delivery_ids([d1, d2]) == {d1: "w1",
                                                                                                  d2: "w2"}
    with pytest.raises(NotFound):
        store.delivery_tenant(999)
    assert store.delete_old_attempts(T0 + 10) == 1  # the first try of the finished delivery; its last stays
    assert [a.outcome for a in store.attempts(d1)] == ["SUCCESS"]
    store.ping()
    assert store.schema_version >= 1


def test_api_keys_keep_only_the_hash(store: StoreContract) -> None:
    store.add_api_key("key_1", "f" * 64, tenant_id="t", name="ops", now=T0)
    store.add_api_key("key_2", "e" * 64, tenant_id=None, name=None, now=T0 + 1)
    assert [(k.id, k.tenant_id, k.name, k.revoked_at) for k in store.api_keys()] == [
        ("key_1", "t", "ops", None), ("key_2", None, None, None)]
    assert store.api_key_by_hash("f" * 64) == ("key_1", "t") and store.api_key_by_hash("0" * 64) is None


def test_transactions_roll_back_together(store: StoreContract) -> None:
    with pytest.raises(RuntimeError), store.tx():
        store.add_tenant("gone", "Gone", T0)
        with store.tx():  # a nested call joins the outer transaction
            store.add_provider("gone", "Gone", T0)
        raise RuntimeError
    assert store.tenant("gone") is None and store.provider("gone") is None


def test_wal_checkpointer_is_part_of_the_contract(store: StoreContract) -> None:
    ck = store.wal_checkpointer()
    ck.take_over()
    ck.close()


def test_message_event_batches(backend: Backend, store: StoreContract) -> None:
    events = backend.events(store)
    assert not events.has_webhooks()
    store.insert_config("t@events", "t", None, None, SNAP, T0, kind=ConfigKind.MESSAGE_EVENTS)
    store.set_config_active("t@events", True, T0)
    assert events.has_webhooks() and events.webhooks_free() == []  # no event waits
    assert events.insert_events("t", [{"n": 1}, {"n": 2}, {"n": 3}], T0) == [1, 2, 3]
    assert [c.id for c in events.webhooks_free()] == ["t@events"]
    assert events.pending("t", 2) == (2, T0)
    bid, did, size = events.form_batch(account_id="t", config_id="t@events", config_version=1, size=2, now=T0)
    assert size == 2 and store.batch_events(bid) == [{"n": 1}, {"n": 2}]
    assert events.webhooks_free() == []  # its queue holds the batch: no second one is formed meanwhile
    batch = events.batch(bid)
    assert (batch.status, batch.size, batch.delivery_id) == (Status.READY, 2, did)
    assert [b.id for b in events.batches("t")] == [bid] and events.batches("t", after_id=bid) == []
    assert events.counts("t")["READY"] == 1 and events.counts()["unbatched_events"] == 1
    with pytest.raises(NotFound):
        events.batch(999)
