"""The engine end to end: real SQLite file, real aiohttp receiver on 127.0.0.1, virtual clock."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket

import pytest

from dispatchsim.engine import (ActivationRefused, Circuit, ConfigError, Engine, InvalidTransition, NotFound, ResultConflict,
                                iso, latest_schema_version)
from dispatchsim.mapping.activity import PAYLOAD_KEYS

from support import Receiver

ACT = {"channel": "SALESMAN", "commerceExternalId": "COM-001", "commerceName": "Farmacia Central"}


def offsets(engine, hits, t0):
    return [round(h.at - t0, 3) for h in hits]


async def test_happy_path_dispatches_seed_payload(engine, receiver, setup_config):
    await setup_config(receiver.url)
    act = await engine.create_activity("acme", ACT)
    summary = await engine.run_until_idle()
    assert summary.counts["DISPATCHED"] == 1 and summary.idle
    [hit] = receiver.posts()
    assert list(hit.body) == list(PAYLOAD_KEYS)
    assert hit.body == act == await engine.activity(act["id"])
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"].startswith("dispatchsim/")
    assert hit.webhook_id.startswith("msg_")
    assert hit.headers["webhook-timestamp"].isdigit()
    [d] = await engine.deliveries()
    assert d.status == "DISPATCHED" and d.attempts == 1
    [a] = await engine.attempts(d.id)
    assert a.status_code == 200 and a.outcome == "SUCCESS" and a.excerpt == "ok"
    assert a.finished_at is not None


async def test_500_then_200_follows_exact_1_2_4_minute_timeline(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if n <= 3 else (200, {}, 0))
    await setup_config(receiver.url)
    t0 = engine.clock.now()
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    assert offsets(engine, receiver.posts(), t0) == [0, 60, 180, 420]
    attempts = await engine.attempts()
    assert [a.status_code for a in attempts] == [500, 500, 500, 200]
    assert [a.outcome for a in attempts] == ["HTTP_ERROR"] * 3 + ["SUCCESS"]
    # the same webhook-id on every retry so receivers can de-duplicate
    assert len({h.webhook_id for h in receiver.posts()}) == 1


async def test_3xx_is_a_failure_and_redirects_are_not_followed(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((302, {"Location": "http://127.0.0.1:1/x"}, 0) if n == 1 else (200, {}, 0))
    await setup_config(receiver.url)
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    assert [a.status_code for a in await engine.attempts()] == [302, 200]


async def test_timeout_is_exact_and_retried(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((200, {}, 3600) if n == 1 else (200, {}, 0))
    await setup_config(receiver.url, timeouts={"connect": 2, "total": 7.5})
    t0 = engine.clock.now()
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    first, second = await engine.attempts()
    assert first.outcome == "TIMEOUT" and first.status_code is None
    assert first.latency == pytest.approx(7.5)
    # retry scheduled one minute after the timed-out attempt ended
    assert offsets(engine, receiver.posts(), t0) == [0, 67.5]
    assert second.outcome == "SUCCESS"


async def test_connection_refused_is_retried(engine, setup_config):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    await engine.add_config("acme", "crm", "SALESMAN", endpoint_url=f"http://127.0.0.1:{port}/hooks",
                            retry={"max_attempts": 3}, config_id="down")
    # activation would be refused, so force the row active to test sending
    await engine.store.set_config_active("down", True, engine.clock.now())
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    attempts = await engine.attempts()
    assert [a.outcome for a in attempts] == ["CONNECT_ERROR"] * 3
    [d] = await engine.deliveries()
    assert d.status == "FAILED" and d.failed_reason == "exhausted"
    assert "ClientConnectorError" in attempts[0].error


async def test_429_retry_after_longer_than_backoff_is_honoured(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((429, {"Retry-After": "300"}, 0) if n == 1 else
                                       (503, {"Retry-After": "5"}, 0) if n == 2 else (200, {}, 0))
    await setup_config(receiver.url)
    t0 = engine.clock.now()
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    # 300 s (Retry-After beats 60 s backoff), then 120 s (backoff beats Retry-After 5)
    assert offsets(engine, receiver.posts(), t0) == [0, 300, 420]
    assert [a.retry_after for a in await engine.attempts()] == [300, 5, None]


async def test_retry_after_http_date(engine, receiver, setup_config):
    from email.utils import formatdate
    receiver.respond = lambda hit, n: ((503, {"Retry-After": formatdate(engine.clock.now() + 900, usegmt=True)}, 0)
                                       if n == 1 else (200, {}, 0))
    await setup_config(receiver.url)
    t0 = engine.clock.now()
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    assert offsets(engine, receiver.posts(), t0) == [0, 900]


async def test_ordered_head_blocks_followers_then_all_drain_in_order(engine, receiver, setup_config):
    t0 = engine.clock.now()
    receiver.respond = lambda hit, n: ((500, {}, 0) if engine.clock.now() - t0 < 2 * 3600 else (200, {}, 0))
    await setup_config(receiver.url, retry="reteno")
    ids = [(await engine.create_activity("acme", {**ACT, "commerceExternalId": f"C{i}"}))["id"] for i in range(5)]
    await engine.run_until_idle()
    posts = receiver.posts()
    # while the head retries nobody else is sent
    assert {h.body["id"] for h in posts if h.at - t0 < 2 * 3600} == {ids[0]}
    delivered = [h.body["id"] for h in posts if h.at - t0 >= 2 * 3600]
    assert delivered == ids
    assert all(d.status == "DISPATCHED" for d in await engine.deliveries())


async def test_on_exhausted_skip_moves_on(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if hit.body["commerceExternalId"] == "C0" else (200, {}, 0))
    await setup_config(receiver.url, retry={"max_attempts": 2}, ordering={"on_exhausted": "skip"})
    for i in range(3):
        await engine.create_activity("acme", {**ACT, "commerceExternalId": f"C{i}"})
    await engine.run_until_idle()
    statuses = [d.status for d in await engine.deliveries()]
    assert statuses == ["FAILED", "DISPATCHED", "DISPATCHED"]
    first = (await engine.deliveries())[0]
    assert first.to_json()["canForceRetryDispatch"] is True and first.blocks_queue is False
    act = await engine.activity(first.activity_id)
    assert act["canForceRetryDispatch"] is True


async def test_on_exhausted_block_holds_queue_until_force_retry(engine, receiver, setup_config):
    healthy = False
    receiver.respond = lambda hit, n: ((200, {}, 0) if healthy else (500, {}, 0))
    await setup_config(receiver.url, retry={"max_attempts": 2}, ordering={"on_exhausted": "block"})
    for i in range(3):
        await engine.create_activity("acme", {**ACT, "commerceExternalId": f"C{i}"})
    summary = await engine.run_until_idle()
    assert summary.idle
    ds = await engine.deliveries()
    assert [d.status for d in ds] == ["FAILED", "READY", "READY"]
    assert ds[0].blocks_queue is True
    assert len(receiver.posts()) == 2  # only the head was tried
    healthy = True
    await engine.force_retry(ds[0].id)
    await engine.run_until_idle()
    assert [d.status for d in await engine.deliveries()] == ["DISPATCHED"] * 3
    assert [h.body["commerceExternalId"] for h in receiver.posts()[2:]] == ["C0", "C1", "C2"]


async def test_explicit_skip_unblocks_a_blocked_queue(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if n <= 1 else (200, {}, 0))
    await setup_config(receiver.url, retry={"max_attempts": 1}, ordering={"on_exhausted": "block"})
    for i in range(2):
        await engine.create_activity("acme", {**ACT, "commerceExternalId": f"C{i}"})
    await engine.run_until_idle()
    head, tail = await engine.deliveries()
    assert head.status == "FAILED" and tail.status == "READY"
    with pytest.raises(InvalidTransition):
        await engine.skip(tail.id)
    await engine.skip(head.id)
    await engine.run_until_idle()
    head, tail = await engine.deliveries()
    assert head.status == "FAILED" and tail.status == "DISPATCHED"


async def test_partitioned_ordering_one_queue_per_key(engine, receiver, setup_config):
    t0 = engine.clock.now()
    receiver.respond = lambda hit, n: ((500, {}, 0) if hit.body["commerceExternalId"] == "A" and
                                       engine.clock.now() - t0 < 600 else (200, {}, 0))
    await setup_config(receiver.url, ordering={"mode": "partitioned", "partition_key": "commerceExternalId"})
    acts = [await engine.create_activity("acme", {**ACT, "commerceExternalId": key}) for key in "ABABC"]
    await engine.run_until_idle()
    queues = sorted({d.queue for d in await engine.deliveries()})
    assert queues == ["acme.crm.salesman/A", "acme.crm.salesman/B", "acme.crm.salesman/C"]
    by_key: dict[str, list[tuple[float, str]]] = {}
    for h in receiver.posts():
        by_key.setdefault(h.body["commerceExternalId"], []).append((h.at - t0, h.body["id"]))
    # A's head retries 0, 1, 3, 7, 15 min; A's second item waits for it, then goes
    assert by_key["A"] == [(t, acts[0]["id"]) for t in (0, 60, 180, 420, 900)] + [(900, acts[2]["id"])]
    # other partitions are not held back by A
    assert by_key["B"] == [(0, acts[1]["id"]), (0, acts[3]["id"])]
    assert by_key["C"] == [(0, acts[4]["id"])]


async def test_unordered_mode_sends_concurrently_with_a_limit(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: (200, {}, 10)
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 3})
    t0 = engine.clock.now()
    for i in range(7):
        await engine.create_activity("acme", {**ACT, "commerceExternalId": f"C{i}"})
    await engine.run_until_idle()
    times = sorted(round(h.at - t0) for h in receiver.posts())
    assert times == [0, 0, 0, 10, 10, 10, 20]


async def test_force_retry_gives_a_fresh_budget(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if n <= 2 else (200, {}, 0))
    await setup_config(receiver.url, retry={"max_attempts": 2})
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    [d] = await engine.deliveries()
    assert d.status == "FAILED" and d.to_json()["canForceRetryDispatch"]
    with pytest.raises(NotFound, match="delivery 999 not found"):
        await engine.force_retry(999)
    d = await engine.force_retry(d.id)
    assert d.status == "READY" and d.budget_attempts == 0
    await engine.run_until_idle()
    [d] = await engine.deliveries()
    assert d.status == "DISPATCHED" and d.attempts == 3
    act = await engine.activity(d.activity_id)
    assert act["canForceRetryDispatch"] is False


async def test_force_retry_only_from_failed(engine, receiver, setup_config):
    await setup_config(receiver.url)
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    [d] = await engine.deliveries()
    with pytest.raises(InvalidTransition, match="DISPATCHED -> READY is not allowed"):
        await engine.force_retry(d.id)


async def test_verification_get_refuses_activation(engine, receiver):
    receiver.verify_status = 404
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    await engine.add_config("acme", "crm", "SALESMAN", endpoint_url=receiver.url, config_id="c1")
    with pytest.raises(ActivationRefused, match=r"verification GET to http://127.0.0.1:\d+/hooks failed: HTTP 404"):
        await engine.activate("c1")
    assert (await engine.config_view("c1"))["active"] is False
    await engine.create_activity("acme", ACT)
    assert await engine.deliveries() == []
    receiver.verify_status = 204
    assert (await engine.activate("c1"))["active"] is True


async def test_verification_get_refused_on_connection_error(engine):
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    with pytest.raises(ActivationRefused, match="connect_error"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:9/hooks",
                                activate=True)


async def test_fan_out_to_two_providers_one_down(engine, setup_config):
    async with Receiver(engine.clock.now) as up, Receiver(engine.clock.now) as down:
        down.respond = lambda hit, n: (503, {}, 0)
        await setup_config(up.url, provider="crm")
        await setup_config(down.url, provider="erp", retry={"max_attempts": 3})
        act = await engine.create_activity("acme", ACT)
        await engine.run_until_idle()
        assert len(up.posts()) == 1 and len(down.posts()) == 3
        statuses = {d.config_id: d.status for d in await engine.deliveries(activity_id=act["id"])}
        assert statuses == {"acme.crm.salesman": "DISPATCHED", "acme.erp.salesman": "FAILED"}
        assert up.posts()[0].webhook_id != down.posts()[0].webhook_id


async def test_no_active_config_stores_activity_without_deliveries(engine):
    await engine.add_tenant("acme")
    act = await engine.create_activity("acme", {"channel": "PHONE"})
    assert await engine.deliveries() == []
    assert (await engine.activity(act["id"]))["channel"] == "PHONE"
    assert "no active configuration" in engine.log_buffer.getvalue()


async def test_deactivated_config_pauses_and_resumes_in_order(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if n == 1 else (200, {}, 0))
    cfg = await setup_config(receiver.url)
    first = await engine.create_activity("acme", {**ACT, "commerceExternalId": "C0"})
    await engine.create_activity("acme", {**ACT, "commerceExternalId": "C1"})
    await engine.run_for(1)  # the head failed once and waits to retry
    await engine.deactivate(cfg["id"])
    await engine.create_activity("acme", ACT)  # inactive: gets no delivery
    summary = await engine.run_until_idle()  # nothing is sent to a paused configuration
    assert summary.idle and len(receiver.posts()) == 1
    assert [d.status for d in await engine.deliveries()] == ["RETRYING", "READY"]
    await engine.activate(cfg["id"])
    await engine.run_until_idle()
    assert [d.status for d in await engine.deliveries()] == ["DISPATCHED", "DISPATCHED"]
    assert [h.body["commerceExternalId"] for h in receiver.posts()] == ["C0", "C0", "C1"]
    assert receiver.posts()[0].body["id"] == first["id"]


async def test_edit_keeps_snapshot_of_deliveries_in_flight(engine, setup_config):
    async with Receiver(engine.clock.now) as old, Receiver(engine.clock.now) as new:
        cfg = await setup_config(old.url)
        await engine.create_activity("acme", ACT)
        await engine.edit_config(cfg["id"], endpoint_url=new.url)
        await engine.create_activity("acme", ACT)
        await engine.run_until_idle()
        assert len(old.posts()) == 1 and len(new.posts()) == 1
        assert [d.config_version for d in await engine.deliveries()] == [1, 2]


async def test_bad_config_is_refused_before_anything_is_stored(engine):
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    with pytest.raises(ConfigError, match="auth.type"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:1/h",
                                auth={"type": "magic"})
    with pytest.raises(ConfigError, match="endpoint_url"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="ftp://x")
    with pytest.raises(ConfigError, match="unknown configuration field"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:1/h", retries=3)
    assert await engine.store.configs() == []


async def test_every_problem_of_a_configuration_is_reported_at_once(engine):
    """A library caller learns all the mistakes of one call, as an API client does, not one per attempt."""
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    with pytest.raises(ConfigError) as caught:
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="ftp://x", auth={"type": "magic"},
                                retry={"max_attempts": 0}, timeouts={"total": -1}, signing_secret="whsec_!!")
    fields = [e.field for e in caught.value.errors]
    assert fields[:2] == ["endpoint_url", "signing_secret"] and len(fields) >= 5, str(caught.value)
    assert any(f and f.startswith("auth") for f in fields) and any(f and f.startswith("retry") for f in fields)
    assert any(f and f.startswith("timeouts") for f in fields)
    assert caught.value.field == "endpoint_url" and str(caught.value).count("\n") == len(fields) - 1
    # one mistake alone: the error its check raised, as before
    with pytest.raises(ConfigError, match="^endpoint_url: ") as one:
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="ftp://x")
    assert len(one.value.errors) == 1
    assert await engine.store.configs() == []


async def test_auth_headers_and_signature(engine, receiver, setup_config):
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
    await setup_config(receiver.url, auth={"type": "basic", "username": "u", "password": "p@ss"},
                       signing_secret=secret)
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    [hit] = receiver.posts()
    assert hit.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p@ss").decode()
    body = json.dumps(hit.body, ensure_ascii=False, separators=(",", ":")).encode()
    msg = f"{hit.webhook_id}.{hit.headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(b"0123456789abcdef", msg, hashlib.sha256).digest()).decode()
    assert hit.headers["webhook-signature"] == "v1," + expected


async def test_secrets_never_in_logs_views_or_errors(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if n == 1 else (200, {}, 0))
    cfg = await setup_config(receiver.url, auth={"type": "api_key", "header": "X-Key", "value": "sk-live-TOPSECRET"},
                             signing_secret="hmac-SIGNSECRET")
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    everything = (engine.log_buffer.getvalue() + json.dumps(cfg) + json.dumps(await engine.config_view(cfg["id"]))
                  + json.dumps([a.to_json() for a in await engine.attempts()])
                  + json.dumps([d.to_json() for d in await engine.deliveries()]))
    assert "TOPSECRET" not in everything and "SIGNSECRET" not in everything
    assert cfg["auth"]["value"] == "***" and cfg["signing_secret"] == "***"
    receiver.verify_status = 401
    with pytest.raises(ActivationRefused) as e:
        await engine.edit_config(cfg["id"], auth={"type": "bearer", "token": "tok-NEWSECRET"})
    assert "NEWSECRET" not in str(e.value)
    assert (await engine.config_view(cfg["id"]))["version"] == 1  # the refused edit stored nothing


async def test_message_activities_are_stored_not_dispatched(engine, receiver, setup_config):
    await setup_config(receiver.url)
    await engine.create_activity("acme", {"channel": "SALESMAN", "type": "MESSAGE"})
    await engine.run_until_idle()
    assert receiver.posts() == []
    assert "MESSAGE" in engine.log_buffer.getvalue()


async def test_one_event_per_transition_in_the_log(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if n == 1 else (200, {}, 0))
    await setup_config(receiver.url)
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    events = [json.loads(line) for line in engine.log_buffer.getvalue().splitlines()]
    transitions = [e for e in events if e["event"].startswith("delivery.")]
    assert [e["event"] for e in transitions] == ["delivery.created", "delivery.retrying", "delivery.dispatched"]
    retry = transitions[1]
    assert retry["delivery_id"] == 1 and retry["attempt"] == 1 and retry["status"] == "RETRYING"
    assert retry["next_attempt_at"] == "2026-04-10T14:31:00.000Z" and retry["queue"] == "acme.crm.salesman"


async def test_crash_mid_flight_then_restart_loses_nothing(db_path):
    async with Receiver(lambda: 0.0) as receiver:
        eng = await Engine.open(db_path, virtual=True, seed=3)
        receiver.clock_now = eng.clock.now
        receiver.respond = lambda hit, n: ((200, {}, 50) if n == 1 else (200, {}, 0))
        await eng.add_tenant("acme")
        await eng.add_provider("crm")
        await eng.add_config("acme", "crm", "SALESMAN", endpoint_url=receiver.url, activate=True,
                             ordering="none", timeouts={"connect": 5, "total": 60})
        for i in range(4):
            await eng.create_activity("acme", {**ACT, "commerceExternalId": f"C{i}"})
        await eng.run_for(10)  # first attempt is in flight (receiver takes 50 s); others done
        ds = await eng.deliveries()
        assert [d.lease_until is not None for d in ds].count(True) == 1
        await eng.crash()

        eng2 = await Engine.open(db_path, virtual=True, seed=3)
        receiver.clock_now = eng2.clock.now
        await eng2.run_until_idle()
        ds = await eng2.deliveries()
        assert [d.status for d in ds] == ["DISPATCHED"] * 4
        received = [h.body["commerceExternalId"] for h in receiver.posts()]
        # at-least-once: only the attempt in flight at the crash arrives twice
        assert sorted(received) == ["C0", "C0", "C1", "C2", "C3"]
        interrupted = [a for a in await eng2.attempts() if a.outcome == "INTERRUPTED"]
        assert len(interrupted) == 1 and interrupted[0].delivery_id == ds[0].id
        await eng2.close()


async def test_graceful_stop_waits_for_in_flight(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: (200, {}, 5)
    await setup_config(receiver.url)
    await engine.create_activity("acme", ACT)
    engine.start()
    await asyncio.sleep(1)
    assert engine.dispatcher.in_flight == 1
    abandoned = await engine.stop(deadline=30)
    assert abandoned == 0
    assert [d.status for d in await engine.deliveries()] == ["DISPATCHED"]


async def test_reopen_database_is_migrated_once(db_path):
    from dispatchsim.engine.store import migrations
    latest = migrations()[-1][0]
    e1 = await Engine.open(db_path, virtual=True)
    assert await e1.store.schema_version() == latest
    await e1.add_tenant("acme")
    await e1.close()
    e2 = await Engine.open(db_path, virtual=True)
    assert await e2.store.schema_version() == latest and await e2.store.tenant("acme")
    await e2.close()


async def test_an_ordered_queue_s_head_is_found_through_the_index_of_heads(tmp_path):
    """SQLite v9: ``deliveries_queue_eligible`` holds the heads of ordered queues only (eligible rows that
    hold their queue), so an unordered backlog has no entry there; the statements that look for a
    queue's head and promote the next one name that condition and read the index, never the table."""
    from dispatchsim.engine.store import AttemptResult, Store

    store = Store(tmp_path / "heads.db")
    store.migrate()
    await store.add_tenant("t", "T", 1.0)
    await store.add_provider("p", "P", 1.0)
    await store.insert_config("c", "t", "p", "S", {"endpoint_url": "http://127.0.0.1:9/h"}, 1.0)
    await store.insert_activity("a", "t", "TASK", "S", {"id": "a", "type": "TASK"}, 1.0)
    ids = [await store.insert_delivery(webhook_id=f"w{n}", activity_id="a", config_id="c", config_version=1,
                                       queue="q" if n < 3 else "free", ordered=n < 3, now=1.0) for n in range(6)]
    heads = store.conn.execute("SELECT id FROM deliveries INDEXED BY deliveries_queue_eligible"
                               " WHERE eligible = 1 AND holds = 1").fetchall()
    assert [r[0] for r in heads] == [ids[0]]  # the unordered three are eligible, but not heads
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    assert await store.queue_head("q", 2.0) == (ids[0], "c", 1)
    [claim] = await store.claim([(ids[0], 60.0)], token="me:1", now=2.0)
    assert await store.mark_dispatched(claim, AttemptResult(finished_at=3.0, outcome="SUCCESS"), ordered=True)
    store.conn.set_trace_callback(None)
    assert await store.queue_head("q", 3.0) == (ids[1], "c", 1)
    reads = [s for s in statements if "eligible = 1 AND holds = 1" in s]
    assert len(reads) == 2  # the head's read and the promotion
    for sql in reads:
        plan = " | ".join(r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "deliveries_queue_eligible" in plan and "SCAN deliveries" not in plan, plan
    await store.close()


async def test_a_simulation_commits_without_waiting_for_the_disk_and_serve_mode_does(tmp_path):
    """``synchronous``: 1 is NORMAL (a commit survives a crash of the process, WAL fsynced at checkpoints),
    0 is OFF (the operating system writes when it likes): a virtual run's fsyncs were most of its time."""
    def synchronous(eng: Engine) -> int:
        return eng.store.conn.execute("PRAGMA synchronous").fetchone()[0]

    real = await Engine.open(tmp_path / "real.db")
    sim = await Engine.open(tmp_path / "sim.db", virtual=True)
    chosen = await Engine.open(tmp_path / "chosen.db", virtual=True, durable=True)
    assert (synchronous(real), synchronous(sim), synchronous(chosen)) == (1, 0, 1)
    await sim.add_tenant("acme")
    await sim.crash()
    again = await Engine.open(tmp_path / "sim.db", virtual=True)
    assert await again.store.tenant("acme") is not None  # committed rows outlive the process's end
    for eng in (real, chosen, again):
        await eng.close()


async def test_a_scratch_database_keeps_its_journal_in_memory_and_its_rows_after_a_crash(tmp_path):
    """A scenario's temporary database (``scratch``): a rollback journal in memory instead of the
    write-ahead log, commits not waited for; what was committed is in the file for the next
    connection (a simulated crash and restart, the run's reader afterwards)."""
    eng = await Engine.open(tmp_path / "scratch.db", virtual=True, scratch=True)
    conn = eng.store.conn
    assert (conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]) \
        == ("memory", 0)
    await eng.add_tenant("acme")
    with pytest.raises(RuntimeError):
        async with eng.store.tx():  # a rolled-back transaction leaves nothing
            await eng.store.add_tenant("beta", "Beta", 0.0)
            raise RuntimeError("undo")
    await eng.crash()
    again = await Engine.open(tmp_path / "scratch.db", virtual=True, scratch=True)
    assert await again.store.tenant("acme") is not None and await again.store.tenant("beta") is None
    await again.close()
    assert not (tmp_path / "scratch.db-wal").exists()


