"""The HTTP API through a real aiohttp client on 127.0.0.1 (virtual clock for the engine)."""
from __future__ import annotations

import base64
import gzip

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from aiohttp import web

from dispatchsim.engine import ResultConflict
from dispatchsim.engine import scoped_config_id
from support import start_site

from dispatchsim.server.api import ROUTES, make_app, openapi_document
from dispatchsim.server.console import is_console_path
from dispatchsim.server.keys import KeyRing, create_key

ADMIN, ACME, OTHER = "admin-key-000000000000", "acme-key-0000000000000", "other-key-000000000000"


@dataclass
class Api:
    session: aiohttp.ClientSession
    engine: Any
    app: web.Application

    async def call(self, method: str, path: str, *, key: str | None = ACME, body: Any = None,
                   raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = dict(headers or {})
        if key is not None:
            h["X-Api-Key"] = key
        data: Any = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if isinstance(data, bytes) and len(data) > 1024 * 1024:
            data = io.BytesIO(data)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        async with self.session.request(method, path, data=data, headers=h) as resp:
            text = await resp.text()
            if resp.content_type.endswith("json"):
                return resp.status, json.loads(text)
            return resp.status, text


@pytest.fixture
async def api(engine) -> AsyncIterator[Api]:
    await engine.add_tenant("acme")
    await engine.add_tenant("other")
    await engine.add_provider("crm")
    app = make_app(engine, keys=KeyRing(engine.store, {ADMIN: None, ACME: "acme", OTHER: "other"}))
    runner, port = await start_site(app)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield Api(session, engine, app)
    finally:
        await runner.cleanup()


async def _config(api: Api, url: str, *, key: str = ACME, activate: bool = True, **fields: Any) -> dict:
    status, body = await api.call("POST", "/api/dispatch-configurations", key=key,
                                  body={"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": url, **fields})
    assert status == 201, body
    if activate:
        status, body = await api.call("POST", f"/api/dispatch-configurations/{body['id']}/activate", key=key)
        assert status == 200, body
    return body


def _is_problem(body: Any, status: int) -> None:
    assert isinstance(body, dict) and body["status"] == status and body["detail"] and body["type"].startswith("http")


async def test_keys_401_and_public_endpoints(api: Api) -> None:
    for key in (None, "wrong-key-0000000000000"):
        status, body = await api.call("GET", "/api/activities", key=key)
        assert status == 401
        _is_problem(body, 401)
    status, body = await api.call("GET", "/api/activities", key=None, headers={"Authorization": f"Bearer {ACME}"})
    assert status == 200
    assert (await api.call("GET", "/healthz", key=None))[0] == 200
    assert (await api.call("GET", "/api/openapi.json", key=None))[0] == 200
    # keys created with `dispatchsim keys create` live hashed in the database
    _, key = await create_key(api.engine.store, tenant_id="other", now=0.0)
    stored = api.engine.store.conn.execute("SELECT hash FROM api_keys").fetchone()[0]
    assert key not in stored
    status, body = await api.call("GET", "/api/tenants", key=key)
    assert status == 200 and [t["id"] for t in body["items"]] == ["other"]


async def test_admin_only_tenants_and_providers(api: Api) -> None:
    status, body = await api.call("POST", "/api/tenants", body={"id": "beta"})
    assert status == 403
    _is_problem(body, 403)
    assert (await api.call("POST", "/api/tenants", key=ADMIN, body={"id": "beta", "name": "Beta"}))[0] == 201
    status, body = await api.call("POST", "/api/tenants", key=ADMIN, body={"id": "beta"})
    assert status == 409 and "already exists" in body["detail"]
    assert (await api.call("POST", "/api/providers", key=ACME, body={"id": "erp"}))[0] == 403
    assert (await api.call("POST", "/api/providers", key=ADMIN, body={"id": "erp"}))[0] == 201
    status, body = await api.call("GET", "/api/providers")
    assert [p["id"] for p in body["items"]] == ["crm", "erp"]
    status, body = await api.call("GET", "/api/tenants", key=ADMIN)
    assert [t["id"] for t in body["items"]] == ["acme", "beta", "other"]
    await _same_as_missing(api, "GET", "/api/tenants/other", "other", "ghost")


async def test_configuration_lifecycle_and_write_only_secrets(api: Api, receiver) -> None:
    secret = "s3cr3t-value-xyz"
    receiver.verify_status = 403
    cfg = await _config(api, receiver.url, activate=False, auth={"type": "api_key", "header": "X-Key", "value": secret},
                        signing_secret="whsec_MDEyMzQ1Njc4OWFiY2RlZg==")
    assert cfg["active"] is False and cfg["auth"]["value"] == "***" and cfg["signing_secret"] == "***"
    status, body = await api.call("POST", f"/api/dispatch-configurations/{cfg['id']}/activate")
    assert status == 422 and "HTTP 403" in body["reason"]
    # the tenant's own name, as everywhere in its answers (the engine's message quotes the stored id)
    assert f"configuration {cfg['id']!r} not activated" in body["detail"] and "~" not in body["detail"] + body["reason"]
    receiver.verify_status = 200
    status, body = await api.call("POST", f"/api/dispatch-configurations/{cfg['id']}/activate")
    assert status == 200 and body["active"] is True
    status, body = await api.call("PATCH", f"/api/dispatch-configurations/{cfg['id']}",
                                  body={"auth": {"type": "api_key", "header": "X-Key", "value": "***"}})
    assert status == 422 and "write-only" in body["detail"]  # the documented shape, refused by a rule
    status, body = await api.call("PATCH", f"/api/dispatch-configurations/{cfg['id']}",
                                  body={"timeouts": {"connect": 2, "total": 5}})
    assert status == 200 and body["version"] == 2 and body["timeouts"] == {"connect": 2, "total": 5}
    for path in ("/api/dispatch-configurations", f"/api/dispatch-configurations/{cfg['id']}"):
        status, body = await api.call("GET", path)
        assert status == 200 and secret not in json.dumps(body)
    status, body = await api.call("POST", f"/api/dispatch-configurations/{cfg['id']}/deactivate")
    assert body["active"] is False
    for method in ("GET", "DELETE"):
        await _same_as_missing(api, method, f"/api/dispatch-configurations/{cfg['id']}", cfg["id"], "nope", key=OTHER)
    assert (await api.call("DELETE", f"/api/dispatch-configurations/{cfg['id']}"))[0] == 204
    assert (await api.call("GET", f"/api/dispatch-configurations/{cfg['id']}"))[0] == 404


async def test_activity_json_equals_dispatched_payload(api: Api, receiver) -> None:
    await _config(api, receiver.url)
    status, created = await api.call("POST", "/api/activities", body={
        "channel": "SALESMAN", "commerceExternalId": "COM-001", "commerceName": "Farmacia Central",
        "reason": {"code": "CHURN_RISK", "label": "Riesgo de fuga"}})
    assert status == 201
    await api.engine.run_until_idle(max_time=60)
    status, shown = await api.call("GET", f"/api/activities/{created['id']}")
    assert status == 200 and shown == created
    assert receiver.posts()[0].body == shown
    status, body = await api.call("GET", f"/api/activities/{created['id']}/deliveries")
    assert [d["status"] for d in body["items"]] == ["DISPATCHED"]
    did = body["items"][0]["id"]
    status, body = await api.call("GET", f"/api/deliveries/{did}/attempts")
    assert [a["status_code"] for a in body["items"]] == [200]


async def _same_as_missing(api: Api, method: str, path: str, real: str, fake: str, *, key: str = ACME) -> None:
    """Another tenant's resource answers exactly as a missing one: 404 and the same body."""
    status, body = await api.call(method, path, key=key)
    missing_status, missing = await api.call(method, path.replace(real, fake), key=key)
    assert status == missing_status == 404, (method, path, body)
    _is_problem(body, 404)
    assert json.loads(json.dumps(body).replace(real, fake)) == missing, (body, missing)


async def test_tenant_isolation(api: Api, receiver) -> None:
    """Another tenant's things are indistinguishable from missing ones; ids in the API are not a sequence."""
    await _config(api, receiver.url)
    _, act = await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    await api.engine.run_until_idle(max_time=60)
    _, listed = await api.call("GET", f"/api/activities/{act['id']}/deliveries")
    did = listed["items"][0]["id"]
    assert did.startswith("msg_") and did == listed["items"][0]["webhook_id"]  # random per activity
    assert (await api.call("GET", "/api/deliveries/1"))[0] == 404  # the internal sequence is not an id
    fake_activity, fake_delivery = "6f1c0d4e-0000-4000-8000-000000000000", "msg_" + "0" * 24
    for method, path, real, fake in (
            ("GET", f"/api/activities/{act['id']}", act["id"], fake_activity),
            ("GET", f"/api/activities/{act['id']}/deliveries", act["id"], fake_activity),
            ("GET", f"/api/deliveries/{did}", did, fake_delivery),
            ("GET", f"/api/deliveries/{did}/attempts", did, fake_delivery),
            ("POST", f"/api/deliveries/{did}/force-retry", did, fake_delivery),
            ("GET", "/api/activities?tenant_id=acme", "acme", "ghost"),
            ("GET", "/api/dispatch-configurations?tenant_id=acme", "acme", "ghost"),
            ("GET", "/api/tenants/acme", "acme", "ghost"),
            ("GET", "/api/accounts/acme/webhook", "acme", "ghost")):
        await _same_as_missing(api, method, path, real, fake, key=OTHER)
    status, body = await api.call("POST", "/api/integration/activity-results/tasks", key=OTHER,
                                  body={"activity_id": act["id"], "status": "COMPLETED"})
    missing_status, missing = await api.call("POST", "/api/integration/activity-results/tasks", key=OTHER,
                                             body={"activity_id": fake_activity, "status": "COMPLETED"})
    assert status == missing_status == 404 and body["detail"].replace(act["id"], fake_activity) == missing["detail"]
    status, body = await api.call("GET", "/api/activities", key=OTHER)
    assert body["items"] == []
    status, body = await api.call("POST", "/api/dispatch-configurations", key=OTHER, body={
        "tenant_id": "acme", "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url})
    assert status == 403  # about the caller's own key: says nothing of tenant acme
    # configuration names are per tenant: acme's name is free for other, and neither sees the other's
    mine = await _config(api, receiver.url, id="crm-hook")
    theirs = await _config(api, receiver.url, key=OTHER, id="crm-hook")
    assert mine["id"] == theirs["id"] == "crm-hook"
    status, body = await api.call("POST", "/api/dispatch-configurations", key=OTHER, body={
        "id": "crm-hook", "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url})
    assert status == 409 and "already exists" in body["detail"]  # its own
    _, listed = await api.call("GET", "/api/dispatch-configurations", key=OTHER)
    assert [c["id"] for c in listed["items"]] == ["crm-hook"]
    _, ds = await api.call("GET", f"/api/activities/{act['id']}/deliveries")
    assert ds["items"][0]["config_id"] == ds["items"][0]["queue"] == "acme.crm.salesman"
    status, body = await api.call("GET", "/api/activities", key=ADMIN)
    assert [a["id"] for a in body["items"]] == [act["id"]]
    _, attempts = await api.call("GET", f"/api/deliveries/{did}/attempts")
    assert [a["id"] for a in attempts["items"]] == [f"{did}.1"] and attempts["items"][0]["delivery_id"] == did


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"channel": "SALESMAN",', "malformed JSON"),
    (b"", "empty"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"channel": "SALESMAN", "commerceName": NaN}', "NaN"),
    (b'{"channel": "SALESMAN", "channel": "X"}', "duplicate key"),
    (b'{"channel": "SALESMAN", "colour": "red"}', "unknown field"),
    (b'{"channel": 7}', "channel"),
    (b'{"channel": "SALESMAN", "reason": "CHURN"}', "reason: must be an object"),
    (b'{"channel": "SALESMAN", "scheduledAt": "tomorrow"}', "scheduledAt"),
    (b'{"channel": "SALESMAN", "id": "x"}', "id: a UUID"),
    (b"\xff\xfe", "UTF-8"),
])
async def test_bad_activity_bodies_are_400_and_store_nothing(api: Api, raw: bytes, fragment: str) -> None:
    status, body = await api.call("POST", "/api/activities", raw=raw)
    assert status == 400, body
    _is_problem(body, 400)
    assert fragment in body["detail"]
    assert api.engine.store.conn.execute("SELECT COUNT(*) FROM activities").fetchone()[0] == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", ["/api/activities", "/api/dispatch-configurations"])
@pytest.mark.parametrize("idempotency_key", [None, "retry-me-1"])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_400_and_stores_nothing(
        api: Api, receiver, caplog, encoding: str, path: str, idempotency_key: str | None) -> None:
    """aiohttp fails on such a body as the handler (or the idempotency check) reads it: that was a 500."""
    raw = json.dumps({"channel": "SALESMAN"} if path.endswith("activities") else
                     {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url}).encode()
    headers = {"Content-Encoding": encoding, **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
    status, body = await api.call("POST", path, raw=raw, headers=headers)
    assert status == 400, body
    _is_problem(body, 400)
    assert body["type"].endswith("/unparsable-request") and f"not valid {encoding} data" in body["detail"]
    for table in ("activities", "configurations"):
        assert api.engine.store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    status, body = await api.call("POST", path, raw=gzip.compress(raw), headers={**headers, "Content-Encoding": "gzip"})
    assert status == 201, body  # the same body compressed as it says is read (and the key was not used up)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # aiohttp's "Unhandled exception" was one


async def test_oversized_body_is_413(api: Api) -> None:
    big = json.dumps({"channel": "SALESMAN", "commerceName": "x" * (1024 * 1024 + 10)}).encode()
    status, body = await api.call("POST", "/api/activities", raw=big)
    assert status == 413
    _is_problem(body, 413)
    assert api.engine.store.conn.execute("SELECT COUNT(*) FROM activities").fetchone()[0] == 0


async def test_bad_configuration_bodies_store_nothing(api: Api, receiver) -> None:
    """Not the documented shape: 400; the documented shape but refused by the engine's rules (a
    mapping that does not compile, a cap below the base): 422. Both name the field, both store nothing."""
    cases = [
        {"provider_id": "crm", "channel": "SALESMAN"},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": 42},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url, "colour": "red"},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": "ftp://x"},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url, "retry": {"base": -1}},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url, "auth": {"type": "magic"}},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url, "mapping": {"fields": 3}},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url, "timeouts": "fast"},
        {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url, "retry": {"base": 60, "cap": 5}},
    ]
    for body in cases:
        status, out = await api.call("POST", "/api/dispatch-configurations", body=body)
        refused_by_rule = "mapping" in body or body.get("retry") == {"base": 60, "cap": 5}
        assert status == (422 if refused_by_rule else 400), (body, out)
        _is_problem(out, status)
        assert out["field"].split(".")[0] in {*body, "endpoint_url"}, out
    status, out = await api.call("POST", "/api/dispatch-configurations",
                                 body={"provider_id": "nope", "channel": "S", "endpoint_url": receiver.url})
    assert status == 404
    assert await api.engine.store.configs() == []


