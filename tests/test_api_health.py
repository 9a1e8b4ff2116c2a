"""Endpoint health and recovery through the HTTP API: replay, recover (force retry by filter), health,
notifications — with tenant isolation like every other route (real aiohttp client, virtual clock)."""
from __future__ import annotations

from typing import Any

from dispatchsim.engine import scoped_config_id

from test_api import ACME, ADMIN, OTHER, Api, _config, _is_problem, api  # noqa: F401 - the fixture

ACT = {"channel": "SALESMAN"}


async def _activities(api: Api, n: int, key: str = ACME, first: int = 0) -> None:
    for i in range(first, first + n):
        status, body = await api.call("POST", "/api/activities", key=key, body={**ACT, "commerceExternalId": f"C{i}"})
        assert status == 201, body


async def test_replay_a_dispatched_delivery(api: Api, receiver) -> None:
    await _config(api, receiver.url)
    await _activities(api, 1)
    await api.engine.run_until_idle()
    did = (await api.engine.delivery(1)).webhook_id  # the API's id of a delivery
    before = (await api.call("GET", f"/api/deliveries/{did}"))[1]
    status, attempt = await api.call("POST", f"/api/deliveries/{did}/replay")
    assert status == 200, attempt
    assert attempt["replay"] is True and attempt["number"] == 2 and attempt["status_code"] == 200
    assert (await api.call("GET", f"/api/deliveries/{did}"))[1] == before  # history unchanged
    first, again = receiver.posts()
    assert first.webhook_id == again.webhook_id and first.body == again.body
    _, attempts = await api.call("GET", f"/api/deliveries/{did}/attempts")
    assert [a["replay"] for a in attempts["items"]] == [False, True]
    # someone else's delivery, a body, an unknown one
    status, body = await api.call("POST", f"/api/deliveries/{did}/replay", key=OTHER)
    assert status == 404  # as if it did not exist
    _is_problem(body, 404)
    status, body = await api.call("POST", f"/api/deliveries/{did}/replay", body={"x": 1})
    assert status == 400
    assert (await api.call("POST", "/api/deliveries/1/replay"))[0] == 404
    assert len(receiver.posts()) == 2


async def test_replay_refuses_what_is_not_dispatched(api: Api, receiver) -> None:
    receiver.respond = lambda hit, n: (500, {}, 0)
    await _config(api, receiver.url, retry={"max_attempts": 1})
    await _activities(api, 1)
    await api.engine.run_until_idle()
    did = (await api.engine.delivery(1)).webhook_id
    status, body = await api.call("POST", f"/api/deliveries/{did}/replay")
    assert status == 409
    assert "is FAILED; only a DISPATCHED delivery can be replayed" in body["detail"]


async def test_recover_failed_deliveries_by_filter(api: Api, receiver) -> None:
    healthy = False
    receiver.respond = lambda hit, n: ((200, {}, 0) if healthy else (500, {}, 0))
    cfg = await _config(api, receiver.url, retry={"max_attempts": 1})
    for k in range(4):  # C0..C3 created at +0, +10m, +20m, +30m; each FAILED at once
        await _activities(api, 1, first=k)
        await api.engine.run_for(600)
    healthy = True
    path = f"/api/dispatch-configurations/{cfg['id']}/recover"
    # validation: unknown field, bad time, status other than FAILED
    for body, fragment in (({"when": "x"}, "when: unknown field"), ({"since": "yesterday"}, "since: not an ISO"),
                           ({"status": "RETRYING"}, "only FAILED deliveries")):
        status, problem = await api.call("POST", path, body=body)
        assert status == 400 and fragment in problem["detail"], problem
    status, problem = await api.call("POST", path, key=OTHER, body={})
    assert status == 404
    assert (await api.call("POST", "/api/dispatch-configurations/nope/recover", body={}))[0] == 404
    assert (await api.engine.counts())["FAILED"] == 4  # nothing moved yet

    status, body = await api.call("POST", path, body={"since": "2026-04-10T14:40:00Z", "until": "2026-04-10T14:50:00Z",
                                                     "reason": "exhausted", "status": "FAILED"})
    assert status == 200, body
    public = {d.id: d.webhook_id for d in await api.engine.deliveries()}
    assert body == {"config_id": cfg["id"], "count": 2, "requeued": [public[2], public[3]]}
    await api.engine.run_until_idle()
    status, body = await api.call("POST", path, body={"reason": "permanent_status"})
    assert body["count"] == 0
    status, body = await api.call("POST", path)  # no body: every FAILED delivery of the configuration
    assert body["requeued"] == [public[1], public[4]]
    await api.engine.run_until_idle()
    assert [h.body["commerceExternalId"] for h in receiver.posts()[4:]] == ["C1", "C2", "C0", "C3"]
    assert [d.status for d in await api.engine.deliveries()] == ["DISPATCHED"] * 4
    assert [d.id for d in await api.engine.deliveries()] == [1, 2, 3, 4]