async def test_results_fill_activity_result(engine, receiver, setup_config):
    await setup_config(receiver.url)
    act = await engine.create_activity("acme", ACT)
    res = await engine.submit_result(act["id"], {"status": "COMPLETED", "notes": "visited"})
    assert res.created
    assert res.activity["activityResult"] == {"status": "COMPLETED", "notes": "visited",
                                              "submittedAt": iso(engine.clock.now())}


async def test_a_second_different_result_is_refused_by_the_engine(engine, receiver, setup_config):
    """The rule lives in the engine: the same result again is a no-op, a different one a ResultConflict."""
    await setup_config(receiver.url)
    act = await engine.create_activity("acme", ACT)
    first = await engine.submit_result(act["id"], {"status": "COMPLETED"})
    again = await engine.submit_result(act["id"], {"status": "COMPLETED"})
    assert first.created and not again.created and again.activity == first.activity
    with pytest.raises(ResultConflict) as info:
        await engine.submit_result(act["id"], {"status": "FAILED"})
    assert info.value.current == first.activity["activityResult"]
    assert (await engine.activity(act["id"]))["activityResult"] == first.activity["activityResult"]
    with pytest.raises(NotFound):
        await engine.submit_result("00000000-0000-4000-8000-000000000000", {"status": "COMPLETED"})