BAD_URLS = ["http://u:pw@127.0.0.1:99999/h", "http://[::1", "http://[zz]/", "http://x:abc/", "http://a b/",
            "http://127.0.0.1:0/x", "http://127.0.0.1:1/x\u0007"]


async def test_an_endpoint_url_no_client_could_use_is_refused_before_anything_is_stored(api: Api, receiver) -> None:
    """A port out of range or not a number, a broken IPv6 host, a space, port 0, a control character;
    credentials in the URL together with an auth type that also sets Authorization: each is a 4xx
    naming the field, on create, on edit and for an account's webhook, and nothing is stored (these
    were 500s, one of them stored first, after which every list of configurations failed)."""
    for url in BAD_URLS:
        status, out = await api.call("POST", "/api/dispatch-configurations",
                                     body={"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": url})
        assert status in (400, 422), (url, out)
        _is_problem(out, status)
        assert out["field"] == "endpoint_url" and "pw" not in json.dumps(out), (url, out)
    status, out = await api.call("POST", "/api/dispatch-configurations", body={
        "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": "http://u:pw@127.0.0.1:1/h",
        "auth": {"type": "bearer", "token": "tok-123456"}})
    assert status == 422 and out["field"] == "endpoint_url" and "Authorization" in out["detail"], out
    assert await api.engine.store.configs() == []
    for key in (ACME, ADMIN):
        status, out = await api.call("GET", "/api/dispatch-configurations", key=key)
        assert status == 200, out
    cfg = await _config(api, receiver.url, activate=False)
    for url in BAD_URLS:
        status, out = await api.call("PATCH", f"/api/dispatch-configurations/{cfg['id']}", body={"endpoint_url": url})
        assert status in (400, 422) and out["field"] == "endpoint_url", (url, out)
        status, out = await api.call("PUT", "/api/accounts/acme/webhook", body={"url": url})
        assert status in (400, 422) and out["field"].split(".")[-1] == "url", (url, out)
    status, out = await api.call("GET", f"/api/dispatch-configurations/{cfg['id']}")
    assert status == 200 and out["endpoint_url"] == receiver.url


