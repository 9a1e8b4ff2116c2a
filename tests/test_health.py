"""Endpoint health and recovery on the virtual clock: circuit breaker, auto-disable, bulk recovery, replay."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from dispatchsim.engine import ConfigError, Engine, InvalidTransition

from support import Receiver

ACT = {"channel": "SALESMAN"}


def key(i):
    return {**ACT, "commerceExternalId": f"C{i}"}


async def test_circuit_opens_sends_nothing_while_open_then_probe_closes_it(engine, receiver, setup_config):
    t0 = engine.clock.now()
    receiver.respond = lambda hit, n: ((503, {}, 0) if engine.clock.now() - t0 < 300 else (200, {}, 0))
    await setup_config(receiver.url, retry="reteno", ordering={"mode": "none", "concurrency": 10},
                       circuit_breaker={"window": 60, "failure_rate": 0.5, "min_requests": 4, "cooldown": 120})
    for i in range(6):
        await engine.create_activity("acme", key(i))
    await engine.run_until_idle(max_time=3 * 3600)
    cid = "acme.crm.salesman"
    kinds = [(n["kind"], n["at"]) for n in await engine.notifications(cid)]
    opened = [engine.store.conn.execute("SELECT 1")]  # noqa: F841 - readability
    assert kinds[0] == ("circuit.opened", "2026-04-10T14:30:00.000Z")
    # open 14:30:00 -> 14:32:00 probe (fails: still down) -> open again until 14:34, 14:36 ... until recovery
    times = [round(h.at - t0) for h in receiver.posts()]
    assert times[:6] == [0] * 6  # the first burst that opened the circuit
    probes = times[6:]
    assert probes[:3] == [120, 240, 360]  # one probe per cool-down, nothing in between
    assert kinds[-1][0] == "circuit.closed"
    assert all(d.status == "DISPATCHED" for d in await engine.deliveries())
    assert (await engine.health(cid))["circuit"] == "closed"


async def test_open_circuit_does_not_consume_attempts(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: (503, {}, 0)
    await setup_config(receiver.url, retry={"max_attempts": 3}, ordering={"mode": "none"},
                       circuit_breaker={"window": 600, "failure_rate": 1.0, "min_requests": 2, "cooldown": 3600})
    for i in range(5):
        await engine.create_activity("acme", key(i))
    await engine.run_for(1800)  # within the first cool-down
    ds = await engine.deliveries()
    assert [d.attempts for d in ds] == [1, 1, 1, 1, 1]
    assert [d.status for d in ds] == ["RETRYING"] * 5
    assert len(receiver.posts()) == 5


async def test_auto_disable_after_consecutive_failures_keeps_work_and_notifies(engine, setup_config):
    secret = "whsec_" + base64.b64encode(b"operator-key-123").decode()
    async with Receiver(engine.clock.now) as endpoint, Receiver(engine.clock.now) as operator:
        healthy = False
        endpoint.respond = lambda hit, n: ((200, {}, 0) if healthy else (500, {}, 0))
        cfg = await setup_config(endpoint.url, retry="reteno", auto_disable={
            "after_failures": 3, "notify_url": operator.url, "notify_secret": secret})
        for i in range(3):
            await engine.create_activity("acme", key(i))
        summary = await engine.run_until_idle(max_time=24 * 3600)
        assert summary.idle
        view = await engine.config_view(cfg["id"])
        assert view["active"] is False and "3 consecutive failed attempts" in view["inactive_reason"]
        assert view["inactive_since"] == "2026-04-10T14:33:00.000Z"  # attempts at +0, +1m, +3m
        assert view["auto_disable"]["notify_secret"] == "***"
        assert len(endpoint.posts()) == 3
        assert [d.status for d in await engine.deliveries()] == ["RETRYING", "READY", "READY"]
        [note] = await engine.notifications(cfg["id"])
        assert note["kind"] == "config.auto_disabled" and note["delivery"] == "HTTP 200"
        [hit] = operator.posts()
        assert hit.body["type"] == "config.auto_disabled" and hit.body["config_id"] == cfg["id"]
        body = json.dumps(hit.body, separators=(",", ":")).encode()
        msg = f"{hit.webhook_id}.{hit.headers['webhook-timestamp']}.".encode() + body
        assert hit.headers["webhook-signature"] == "v1," + base64.b64encode(
            hmac.new(b"operator-key-123", msg, hashlib.sha256).digest()).decode()
        # re-enable: everything goes out, in order
        healthy = True
        await engine.activate(cfg["id"])
        await engine.run_until_idle()
        assert [d.status for d in await engine.deliveries()] == ["DISPATCHED"] * 3
        assert [h.body["commerceExternalId"] for h in endpoint.posts()[3:]] == ["C0", "C1", "C2"]
        assert "operator-key" not in engine.log_buffer.getvalue()


async def test_auto_disable_after_a_failure_period(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: (500, {}, 0)
    cfg = await setup_config(receiver.url, retry="reteno", auto_disable={"after": 5 * 86400})
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle(max_time=10 * 86400)
    view = await engine.config_view(cfg["id"])
    # hourly attempts: the first failure at or after 5 days of failing disables it
    assert view["active"] is False and "failing continuously for 432180s" in view["inactive_reason"]
    assert len(receiver.posts()) == 1 + 6 + 119  # +0, 1..32 min, then hourly until day 5 (+3 min)


async def test_health_settings_are_validated(engine):
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    with pytest.raises(ConfigError, match="failure_rate"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:1/h",
                                circuit_breaker={"failure_rate": 2})
    with pytest.raises(ConfigError, match="auto_disable: set after_failures"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:1/h", auto_disable={})


async def test_recover_since_requeues_failed_in_original_order(engine, receiver, setup_config):
    healthy = False
    receiver.respond = lambda hit, n: ((200, {}, 0) if healthy else (500, {}, 0))
    cfg = await setup_config(receiver.url, retry={"max_attempts": 1})
    t0 = engine.clock.now()
    for i in range(4):
        await engine.create_activity("acme", key(i))
        await engine.run_for(600)
    assert [d.status for d in await engine.deliveries()] == ["FAILED"] * 4
    healthy = True
    ids = await engine.recover_since(cfg["id"], t0 + 600)  # created at +10m, +20m, +30m
    assert ids == [2, 3, 4]
    await engine.run_until_idle()
    assert [d.status for d in await engine.deliveries()] == ["FAILED", "DISPATCHED", "DISPATCHED", "DISPATCHED"]
    assert [h.body["commerceExternalId"] for h in receiver.posts()[4:]] == ["C1", "C2", "C3"]
    assert await engine.force_retry_where(reason="exhausted") == [1]


async def test_replay_resends_without_changing_history(engine, receiver, setup_config):
    await setup_config(receiver.url)
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    [before] = await engine.deliveries()
    attempt = await engine.replay(before.id)
    assert attempt.replay is True and attempt.status_code == 200 and attempt.number == 2
    [after] = await engine.deliveries()
    assert after == before  # status, counters, dispatched_at untouched
    first, again = receiver.posts()
    assert first.webhook_id == again.webhook_id and first.body == again.body
    with pytest.raises(InvalidTransition, match="only a DISPATCHED delivery can be replayed"):
        engine.store.conn.execute("UPDATE deliveries SET status = 'FAILED'")
        await engine.replay(before.id)


async def test_circuit_state_survives_a_restart(db_path):
    async with Receiver(lambda: 0.0) as r:
        eng = await Engine.open(db_path, virtual=True, seed=2)
        r.clock_now = eng.clock.now
        r.respond = lambda hit, n: (503, {}, 0)
        await eng.add_tenant("acme")
        await eng.add_provider("crm")
        await eng.add_config("acme", "crm", "SALESMAN", endpoint_url=r.url, activate=True, config_id="c",
                             ordering="none", retry="reteno",
                             circuit_breaker={"window": 60, "failure_rate": 1.0, "min_requests": 2, "cooldown": 600})
        for i in range(3):
            await eng.create_activity("acme", key(i))
        await eng.run_for(10)
        clock = eng.clock
        await eng.close()
        eng2 = await Engine.open(db_path, clock=clock, seed=2)
        assert (await eng2.health("c"))["circuit"] == "open"
        await eng2.run_for(300)
        assert len(r.posts()) == 3  # still open after the restart: nothing sent
        await eng2.close()


async def test_re_enabling_starts_a_new_failure_streak(engine, receiver, setup_config):
    """After an operator re-enables a configuration, auto-disable needs N new consecutive failures again."""
    receiver.respond = lambda hit, n: (500, {}, 0)
    cfg = await setup_config(receiver.url, retry="reteno", auto_disable={"after_failures": 3})
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle(max_time=86400)
    assert (await engine.config_view(cfg["id"]))["active"] is False and len(receiver.posts()) == 3
    await engine.activate(cfg["id"])
    assert (await engine.health(cfg["id"]))["consecutive_failures"] == 0
    await engine.run_until_idle(max_time=86400)
    assert (await engine.config_view(cfg["id"]))["active"] is False
    assert len(receiver.posts()) == 6  # three new failures, not one
    assert [n["kind"] for n in await engine.notifications(cfg["id"])] == ["config.auto_disabled"] * 2


def test_a_success_never_opens_the_circuit():
    from dispatchsim.engine.health import CircuitBreaker, EndpointState, record

    cb = CircuitBreaker(window=600, failure_rate=0.5, min_requests=2, cooldown=60)
    st = EndpointState()
    assert record(st, False, 0.0, cb, None, "c") == []  # 1 of 1 failed, below min_requests
    assert record(st, True, 1.0, cb, None, "c") == []  # 1 of 2 failed (50%), but this one succeeded
    assert st.circuit == "closed"
    [change] = record(st, False, 2.0, cb, None, "c")  # 2 of 3 failed, and this one failed
    assert change.kind == "circuit.opened" and st.circuit == "open" and st.circuit_until == 62.0


def test_a_stored_notification_url_loads_as_written_while_a_new_one_is_checked_whole():
    """URLs are checked where they are entered: a snapshot an older version stored (its notify_url
    has a space, which that version allowed) still loads, so the engine starts and delivers; a new
    configuration with it is refused, naming the field."""
    from dispatchsim.engine.config import Snapshot, build_snapshot

    stored = {"endpoint_url": "http://127.0.0.1:1/", "auto_disable": {"after_failures": 3,
                                                                      "notify_url": "http://ops.example/alert hook"}}
    snap = Snapshot.from_dict(stored)
    assert snap.auto_disable is not None and snap.auto_disable.notify_url == "http://ops.example/alert hook"
    with pytest.raises(ConfigError) as err:
        build_snapshot(stored)
    assert err.value.field == "auto_disable.notify_url" and "spaces" in err.value.message


async def test_force_retry_where_reads_each_delivery_once_and_each_configuration_once(engine, receiver, setup_config,
                                                                                      monkeypatch):
    """A recovery of many deliveries is as many reads of them, not twice as many (and one read of their
    configuration); a deleted configuration's deliveries are left FAILED."""
    receiver.respond = lambda hit, n: (500, {}, 0)
    cfg = await setup_config(receiver.url, retry={"max_attempts": 1})
    for i in range(5):
        await engine.create_activity("acme", key(i))
    await engine.run_until_idle()
    assert [d.status for d in await engine.deliveries()] == ["FAILED"] * 5
    reads: list[str] = []
    for name in ("delivery", "config"):
        real = getattr(engine.store, name)

        async def counted(*args, _real=real, _name=name, **kw):
            reads.append(_name)
            return await _real(*args, **kw)

        monkeypatch.setattr(engine.store, name, counted)
    assert await engine.force_retry_where(config_id=cfg["id"]) == [1, 2, 3, 4, 5]
    # each delivery: read by the engine, and by the store for the retried row it returns (15 before, 2 + 1 each)
    assert reads.count("delivery") == 2 * 5 and reads.count("config") == 1
    await engine.run_until_idle()
    await engine.deactivate(cfg["id"])
    await engine.delete_config(cfg["id"])
    assert await engine.force_retry_where(reason="exhausted") == []
    assert [d.status for d in await engine.deliveries()] == ["FAILED"] * 5