async def test_secrets_sent_back_redacted_are_refused_by_the_engine(engine, receiver, setup_config):
    """Reads show ***; storing *** as a secret would lose the real one, through any door."""
    cfg = await setup_config(receiver.url)
    with pytest.raises(ConfigError, match="write-only"):
        await engine.edit_config(cfg["id"], auth={"type": "bearer", "token": "***"})
    with pytest.raises(ConfigError, match="write-only"):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url=receiver.url, signing_secret="***")
    with pytest.raises(ConfigError, match="nothing to change"):
        await engine.edit_config(cfg["id"])


async def test_stop_right_after_start_is_not_lost(engine, receiver, setup_config):
    await setup_config(receiver.url)
    engine.start()
    await asyncio.wait_for(engine.stop(), timeout=60)  # the run task had not even started yet
    engine.start()
    await engine.create_activity("acme", ACT)
    await asyncio.sleep(1)
    await engine.stop()
    assert [d.status for d in await engine.deliveries()] == ["DISPATCHED"]


async def test_permanent_status_fails_without_further_tries(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: (410, {}, 0)
    await setup_config(receiver.url, retry={"permanent_statuses": [410]})
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    [d] = await engine.deliveries()
    assert d.status == "FAILED" and d.failed_reason == "permanent_status" and d.attempts == 1


async def test_svix_schedule_timeline(engine, receiver, setup_config):
    receiver.respond = lambda hit, n: ((500, {}, 0) if n <= 4 else (200, {}, 0))
    await setup_config(receiver.url, retry="svix")
    t0 = engine.clock.now()
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    assert offsets(engine, receiver.posts(), t0) == [0, 5, 305, 2105, 9305]


@pytest.mark.parametrize("auth, message", [
    ({"type": "api_key", "header": "X Bad: Header", "value": "v"}, "not a valid HTTP header name"),
    ({"type": "api_key", "value": "abc\r\nX-Injected: 1"}, "value must not contain control characters"),
    ({"type": "bearer", "token": "t\n"}, "token must not contain control characters"),
    ({"type": "basic", "username": "a:b", "password": "p"}, "username must not contain ':'"),
])
async def test_auth_that_cannot_be_sent_is_refused(engine, auth, message):
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    with pytest.raises(ConfigError, match=message):
        await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:1/h", auth=auth)


def test_redact_url_hides_userinfo_and_secret_query_values():
    from dispatchsim.engine.redact import redact_url
    assert redact_url("https://u:p@h.test/x?token=T0K&page=2") == "https://***@h.test/x?token=***&page=2"
    assert redact_url("http://127.0.0.1:8/h?api_key=K&sig=S") == "http://127.0.0.1:8/h?api_key=***&sig=***"
    assert redact_url("http://127.0.0.1:8/h?page=2") == "http://127.0.0.1:8/h?page=2"


async def test_secret_in_endpoint_query_stays_out_of_errors_and_logs(engine):
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    with pytest.raises(ActivationRefused) as e:
        await engine.add_config("acme", "crm", "SALESMAN", activate=True,
                                endpoint_url="http://127.0.0.1:9/hooks?token=QS-S3CRET")
    assert "QS-S3CRET" not in str(e.value) and "token=***" in str(e.value)
    assert "QS-S3CRET" not in engine.log_buffer.getvalue()


async def test_secret_echoed_by_the_receiver_is_not_stored(engine, setup_config):
    from aiohttp import web

    async def echo(request):
        if request.method == "GET":
            return web.Response(text="ok")
        return web.Response(status=401, text=f"bad key {request.headers.get('X-Key')}")

    app = web.Application()
    app.router.add_route("*", "/hooks", echo)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]
        await setup_config(f"http://127.0.0.1:{port}/hooks", retry={"max_attempts": 1},
                           auth={"type": "api_key", "header": "X-Key", "value": "sk-ECHOED-SECRET"})
        await engine.create_activity("acme", ACT)
        await engine.run_until_idle()
        [a] = await engine.attempts()
        assert a.status_code == 401 and a.excerpt == "bad key ***"
        assert "ECHOED" not in json.dumps([d.to_json() for d in await engine.deliveries()])
    finally:
        await runner.cleanup()