async def test_list_filters_and_cursor_pagination(api: Api, receiver) -> None:
    import asyncio

    receiver.respond = lambda hit, n: (500, {}, 0.0) if hit.body["commerceName"] == "bad" else (200, {}, 0.0)
    await _config(api, receiver.url, retry={"max_attempts": 1}, ordering={"mode": "none"})
    ids = []
    for i in range(7):
        channel = "SALESMAN" if i % 2 == 0 else "PHONE"
        name = "bad" if i == 4 else f"c{i}"
        _, a = await api.call("POST", "/api/activities", body={"channel": channel, "commerceName": name})
        ids.append(a["id"])
        await asyncio.sleep(60)  # virtual time
    await api.engine.run_until_idle(max_time=60)
    seen, cursor, pages = [], None, 0
    while True:
        path = "/api/activities?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, body = await api.call("GET", path)
        assert status == 200
        seen += [a["id"] for a in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3
    _, body = await api.call("GET", "/api/activities?channel=PHONE")
    assert [a["id"] for a in body["items"]] == ids[1::2]
    _, body = await api.call("GET", "/api/activities?dispatch_status=FAILED")
    assert [a["id"] for a in body["items"]] == [ids[4]] and body["items"][0]["canForceRetryDispatch"] is True
    _, body = await api.call("GET", "/api/activities?dispatch_status=DISPATCHED&channel=SALESMAN")
    assert [a["id"] for a in body["items"]] == [ids[0], ids[2], ids[6]]
    _, first = await api.call("GET", f"/api/activities/{ids[2]}")
    _, last = await api.call("GET", f"/api/activities/{ids[5]}")
    _, body = await api.call("GET", f"/api/activities?created_from={first['createdAt']}&created_to={last['createdAt']}")
    assert [a["id"] for a in body["items"]] == ids[2:5]
    _, body = await api.call("GET", "/api/activities?status=PENDING&limit=500")
    assert len(body["items"]) == 7
    for bad in ("cursor=zzz", "limit=0", "limit=501", "dispatch_status=LOST", "created_from=yesterday", "colour=1"):
        status, body = await api.call("GET", f"/api/activities?{bad}")
        assert status == 400, bad
        _is_problem(body, 400)


async def test_cursors_and_refusals_tell_a_tenant_nothing_of_the_others_volume(api: Api, receiver) -> None:
    """Page cursors were the global sequence number of the last activity (``a5``, then ``a13``: the
    other tenant created seven in between), and a refused force retry named the store's global
    delivery id. Now a cursor names the last activity by its public id, a cursor of another tenant's
    activity (or of none) is refused in the same words, and refusals name deliveries by webhook-id."""
    for key in (ACME, OTHER):
        await _config(api, receiver.url, key=key, ordering={"mode": "none"})

    async def make(key: str, n: int) -> list[str]:
        return [(await api.call("POST", "/api/activities", key=key, body={"channel": "SALESMAN"}))[1]["id"]
                for _ in range(n)]

    mine = await make(ACME, 1)
    await make(OTHER, 7)
    mine += await make(ACME, 2)
    cursors, seen, cursor = [], [], None
    while True:
        status, body = await api.call("GET", "/api/activities?limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        seen += [a["id"] for a in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert seen == mine and len(cursors) == 2
    # each cursor is the last activity's public id (base64url), nothing the store counts
    assert [base64.urlsafe_b64decode(c[1:] + "=" * (-len(c[1:]) % 4)).decode() for c in cursors] == mine[:2]
    _, theirs = await api.call("GET", "/api/activities?limit=1", key=OTHER)
    for bad in (theirs["next_cursor"], "aZ2hvc3Q", "a" + "_" * 10, "aAA", "a42"):  # aAA: a NUL; a42: an old cursor
        status, body = await api.call("GET", f"/api/activities?limit=1&cursor={bad}")
        assert status == 422 and body["field"] == "cursor" and "previous page" in body["detail"], (bad, body)
    await api.engine.run_until_idle()
    _, act = await api.call("GET", f"/api/activities/{mine[0]}")
    status, body = await api.call("GET", f"/api/activities/{mine[0]}/deliveries")
    public = body["items"][0]["id"] if status == 200 else None
    assert public is not None and public.startswith("msg_"), body
    status, body = await api.call("POST", f"/api/deliveries/{public}/force-retry")
    assert status == 409 and f"delivery {public} is DISPATCHED" in body["detail"], body


async def test_a_configuration_with_deliveries_waiting_is_not_deleted_and_ids_are_not_reused(api: Api,
                                                                                               receiver) -> None:
    """Deleting a configuration whose deliveries still wait to be sent stranded them: pending for ever,
    nothing to send or end them. It is now a 409 naming why, and works once they have ended. A deleted
    configuration's id is not reused, and the 409 for it says so (it said the configuration exists,
    while reading it answered 404)."""
    receiver.respond = lambda hit, n: (503, {}, 0.0)
    cfg = await _config(api, receiver.url, id="hang", retry={"max_attempts": 2, "base": 1})
    await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    await api.engine.run_until_idle(max_time=0.5)  # the first try failed: RETRYING, the second waits
    status, body = await api.call("DELETE", f"/api/dispatch-configurations/{cfg['id']}")
    assert status == 409 and "waiting to be sent" in body["detail"] and "~" not in body["detail"], body
    assert (await api.call("GET", f"/api/dispatch-configurations/{cfg['id']}"))[0] == 200
    await api.engine.run_until_idle()  # every try fails: both end FAILED
    assert {d.status for d in await api.engine.deliveries()} == {"FAILED"}
    assert (await api.call("DELETE", f"/api/dispatch-configurations/{cfg['id']}"))[0] == 204
    # nothing would send a deleted configuration's delivery again: a force retry is refused (and a
    # replay of a FAILED one), naming it by its webhook-id
    [public, *_] = [d.webhook_id for d in await api.engine.deliveries()]
    status, body = await api.call("POST", f"/api/deliveries/{public}/force-retry")
    assert status == 409 and body["detail"] == f"delivery {public} cannot be retried: its configuration was deleted"
    status, body = await api.call("POST", f"/api/deliveries/{public}/replay")
    assert status == 409 and body["detail"].startswith(f"delivery {public} "), body
    assert {d.status for d in await api.engine.deliveries()} == {"FAILED"}
    status, body = await api.call("POST", "/api/dispatch-configurations", body={
        "id": "hang", "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url})
    assert status == 409 and "deleted configuration" in body["detail"] and "not reused" in body["detail"], body


async def test_results_flow_is_validated_and_idempotent(api: Api, receiver) -> None:
    await _config(api, receiver.url)
    _, act = await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    url = "/api/integration/activity-results/tasks"
    result = {"activity_id": act["id"], "status": "COMPLETED", "result": {"outcome": "DONE"}}
    for bad, fragment in (({"status": "COMPLETED"}, "activity_id: required"),
                          ({"activity_id": "not-a-uuid", "status": "DONE"}, "UUID"),
                          ({"activity_id": act["id"]}, "status: required"),
                          ({**result, "result": "DONE"}, "result: must be an object"),
                          ({**result, "extra": 1}, "unknown field")):
        status, body = await api.call("POST", url, body=bad)
        assert status == 400 and fragment in body["detail"], body
    status, body = await api.call("POST", url, body={**result, "activity_id": "00000000-0000-4000-8000-000000000000"})
    assert status == 404
    status, first = await api.call("POST", url, body=result)
    assert status == 201 and first["activityResult"]["status"] == "COMPLETED"
    assert first["activityResult"]["result"] == {"outcome": "DONE"}
    status, again = await api.call("POST", url, body=result)
    assert status == 200 and again == first
    status, body = await api.call("POST", url, body={**result, "status": "CANCELLED"})
    assert status == 409 and body["activityResult"]["status"] == "COMPLETED"
    _, shown = await api.call("GET", f"/api/activities/{act['id']}")
    assert shown["activityResult"] == first["activityResult"]


async def test_results_rule_is_the_engines_so_library_and_api_agree(api: Api, receiver) -> None:
    """A result given through the library is the one the API guards: same again 200, different 409."""
    await _config(api, receiver.url)
    _, act = await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    result = {"status": "COMPLETED", "result": None, "completedAt": None, "comment": "by library"}
    done = await api.engine.submit_result(act["id"], result)
    url = "/api/integration/activity-results/tasks"
    status, again = await api.call("POST", url, body={"activity_id": act["id"], **result})
    assert status == 200 and again == done.activity
    status, body = await api.call("POST", url, body={"activity_id": act["id"], **result, "comment": "by API"})
    assert status == 409 and body["activityResult"] == done.activity["activityResult"]
    with pytest.raises(ResultConflict):
        await api.engine.submit_result(act["id"], {**result, "comment": "by API"})


async def test_secrets_and_empty_edits_refused_alike_through_api(api: Api, receiver) -> None:
    cfg = await _config(api, receiver.url)
    path = f"/api/dispatch-configurations/{cfg['id']}"
    status, body = await api.call("PATCH", path, body={"signing_secret": "***"})
    assert status == 422 and "write-only" in body["detail"]
    status, body = await api.call("PATCH", path, body={})
    assert status == 400 and "nothing to change" in body["detail"]
    status, body = await api.call("GET", "/api/activities?dispatch_status=NOPE")
    assert status == 400 and "dispatch_status" in body["detail"]


async def test_force_retry_through_the_api(api: Api, receiver) -> None:
    receiver.respond = lambda hit, n: (503, {}, 0.0) if n <= 2 else (200, {}, 0.0)
    await _config(api, receiver.url, retry={"max_attempts": 2})
    _, act = await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    await api.engine.run_until_idle(max_time=3600)
    _, deliveries = await api.call("GET", f"/api/activities/{act['id']}/deliveries")
    d = deliveries["items"][0]
    assert d["status"] == "FAILED" and d["canForceRetryDispatch"] is True
    _, shown = await api.call("GET", f"/api/activities/{act['id']}")
    assert shown["canForceRetryDispatch"] is True
    status, body = await api.call("POST", f"/api/deliveries/{d['id']}/force-retry")
    assert status == 200 and body["status"] == "READY"
    status, body = await api.call("POST", f"/api/deliveries/{d['id']}/force-retry")
    assert status == 409
    _is_problem(body, 409)
    await api.engine.run_until_idle(max_time=3600)
    _, body = await api.call("GET", f"/api/deliveries/{d['id']}")
    assert body["status"] == "DISPATCHED"
    _, attempts = await api.call("GET", f"/api/deliveries/{d['id']}/attempts")
    assert [a["status_code"] for a in attempts["items"]] == [503, 503, 200]
    for path in ("/api/deliveries/999/force-retry", "/api/deliveries/abc/force-retry"):
        assert (await api.call("POST", path))[0] == 404


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    status, body = await api.call("GET", "/api/nothing-here")
    assert status == 404
    _is_problem(body, 404)
    status, body = await api.call("PUT", "/api/activities", body={})
    assert status == 405
    _is_problem(body, 405)


async def test_metrics_in_prometheus_text(api: Api, receiver) -> None:
    receiver.respond = lambda hit, n: (503, {}, 0.0) if n == 1 else (200, {}, 0.0)
    await _config(api, receiver.url)
    for _ in range(2):
        await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    await api.engine.run_until_idle(max_time=3600)
    await api.call("POST", "/api/activities", body={"channel": "SALESMAN"})
    # the counts are of all tenants together: a tenant's key is refused, and no key at all
    assert (await api.call("GET", "/metrics", key=ACME))[0] == 403
    async with api.session.get("/metrics") as resp:
        assert resp.status == 401
    async with api.session.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    samples = [line.split("{")[0].split()[0] for line in text.splitlines() if not line.startswith("#")]
    for name in samples:  # every sample belongs to a metric with HELP and TYPE
        assert any(name == m or name.startswith(m + "_") for m in helped & typed), name
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert values[("dispatchsim_activities_total", ())] == 3
    assert values[("dispatchsim_deliveries_total", ())] == 3
    assert values[("dispatchsim_delivery_transitions_total", (("status", "DISPATCHED"),))] == 2
    assert values[("dispatchsim_delivery_transitions_total", (("status", "RETRYING"),))] == 1
    assert values[("dispatchsim_attempts_total", (("outcome", "SUCCESS"),))] == 2
    assert values[("dispatchsim_attempts_total", (("outcome", "HTTP_ERROR"),))] == 1
    assert values[("dispatchsim_attempt_latency_seconds_count", ())] == 3
    assert values[("dispatchsim_attempt_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    assert families["dispatchsim_dispatch_lag_seconds"].type == "histogram"
    assert values[("dispatchsim_dispatch_lag_seconds_count", ())] == 3
    # the first try and the retry (60 s later, when it was due) start on time; the second activity
    # waited behind the retrying head of its ordered queue: it started a minute after it was due
    assert values[("dispatchsim_dispatch_lag_seconds_bucket", (("le", "0.001"),))] == 2
    assert 59 < values[("dispatchsim_dispatch_lag_seconds_sum", ())] < 61
    assert values[("dispatchsim_http_requests_total", (("method", "POST"), ("route", "/api/activities"),
                                                       ("status", "201")))] == 3


async def test_openapi_documents_exactly_the_routes(api: Api) -> None:
    routed = {(op.method.lower(), op.path) for op in ROUTES}
    registered = {(r.method.lower(), r.resource.canonical) for r in api.app.router.routes()
                  if r.method != "HEAD" and not is_console_path(r.resource.canonical)}  # pages, not API
    assert routed == registered
    _, doc = await api.call("GET", "/api/openapi.json", key=None)
    assert doc == json.loads(json.dumps(openapi_document()))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == routed, (sorted(documented - routed), sorted(routed - documented))
    for p, ops in doc["paths"].items():
        for m, op in ops.items():
            params = {x["name"] for x in op.get("parameters", []) if x["in"] == "path"}
            assert params == set(__import__("re").findall(r"{(\w+)}", p)), (m, p)
