"""Reteno message events: seed parameters, batching, per-account order and backoff (virtual clock)."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from dispatchsim.engine.errors import ActivationRefused, ConfigError, NotFound
from dispatchsim.engine.events import MessageEvents, validate_event

from test_api import ACME, OTHER, Api, api  # noqa: F401  (fixture)

#: The seed's bulk-campaign example, as published (emails elided there too).
SEED_EVENTS = [
    {"broadcastId": 3459207, "messageName": "test", "iid": "99d591ab-e7a5-49ed-8e16-b3023378fc18",
     "contactId": 1967597908, "externalCustomerId": "789456512", "email": "a@example.com", "mediaType": "email",
     "activityStatus": "DELIVERED", "messageId": 2489300, "messageInstanceId": 4702518,
     "activityDateTime": "2023-09-14T08:30:03", "viewMessageLink": "https://u51739.esclick.me/J9o6EvyAKGmB",
     "statusData": {}},
    {"broadcastId": 3459207, "messageName": "test", "hardBounce": False, "iid": "99d591ab-e7a5-49ed-8e16-b3023378fc18",
     "contactId": 1967597908, "externalCustomerId": "789456512", "email": "a@example.com", "mediaType": "email",
     "activityStatus": "UNDELIVERED", "messageId": 2489300, "messageInstanceId": 4702518,
     "activityDateTime": "2023-09-14T08:30:07", "statusDescription": "5.1.2 (bad destination system: no such domain)",
     "viewMessageLink": "https://u51739.esclick.me/J9o6EvyAKGmB", "statusData": {}},
    {"messageName": "test", "workflowId": 340484, "workflowBlockId": "_05cae26d9ae85e1eb40ed34765f9c7be",
     "sourceEventKey": "9d0c163d-cc3b-4f9e-bb03-2f5d1111ef91", "sourceEventTypeKey": "productViewed",
     "workflowInstanceId": "da33697d-52d8-11ee-9d24-7ec2059b5114", "iid": "019b7450-52d9-11ee-85c4-959256ea468c",
     "contactId": 889891911, "mediaType": "email", "activityStatus": "DELIVERED", "messageId": 2489300,
     "messageInstanceId": 4702524, "activityDateTime": "2023-09-14T08:30:50", "statusData": {}},
]


def ev(i: int, status: str = "READ", **extra) -> dict:
    return {"activityStatus": status, "contactId": i, "messageId": 1000 + i, **extra}


def test_seed_examples_are_valid_events() -> None:
    for e in SEED_EVENTS:
        out, problems = validate_event(e, now=0.0)
        assert problems == [] and out == e


@pytest.mark.parametrize(("event", "fragment"), [
    ({"activityStatus": "BOUNCED"}, "activityStatus: required, one of"),
    ({"contactId": 1}, "activityStatus: required"),
    ({"activityStatus": "UNDELIVERED", "hardBounce": True}, "statusDescription: required"),
    ({"activityStatus": "UNDELIVERED", "statusDescription": "x"}, "hardBounce: required"),
    ({"activityStatus": "UNDELIVERED", "statusDescription": "x", "hardBounce": "no"}, "hardBounce: must be bool"),
    ({"activityStatus": "DELIVERED", "hardBounce": False}, "only sent with activityStatus UNDELIVERED"),
    ({"activityStatus": "CLICKED"}, "clickEventLink: required"),
    ({"activityStatus": "READ", "clickEventLink": "https://x"}, "only sent with activityStatus CLICKED"),
    ({"activityStatus": "READ", "contactId": "12"}, "contactId: must be int"),
    ({"activityStatus": "READ", "contactId": True}, "contactId: must be int"),
    ({"activityStatus": "SUBSCRIPTION_CHANGED", "subscriptions": ["a", 1]}, "subscriptions: must be strings"),
    ({"activityStatus": "READ", "colour": "red"}, "unknown parameter"),
])
def test_event_validation(event: dict, fragment: str) -> None:
    _, problems = validate_event(event, now=0.0)
    assert any(fragment in p for p in problems), problems


def test_missing_activity_date_time_is_filled_in_seed_format() -> None:
    out, problems = validate_event({"activityStatus": "SPAM"}, now=1694680203.9)
    assert problems == [] and out["activityDateTime"] == "2023-09-14T08:30:03"


async def _account(engine, receiver, **settings) -> MessageEvents:
    if await engine.store.tenant("acme") is None:
        await engine.add_tenant("acme")
    events = engine.events
    await events.configure_webhook("acme", {"url": receiver.url, **settings})
    return events


async def test_test_get_on_save_refuses_a_failing_url(engine, receiver) -> None:
    await engine.add_tenant("acme")
    events = engine.events
    receiver.verify_status = 404
    with pytest.raises(ActivationRefused, match="HTTP 404"):
        await events.configure_webhook("acme", {"url": receiver.url})
    with pytest.raises(NotFound):
        await events.post("acme", [ev(1)])
    with pytest.raises(NotFound):
        await events.configure_webhook("ghost", {"url": receiver.url})
    with pytest.raises(ConfigError, match="batch_size"):
        await events.configure_webhook("acme", {"url": receiver.url, "batch_size": 0})


async def test_batches_by_size_and_max_wait(engine, receiver) -> None:
    events = await _account(engine, receiver, batch_size=3, max_wait=30)
    t0 = engine.clock.now()
    await events.post("acme", [ev(i) for i in range(7)])
    await engine.run_until_idle(max_time=3600)
    posts = receiver.posts()
    assert [[e["contactId"] for e in p.body] for p in posts] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [round(p.at - t0, 3) for p in posts] == [0, 0, 30]  # the last one waited max_wait
    assert all(isinstance(p.body, list) for p in posts)
    assert posts[0].webhook_id != posts[1].webhook_id
    assert (await events.counts("acme"))["DISPATCHED"] == 3


async def test_ordered_per_account_with_reteno_backoff(engine, receiver) -> None:
    receiver.respond = lambda hit, n: (503, {}, 0.0) if n <= 4 else (200, {}, 0.0)
    events = await _account(engine, receiver, batch_size=2, max_wait=0)
    t0 = engine.clock.now()
    await events.post("acme", [ev(0), ev(1)])
    runner = asyncio.create_task(engine.run_until_idle(max_time=24 * 3600))
    for i in range(2, 8):  # more events arrive during the outage
        await asyncio.sleep(100)
        await events.post("acme", [ev(i)])
    await runner
    posts = receiver.posts()
    # the head batch is retried after 1, 2, 4, 8 minutes, with the same body and webhook-id
    head = [p for p in posts if p.webhook_id == posts[0].webhook_id]
    assert [round(p.at - t0) for p in head] == [0, 60, 180, 420, 900]
    assert all(p.body == head[0].body for p in head)
    # nothing else went out before the head succeeded, then everything in sequence
    assert posts[:5] == head
    delivered = [e["contactId"] for p in posts[4:] for e in p.body]
    assert delivered == list(range(8))
    attempts = await events.attempts((await events.batches("acme"))[0].id)
    assert [a.status_code for a in attempts] == [503, 503, 503, 503, 200]


async def test_accounts_are_independent(engine, receiver) -> None:
    from support import Receiver

    events = await _account(engine, receiver, batch_size=1, max_wait=0)
    await engine.add_tenant("beta")
    async with Receiver(engine.clock.now, respond=lambda h, n: (500, {}, 0.0)) as down:
        await events.configure_webhook("beta", {"url": down.url, "batch_size": 1, "max_wait": 0})
        await events.post("beta", [ev(1)])
        await events.post("acme", [ev(2)])
        await engine.run_until_idle(max_time=600)
        assert [p.body[0]["contactId"] for p in receiver.posts()] == [2]
        assert len(down.posts()) >= 3
        assert (await events.counts("beta"))["RETRYING"] == 1


async def test_lease_left_by_a_dead_sender_is_resent(engine, receiver) -> None:
    events = await _account(engine, receiver, batch_size=5, max_wait=0)
    await events.post("acme", [ev(1), ev(2)])
    now = engine.clock.now()
    bid, did, _ = await events.store.form_batch(account_id="acme", config_id="acme@events", config_version=1, size=5, now=now, id_key="k")
    assert await engine.store.claim([(did, now + 40)], token="dead", now=now) != []  # then "crash"
    t0 = engine.clock.now()
    await engine.run_until_idle(max_time=600)
    posts = receiver.posts()
    assert len(posts) == 1 and round(posts[0].at - t0) == 40
    assert [a.outcome for a in await events.attempts(bid)] == ["INTERRUPTED", "SUCCESS"]


async def test_message_events_through_the_api(api: Api, receiver) -> None:  # noqa: F811
    secret = "tok-123456789"
    status, body = await api.call("PUT", "/api/accounts/acme/webhook", body={
        "url": receiver.url, "batch_size": 2, "max_wait": 5, "auth": {"type": "bearer", "token": secret}})
    assert status == 200 and body["auth"]["token"] == "***" and secret not in json.dumps(body)
    assert (await api.call("PUT", "/api/accounts/acme/webhook", key=OTHER, body={"url": receiver.url}))[0] == 404
    receiver.verify_status = 500
    status, body = await api.call("PUT", "/api/accounts/other/webhook", key=OTHER, body={"url": receiver.url})
    assert status == 422 and "HTTP 500" in body["reason"]
    for bad in ({"events": []}, {"events": [ev(1), {"activityStatus": "NOPE"}]}, {"events": [ev(1)], "x": 1},
                {"events": "READ"}):
        status, body = await api.call("POST", "/api/message-events", body=bad)
        assert status == 400, body
    assert (await api.call("POST", "/api/message-events", key=OTHER, body={"account_id": "acme",
                                                                           "events": [ev(1)]}))[0] == 403
    status, body = await api.call("POST", "/api/message-events", key=OTHER, body={"events": [ev(1)]})
    assert status == 404 and "no webhook" in body["detail"]
    assert api.engine.store.conn.execute("SELECT COUNT(*) FROM message_events").fetchone()[0] == 0
    status, body = await api.call("POST", "/api/message-events",
                                  body={"events": [ev(1), ev(2, "CLICKED", clickEventLink="https://x"), ev(3)]})
    assert status == 202 and body["accepted"] == 3
    await api.engine.run_until_idle(max_time=60)
    assert [[e["contactId"] for e in p.body] for p in receiver.posts()] == [[1, 2], [3]]
    assert receiver.posts()[0].headers["Authorization"] == f"Bearer {secret}"
    status, body = await api.call("GET", "/api/accounts/acme/webhook")
    assert body["counts"]["DISPATCHED"] == 2
    status, body = await api.call("GET", "/api/accounts/acme/event-batches")
    assert [b["size"] for b in body["items"]] == [2, 1]
    assert (await api.call("GET", "/api/accounts/acme/event-batches", key=OTHER))[0] == 404
    # A batch is known by the public id of the delivery that sends it, never by a store sequence
    # number (which would tell one tenant how many batches all tenants have); pages follow that id.
    first, second = body["items"]
    assert re.fullmatch("evb_[0-9a-f]{24}", first["id"]) and "delivery_id" not in first and "webhook_id" not in first
    assert [p.headers["webhook-id"] for p in receiver.posts()] == [first["id"], second["id"]]
    status, page = await api.call("GET", f"/api/accounts/acme/event-batches?after={first['id']}&limit=1")
    assert status == 200 and [b["id"] for b in page["items"]] == [second["id"]]
    status, page = await api.call("GET", f"/api/accounts/acme/event-batches?after={second['id']}")
    assert status == 200 and page["items"] == []
    status, view = await api.call("GET", f"/api/deliveries/{first['id']}")
    assert status == 200 and view["batch_id"] == view["id"] == first["id"] and view["activity_id"] is None
    status, attempts = await api.call("GET", f"/api/deliveries/{first['id']}/attempts")
    assert status == 200 and [a["status_code"] for a in attempts["items"]] == [200]
    # Another account's batch (or none) as a cursor is refused in the same words, naming the field.
    receiver.verify_status = 200
    assert (await api.call("PUT", "/api/accounts/other/webhook", key=OTHER,
                         body={"url": receiver.url, "batch_size": 1}))[0] == 200
    await api.call("POST", "/api/message-events", key=OTHER, body={"events": [ev(7)]})
    await api.engine.run_until_idle(max_time=60)
    [theirs] = (await api.call("GET", "/api/accounts/other/event-batches", key=OTHER))[1]["items"]
    refusals = [await api.call("GET", f"/api/accounts/acme/event-batches?after={cursor}")
                for cursor in (theirs["id"], "msg_" + "0" * 24, "1")]
    assert {(status, b["detail"], b["field"]) for status, b in refusals} == {
        (422, "invalid query: after: the id of one of this account's event batches (from a previous page)", "after")}
    assert ACME