async def test_a_subscriber_that_raises_is_unsubscribed_and_the_engine_goes_on(engine, receiver, setup_config):
    """Events are logged in the middle of a group commit: a subscriber's bug (or its closed pipe) used
    to break the commit there, before the dispatch loop was woken. Now it is unsubscribed, its error
    goes to the loop's exception handler, and every delivery is still made, in order."""
    reports: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reports.append(ctx))
    seen: list[str] = []

    def broken(event: dict) -> None:
        if event["event"] == "delivery.dispatched":
            raise BrokenPipeError("reader went away")

    engine.subscribe(broken)
    engine.subscribe(lambda event: seen.append(event["event"]))
    await setup_config(receiver.url)
    ids = [(await engine.create_activity("acme", {**ACT, "commerceExternalId": f"COM-{i}"}))["id"] for i in range(5)]
    summary = await engine.run_until_idle()
    assert summary.counts["DISPATCHED"] == 5 and summary.idle
    assert [h.body["id"] for h in receiver.posts()] == ids
    assert seen.count("delivery.dispatched") == 5
    [report] = reports
    assert isinstance(report["exception"], BrokenPipeError) and "unsubscribed" in report["message"]


async def test_a_closed_engine_says_so_and_closing_again_does_nothing(db_path):
    """After close(), every call was sqlite3's "Cannot operate on a closed database", and a second
    close() raised it too."""
    from dispatchsim.engine import StoreError

    engine = await Engine.open(db_path, virtual=True, seed=1)
    await engine.add_tenant("acme")
    await engine.close()
    await engine.close()
    for call in (lambda: engine.create_activity("acme", ACT), lambda: engine.run_until_idle(),
                 lambda: engine.deliveries()):
        with pytest.raises(StoreError, match="the database is closed"):
            await call()