async def test_a_shared_health_read_during_a_group_commit_does_not_empty_the_breaker_window(engine, receiver,
                                                                                             setup_config):
    """Serve on PostgreSQL reads the health other workers stored every second (share_health) and rebuilds
    the breaker's window from the shared attempts. A read that landed while a group commit was feeding
    the window its outcomes emptied it: the second of two failures met a window without the first, and a
    circuit that two failures of two should open stayed closed (tests/test_serve_pg.py failed so, under
    load). The read is forced into that moment here: right after the commit counted the outcome."""
    receiver.respond = lambda hit, n: (500, {}, 0)
    await setup_config(receiver.url, retry={"base": 600, "max_attempts": None}, ordering={"mode": "none", "concurrency": 2},
                       circuit_breaker={"window": 60, "failure_rate": 0.5, "min_requests": 2, "cooldown": 600})
    cid = "acme.crm.salesman"
    dispatcher, store = engine.dispatcher, engine.store
    count_outcome, reads = store.count_outcome, []

    async def counted_then_read(config_id: str, **kw):
        streak = await count_outcome(config_id, **kw)
        reads.append(config_id)
        dispatcher._read_health(await store.health_rows(), engine.clock.now())  # another worker's view arrives
        return streak

    store.count_outcome = counted_then_read
    for i in range(2):
        await engine.create_activity("acme", key(i))
    await engine.run_for(30)
    assert reads == [cid, cid] and len(receiver.posts()) == 2
    assert (await engine.health(cid))["circuit"] == "open"
    assert [n["kind"] for n in await engine.notifications(cid)] == ["circuit.opened"]
