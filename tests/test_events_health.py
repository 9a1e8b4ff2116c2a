"""Message-event webhooks are sent by the one dispatcher, so every endpoint-health feature applies to
them: scrubbing, permanent statuses, Retry-After, circuit breaker, auto-disable — and databases made
before that keep their pending events and batches (real loopback HTTP, virtual clock)."""
from __future__ import annotations

import json
import re
import sqlite3

from dispatchsim.engine import Engine, VirtualClock
from dispatchsim.engine.store import _split_sql, migrations

from support import Receiver

HOOK = "acme@events"


def ev(i: int) -> dict:
    return {"activityStatus": "READ", "contactId": i, "messageId": 1000 + i}


async def _webhook(engine, url: str, **settings) -> dict:
    if await engine.store.tenant("acme") is None:
        await engine.add_tenant("acme")
    return await engine.events.configure_webhook("acme", {"url": url, "batch_size": 2, "max_wait": 0, **settings})


def _arrays(posts) -> list[list[int]]:
    return [[e["contactId"] for e in p.body] for p in posts]


async def test_a_secret_echoed_by_the_webhook_is_not_stored(engine, receiver) -> None:
    token = "tok-ECHOED-123456"
    receiver.respond = lambda hit, n: ((401, {}, 0, f"bad token {hit.headers.get('Authorization')}") if n == 1
                                       else (200, {}, 0))
    await _webhook(engine, receiver.url, auth={"type": "bearer", "token": token})
    await engine.events.post("acme", [ev(1)])
    await engine.run_until_idle(max_time=3600)
    [batch] = await engine.events.batches("acme")
    attempts = await engine.events.attempts(batch.id)
    assert [a.status_code for a in attempts] == [401, 200]
    assert attempts[0].excerpt == "bad token Bearer ***"
    stored = (json.dumps([a.to_json() for a in attempts]) + json.dumps([d.to_json() for d in await engine.deliveries()])
              + json.dumps(await engine.events.webhook("acme")))
    assert "ECHOED" not in stored + engine.log_buffer.getvalue()


async def test_a_permanent_status_fails_the_batch_at_once_and_the_queue_moves_on(engine, receiver) -> None:
    receiver.respond = lambda hit, n: (410, {}, 0) if n == 1 else (200, {}, 0)
    await _webhook(engine, receiver.url, batch_size=1, retry={"preset": "reteno", "permanent_statuses": [410]})
    await engine.events.post("acme", [ev(1), ev(2)])
    await engine.run_until_idle(max_time=3600)
    first, second = await engine.events.batches("acme")
    assert (first.status, first.attempts, second.status) == ("FAILED", 1, "DISPATCHED")
    failed = await engine.delivery(first.delivery_id)
    assert failed.failed_reason == "permanent_status" and failed.to_json()["canForceRetryDispatch"]
    assert _arrays(receiver.posts()) == [[1], [2]]
    # a force retry sends the same array again, with the same webhook-id
    await engine.force_retry(first.delivery_id)
    await engine.run_until_idle(max_time=3600)
    posts = receiver.posts()
    assert _arrays(posts) == [[1], [2], [1]] and posts[2].webhook_id == posts[0].webhook_id
    assert (await engine.events.counts("acme"))["DISPATCHED"] == 2


async def test_retry_after_longer_than_the_backoff_is_honoured(engine, receiver) -> None:
    receiver.respond = lambda hit, n: (429, {"Retry-After": "600"}, 0) if n == 1 else (200, {}, 0)
    await _webhook(engine, receiver.url)
    t0 = engine.clock.now()
    await engine.events.post("acme", [ev(1), ev(2)])
    await engine.run_until_idle(max_time=3600)
    assert [round(p.at - t0) for p in receiver.posts()] == [0, 600]  # the backoff alone: 60
    [batch] = await engine.events.batches("acme")
    assert [a.retry_after for a in await engine.events.attempts(batch.id)] == [600, None]


async def test_the_circuit_breaker_holds_a_failing_webhook_and_a_probe_closes_it(engine, receiver) -> None:
    t0 = engine.clock.now()
    receiver.respond = lambda hit, n: (503, {}, 0) if engine.clock.now() - t0 < 1000 else (200, {}, 0)
    await _webhook(engine, receiver.url,
                   circuit_breaker={"window": 600, "failure_rate": 1.0, "min_requests": 2, "cooldown": 900})
    await engine.events.post("acme", [ev(1), ev(2), ev(3)])
    await engine.run_until_idle(max_time=6 * 3600)
    # tries at 0 and +60 open the circuit for 900 s: the retry due at +180 waits for the probe at +960,
    # which fails (open again), and the probe at +1860 succeeds; then the next batch goes at once
    assert [round(p.at - t0) for p in receiver.posts()] == [0, 60, 960, 1860, 1860]
    assert _arrays(receiver.posts())[-2:] == [[1, 2], [3]]
    kinds = [n["kind"] for n in await engine.notifications(HOOK)]
    assert kinds == ["circuit.opened", "circuit.opened", "circuit.closed"]
    assert (await engine.health(HOOK))["circuit"] == "closed"