def _undo_v10(conn) -> None:
    """A v10 database taken back to v9's schema (what a test of an older migration starts from)."""
    conn.execute("DROP VIEW attempts_all")
    conn.execute("DROP VIEW attempts_open")
    conn.execute("ALTER TABLE deliveries DROP COLUMN lease_attempt")
    conn.execute("ALTER TABLE deliveries DROP COLUMN lease_started_at")



async def _file_engine(db_path: str, url: str) -> Engine:
    """An engine on a SQLite file (the migration tests reopen it) with one active unordered configuration."""
    engine = await Engine.open(db_path, virtual=True, seed=1)
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    await engine.add_config("acme", "crm", "SALESMAN", endpoint_url=url, activate=True, ordering={"mode": "none"})
    return engine

async def test_v10_moves_an_attempt_open_at_a_crash_to_its_lease_and_recovery_keeps_its_id(tmp_path, receiver):
    """Before v10 a claim opened the attempt's row. One still open when the engine died (a v9 file) is
    moved by the v10 migration to its delivery's lease: listed in flight under its id, then recorded
    INTERRUPTED under the same id and number when the lease is released; the delivery goes again."""
    import sqlite3

    from dispatchsim.engine.store import Store

    db_path = str(tmp_path / "v9.db")
    engine = await _file_engine(db_path, receiver.url)
    await engine.create_activity("acme", ACT)
    [(did,)] = engine.store.conn.execute("SELECT id FROM deliveries").fetchall()
    [claim] = await engine.store.claim([(did, 2e9 + 60)], token="dead:1", now=2e9)
    await engine.close()
    conn = sqlite3.connect(db_path)
    with conn:  # what a v9 claim left: the attempt's open row
        conn.execute("INSERT INTO attempts (id, delivery_id, number, started_at, config_id) VALUES (?, ?, 1, ?, ?)",
                     (claim.attempt_id, did, 2e9, claim.config_id))
        _undo_v10(conn)
        conn.execute("PRAGMA user_version = 9")
    conn.close()
    store = Store(db_path)
    try:
        [open_] = await store.attempts(did)
        assert (open_.id, open_.number, open_.started_at, open_.outcome) == (claim.attempt_id, 1, 2e9, None)
        assert await store.release_expired_leases(2e9 + 60) == [did]
        [interrupted] = await store.attempts(did)
        assert (interrupted.id, interrupted.number, interrupted.outcome) == (claim.attempt_id, 1, "INTERRUPTED")
        [again] = await store.claim([(did, 2e9 + 120)], token="next:1", now=2e9 + 61)
        assert (again.number, again.attempt_id) == (2, claim.attempt_id + 1)
    finally:
        await store.close()