async def test_health_and_notifications_after_auto_disable_and_circuit(api: Api, receiver) -> None:
    receiver.respond = lambda hit, n: (503, {}, 0)
    guarded = await _config(api, receiver.url, id="guarded", retry={"preset": "reteno"}, ordering={"mode": "none"},
                            circuit_breaker={"window": 60, "failure_rate": 1.0, "min_requests": 2, "cooldown": 3600})
    fragile = await _config(api, receiver.url, id="fragile", retry={"preset": "reteno"}, auto_disable={"after_failures": 2})
    await _activities(api, 2)
    await api.engine.run_for(600)

    status, h = await api.call("GET", f"/api/dispatch-configurations/{guarded['id']}/health")
    assert status == 200, h
    assert h["circuit"] == "open" and h["circuit_until"] == "2026-04-10T15:30:00.000Z" and h["active"] is True
    assert h["consecutive_failures"] == 2 and h["failing_since"] == "2026-04-10T14:30:00.000Z"
    assert [n["kind"] for n in h["notifications"]] == ["circuit.opened"]

    status, h = await api.call("GET", f"/api/dispatch-configurations/{fragile['id']}/health")
    assert h["active"] is False and h["circuit"] == "closed"
    assert h["inactive_reason"] == "auto-disabled: 2 consecutive failed attempts"
    assert h["inactive_since"] == "2026-04-10T14:31:00.000Z"
    [note] = h["notifications"]
    assert note["kind"] == "config.auto_disabled" and note["at"] == "2026-04-10T14:31:00.000Z"
    assert (await api.call("GET", f"/api/dispatch-configurations/{fragile['id']}"))[1]["active"] is False

    status, body = await api.call("GET", "/api/notifications")
    assert status == 200
    assert [(n["kind"], n["config_id"]) for n in body["items"]] == [("circuit.opened", "guarded"),
                                                                     ("config.auto_disabled", "fragile")]
    assert [n["kind"] for n in (await api.call("GET", "/api/notifications?limit=1"))[1]["items"]] == \
        ["config.auto_disabled"]
    assert len((await api.call("GET", "/api/notifications?config_id=guarded"))[1]["items"]) == 1
    assert (await api.call("GET", "/api/notifications?since=x"))[0] == 400


async def test_health_routes_are_tenant_isolated(api: Api, receiver) -> None:
    receiver.respond = lambda hit, n: (503, {}, 0)
    await _config(api, receiver.url, id="acme-c", retry={"preset": "reteno"}, auto_disable={"after_failures": 1})
    await _config(api, receiver.url, key=OTHER, id="other-c", retry={"preset": "reteno"}, auto_disable={"after_failures": 1})
    await _activities(api, 1)
    await _activities(api, 1, key=OTHER)
    await api.engine.run_for(60)

    def kinds(body: Any) -> list[tuple[str, str]]:
        return [(n["kind"], n["config_id"]) for n in body["items"]]

    assert kinds((await api.call("GET", "/api/notifications"))[1]) == [("config.auto_disabled", "acme-c")]
    assert kinds((await api.call("GET", "/api/notifications", key=OTHER))[1]) == [("config.auto_disabled", "other-c")]
    assert len((await api.call("GET", "/api/notifications", key=ADMIN))[1]["items"]) == 2
    assert kinds((await api.call("GET", "/api/notifications?tenant_id=other", key=ADMIN))[1]) == \
        [("config.auto_disabled", scoped_config_id("other", "other-c"))]  # the admin sees stored ids
    for path, real, fake in (("/api/notifications?tenant_id=other", "other", "ghost"),
                             ("/api/notifications?config_id=other-c", "other-c", "nope"),
                             ("/api/dispatch-configurations/other-c/health", "other-c", "nope")):
        status, body = await api.call("GET", path)
        _, missing = await api.call("GET", path.replace(real, fake))
        assert status == 404 and body["detail"].replace(real, fake) == missing["detail"], (path, body)
        _is_problem(body, 404)
    assert (await api.call("POST", "/api/dispatch-configurations/other-c/recover"))[0] == 404
    assert (await api.call("GET", "/api/dispatch-configurations/nope/health"))[0] == 404
    assert (await api.call("GET", "/api/notifications?config_id=nope"))[0] == 404


async def test_retry_and_ordering_accept_preset_names(api: Api, receiver) -> None:
    """The engine and scenario files take ``retry: reteno``; so does the API."""
    body = await _config(api, receiver.url, activate=False, retry="svix", ordering="none")
    assert body["retry"]["schedule"][:2] == [5.0, 300.0] and body["ordering"]["mode"] == "none"
    status, body = await api.call("POST", "/api/dispatch-configurations", key=ACME, body={
        "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url, "retry": 5})
    assert status == 400
    assert "retry: must be a preset name (string) or an object or null, got integer" in body["detail"]