async def test_auto_disable_pauses_the_webhook_keeps_its_events_and_saving_it_resumes(engine, receiver) -> None:
    healthy = False
    receiver.respond = lambda hit, n: (200, {}, 0) if healthy else (500, {}, 0)
    settings = {"auto_disable": {"after_failures": 3}}
    await _webhook(engine, receiver.url, **settings)
    await engine.events.post("acme", [ev(1), ev(2)])
    summary = await engine.run_until_idle(max_time=6 * 3600)
    assert summary.idle  # a paused webhook is not pending work
    hook = await engine.events.webhook("acme")
    assert hook["active"] is False and "3 consecutive failed attempts" in hook["inactive_reason"]
    assert len(receiver.posts()) == 3
    await engine.events.post("acme", [ev(3)])  # accepted while paused: it waits
    await engine.run_until_idle(max_time=3600)
    assert len(receiver.posts()) == 3
    assert [n["kind"] for n in await engine.notifications(HOOK)] == ["config.auto_disabled"]
    healthy = True
    await _webhook(engine, receiver.url, **settings)  # saved again: test GET, active, in order
    assert (await engine.run_until_idle(max_time=3600)).idle
    posts = receiver.posts()
    assert _arrays(posts[3:]) == [[1, 2], [3]] and posts[3].webhook_id == posts[0].webhook_id
    assert (await engine.events.webhook("acme"))["active"] is True


def _old_database(path, url: str, t0: float) -> None:
    """A database as the separate message-event sender left it (schema 3): one batch delivered, one
    in flight when its sender died (lease until t0+40), one waiting, one event not yet batched."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("BEGIN")
    for number, sql in migrations():
        if number <= 3:
            for stmt in _split_sql(sql):
                conn.execute(stmt)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO tenants VALUES ('acme', 'acme', ?)", (t0 - 900,))
    settings = {"url": url, "auth": {"type": "bearer", "token": "tok-OLD-999"}, "signing_secret": None,
                "batch_size": 2, "max_wait": 0.0, "retry": {"preset": "reteno"}, "timeouts": {"connect": 5, "total": 30}}
    conn.execute("INSERT INTO event_accounts VALUES ('acme', ?, ?, 1, ?, ?)", (url, json.dumps(settings), t0 - 900,
                                                                                t0 - 900))
    for status, attempts, lease in (("DISPATCHED", 1, None), ("RETRYING", 2, t0 + 40), ("READY", 0, None)):
        conn.execute("INSERT INTO event_batches (account_id, status, size, attempts, next_attempt_at, lease_until,"
                     " created_at, updated_at) VALUES ('acme', ?, 2, ?, ?, ?, ?, ?)",
                     (status, attempts, t0 - 60, lease, t0 - 600, t0 - 60))
    conn.execute("INSERT INTO event_attempts (batch_id, number, started_at, finished_at, outcome, status_code)"
                 " VALUES (1, 1, ?, ?, 'SUCCESS', 200)", (t0 - 600, t0 - 600))
    conn.execute("INSERT INTO event_attempts (batch_id, number, started_at, finished_at, outcome, status_code)"
                 " VALUES (2, 1, ?, ?, 'HTTP_ERROR', 503)", (t0 - 300, t0 - 300))
    conn.execute("INSERT INTO event_attempts (batch_id, number, started_at) VALUES (2, 2, ?)", (t0 - 10,))
    for i, batch in enumerate([1, 1, 2, 2, 3, 3, None], start=1):
        conn.execute("INSERT INTO message_events (account_id, payload, batch_id, created_at) VALUES ('acme', ?, ?, ?)",
                     (json.dumps(ev(i)), batch, t0 - 700))
    conn.execute("COMMIT")
    conn.close()


async def test_a_database_of_the_old_event_sender_keeps_its_events_and_batches(tmp_path) -> None:
    path = tmp_path / "old.db"
    clock = VirtualClock()
    t0 = clock.now()
    async with Receiver(clock.now) as receiver:
        _old_database(path, receiver.url, t0)
        engine = await Engine.open(path, clock=clock, seed=1)
        try:
            assert (await engine.store.schema_version()) >= 4
            hook = await engine.events.webhook("acme")
            assert (hook["config_id"], hook["batch_size"], hook["auth"]["token"]) == (HOOK, 2, "***")
            await engine.run_until_idle(max_time=3600)
            posts = receiver.posts()
            # the batch its dead sender left is re-sent when the lease ends, then the rest in order
            assert _arrays(posts) == [[3, 4], [5, 6], [7]]
            assert round(posts[0].at - t0) == 40
            # the migrated batches keep their webhook-ids; a new one gets a digest, not a number
            assert [p.webhook_id for p in posts][:2] == ["evb_acme_2", "evb_acme_3"]
            assert re.fullmatch("evb_[0-9a-f]{24}", posts[2].webhook_id)
            assert posts[0].headers["Authorization"] == "Bearer tok-OLD-999"
            outcomes = [a.outcome for a in await engine.events.attempts(2)]
            assert outcomes == ["HTTP_ERROR", "INTERRUPTED", "SUCCESS"]
            assert [b.status for b in await engine.events.batches("acme")] == ["DISPATCHED"] * 4
            assert (await engine.events.counts("acme"))["unbatched_events"] == 0
        finally:
            await engine.close()