async def test_v9_gives_an_unordered_row_a_promotion_stripped_back_its_eligibility(tmp_path, receiver):
    """Before v9 a promotion in a queue with both kinds of rows (a configuration switched between ordering
    modes) could leave an unordered READY row not eligible: nothing would claim it. The v9 migration
    makes such rows eligible again; the engine then sends it."""
    import sqlite3

    db_path = str(tmp_path / "v8.db")
    engine = await _file_engine(db_path, receiver.url)
    await engine.create_activity("acme", ACT)
    await engine.close()
    conn = sqlite3.connect(db_path)
    with conn:  # the state a pre-v9 promotion left, at v8
        conn.execute("UPDATE deliveries SET eligible = 0, holds = 0")
        conn.execute("DROP INDEX deliveries_queue_eligible")
        conn.execute("CREATE INDEX deliveries_queue_eligible ON deliveries(queue) WHERE eligible = 1")
        _undo_v10(conn)
        conn.execute("PRAGMA user_version = 8")
    conn.close()
    engine = await Engine.open(db_path, virtual=True, seed=1)
    try:
        summary = await engine.run_until_idle()
        assert summary.counts["DISPATCHED"] == 1 and len(receiver.posts()) == 1
    finally:
        await engine.close()


async def test_v12_rewrites_the_status_and_circuit_checks_keeping_every_row_id_and_sequence(tmp_path, receiver):
    """v12 rebuilds deliveries and endpoint_health with their CHECK constraints written without IN lists
    (SQLite built a temporary B-tree for a list of more than two constants at every write of the
    column). A v11 file keeps every row, its delivery ids and what its AUTOINCREMENT gave out; the
    checks still refuse what they refused; the views over deliveries work again."""
    import sqlite3

    from dispatchsim.engine.store import Store

    db_path = str(tmp_path / "v11.db")
    engine = await _file_engine(db_path, receiver.url)
    for _ in range(3):
        await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    await engine.create_activity("acme", ACT)  # READY, then leased below: an attempt in flight
    await engine.store.save_circuit(engine.store.conn.execute("SELECT id FROM configurations").fetchone()[0],
                                    circuit=Circuit.OPEN, circuit_until=2e9, now=1e9)
    [(did,)] = engine.store.conn.execute("SELECT id FROM deliveries WHERE status = 'READY'").fetchall()
    [claim] = await engine.store.claim([(did, 2e9 + 60)], token="dead:1", now=2e9)
    await engine.close()
    conn = sqlite3.connect(db_path)
    with conn:  # v11's checks (IN lists), and ids given out past the last row (a later delivery rolled back)
        conn.execute("PRAGMA writable_schema = ON")
        for table, new, old in (
                ("deliveries", "status = 'READY' OR status = 'RETRYING' OR status = 'DISPATCHED' OR status = 'FAILED'",
                 "status IN ('READY','RETRYING','DISPATCHED','FAILED')"),
                ("endpoint_health", "circuit = 'closed' OR circuit = 'open' OR circuit = 'half_open'",
                 "circuit IN ('closed', 'open', 'half_open')")):
            assert conn.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE name = ?",
                                (new, old, table)).rowcount == 1
        conn.execute("PRAGMA writable_schema = OFF")
        conn.execute("UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'deliveries'")
        conn.execute("PRAGMA user_version = 11")
    conn.close()
    conn = sqlite3.connect(db_path)
    before = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("deliveries", "endpoint_health")}
    [(seq,)] = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'deliveries'").fetchall()
    assert "IN (" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'deliveries'").fetchone()[0]
    conn.close()
    assert seq == max(r[0] for r in before["deliveries"]) + 5 and len(before["deliveries"]) == 4

    store = Store(db_path)
    try:
        conn = store.conn

        def rows(sql: str) -> list[tuple]:
            return [tuple(r) for r in conn.execute(sql)]

        assert await store.schema_version() == latest_schema_version()
        for t in ("deliveries", "endpoint_health"):
            assert rows(f"SELECT * FROM {t} ORDER BY 1") == before[t]
            assert " IN " not in conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (t,)).fetchone()[0]
        assert rows("SELECT name, seq FROM sqlite_sequence WHERE name LIKE 'deliveries%'") == [("deliveries", seq)]
        assert rows("PRAGMA foreign_key_check") == [] and rows("PRAGMA integrity_check") == [("ok",)]
        # the attempt in flight is listed from its lease (the views), and the finished ones from their rows
        assert [(a.id, a.outcome) for a in await store.attempts(did)] == [(claim.attempt_id, None)]
        assert len(await store.attempts()) == 4
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute("UPDATE deliveries SET status = 'SENT' WHERE id = ?", (did,))
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            conn.execute("UPDATE endpoint_health SET circuit = 'ajar'")
    finally:
        await store.close()
    engine = await Engine.open(db_path, virtual=True, seed=1)
    try:  # the next delivery's id comes after every id given out, not after the last row
        await engine.create_activity("acme", ACT)
        assert engine.store.conn.execute("SELECT MAX(id) FROM deliveries").fetchone()[0] == seq + 1
    finally:
        await engine.close()


async def test_a_drain_does_not_stop_while_room_opened_during_its_last_read(engine, receiver, setup_config):
    """run_until_idle's last check leaves out the configurations at their limit, read before the check's
    store call. On PostgreSQL that call waits on the network, and attempts could end and be recorded
    meanwhile: the check then saw nothing due (the only configuration left out), nothing in flight, no
    commit under way, and returned with most deliveries READY (test_pg_capacity: 1,445 of 1,800). The
    wait is forced here: the check's read lets the attempts in flight end and their commit finish."""
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 2})
    dispatcher, store = engine.dispatcher, engine.store
    next_wakeup, forced = store.next_wakeup, []

    async def attempts_end_meanwhile(exclude_configs=()):
        if exclude_configs and dispatcher._inflight:
            forced.append(len(dispatcher._inflight))
            await asyncio.wait(list(dispatcher._inflight.values()))
            while any(not t.done() for t in dispatcher._flushes):
                await asyncio.wait(list(dispatcher._flushes))
        return await next_wakeup(exclude_configs=exclude_configs)

    store.next_wakeup = attempts_end_meanwhile
    for i in range(12):
        await engine.create_activity("acme", {"channel": "SALESMAN", "commerceExternalId": f"C{i}"})
    summary = await engine.run_until_idle()
    assert forced, "the forced interleaving never happened: the test no longer tests anything"
    assert summary.idle and summary.counts["DISPATCHED"] == 12 and len(receiver.posts()) == 12


def test_the_records_the_attempt_path_builds_by_position_keep_their_field_order():
    """The attempt's hot path builds these named tuples from their fields in order (``tuple.__new__``,
    without the constructor's Python call: engine/store.py ``_claim``, dispatcher, sender). A field added,
    removed or moved would put values under the wrong names silently: this pins the orders those calls
    write, so such a change fails here first and the calls are updated with it."""
    from dispatchsim.engine.sender import Outcome, Request
    from dispatchsim.engine.store import AttemptResult, Claim
    from dispatchsim.engine.store_contract import Finish
    from dispatchsim.engine.store_rows import StoredActivity

    assert Request._fields == ("url", "body", "webhook_id", "timestamp", "auth", "signing_secret", "connect_timeout",
                               "total_timeout")
    assert Outcome._fields == ("kind", "status", "retry_after", "latency", "excerpt", "error")
    assert AttemptResult._fields == ("finished_at", "outcome", "status_code", "error", "retry_after", "latency",
                                     "excerpt")
    assert Finish._fields == ("claim", "result", "status", "next_at", "error", "reason", "ordered", "block")
    assert StoredActivity._fields == ("payload", "result", "can_force_retry")
    assert Claim._fields == ("delivery_id", "attempt_id", "number", "webhook_id", "activity_id", "batch_id", "config_id",
                             "config_version", "queue", "budget_attempts", "budget_started_at", "lease_token", "due_at",
                             "started_at", "activity")
