"""Idempotency-Key and caller-chosen activity ids through real HTTP on 127.0.0.1 (virtual clock).

A "restart" closes the engine and the HTTP server and opens new ones on the same database file.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from dispatchsim.engine import Engine, IdempotencyStore
from dispatchsim.server.api import IDEMPOTENCY_KEY, make_app
from dispatchsim.server.idempotency import ABANDONED_AFTER, fingerprint
from dispatchsim.server.keys import KeyRing

ADMIN, ACME, OTHER = "admin-key-000000000000", "acme-key-0000000000000", "other-key-000000000000"
ACTIVITY = {"channel": "SALESMAN", "commerceExternalId": "c-1"}


class Client:
    def __init__(self, session: aiohttp.ClientSession, app: web.Application, engine: Engine) -> None:
        self.session, self.app, self.engine = session, app, engine

    async def post(self, path: str, body: Any = None, *, key: str = ACME, idem: str | None = None,
                   raw: bytes | None = None) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        headers = {"X-Api-Key": key, "Content-Type": "application/json"}
        if idem is not None:
            headers["Idempotency-Key"] = idem
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with self.session.post(path, data=data, headers=headers) as resp:
            return resp.status, json.loads(await resp.text() or "null"), resp.headers

    async def count(self, path: str = "/api/activities", key: str = ACME) -> int:
        async with self.session.get(path, headers={"X-Api-Key": key}) as resp:
            return len((await resp.json())["items"])


@asynccontextmanager
async def serving(db: Path, *, retention: float = 3600.0, first: bool = False) -> AsyncIterator[Client]:
    engine = await Engine.open(db, virtual=True, seed=1)
    if first:
        await engine.add_tenant("acme")
        await engine.add_tenant("other")
        await engine.add_provider("crm")
    app = make_app(engine, keys=KeyRing(engine.store, {ADMIN: None, ACME: "acme", OTHER: "other"}),
                   idempotency_retention=retention)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield Client(session, app, engine)
    finally:
        await runner.cleanup()
        await engine.close()


async def test_same_key_same_body_returns_the_first_answer_and_creates_nothing(db_path: Path) -> None:
    async with serving(db_path, first=True) as api:
        s1, b1, h1 = await api.post("/api/activities", ACTIVITY, idem="k-1")
        assert s1 == 201 and "Idempotent-Replayed" not in h1
        # the same JSON with other key order and spacing is the same request
        s2, b2, h2 = await api.post("/api/activities", raw=b'{ "commerceExternalId": "c-1",  "channel": "SALESMAN"}',
                                    idem="k-1")
        assert (s2, b2) == (s1, b1) and h2["Idempotent-Replayed"] == "true" and h2["Location"] == h1["Location"]
        assert await api.count() == 1
        s3, _, _ = await api.post("/api/activities", ACTIVITY, idem="k-2")
        assert s3 == 201 and await api.count() == 2


async def test_same_key_other_body_is_422_naming_the_header(db_path: Path) -> None:
    async with serving(db_path, first=True) as api:
        assert (await api.post("/api/activities", ACTIVITY, idem="k-1"))[0] == 201
        status, body, headers = await api.post("/api/activities", {**ACTIVITY, "commerceExternalId": "c-2"},
                                               idem="k-1")
        assert status == 422 and headers["Content-Type"].startswith("application/problem+json")
        assert "Idempotency-Key" in body["detail"] and body["field"] == "Idempotency-Key"
        # another path with the same key and body is another request too
        status, body, _ = await api.post("/api/activities?tenant_id=acme", ACTIVITY, idem="k-1")
        assert status == 422
        assert await api.count() == 1


async def test_keys_are_per_tenant_and_survive_a_restart(db_path: Path) -> None:
    async with serving(db_path, first=True) as api:
        s1, b1, _ = await api.post("/api/activities", ACTIVITY, idem="shared")
        s2, b2, _ = await api.post("/api/activities", ACTIVITY, idem="shared", key=OTHER)
        assert s1 == s2 == 201 and b1["id"] != b2["id"]  # another tenant's key of the same name is its own
    async with serving(db_path) as api:
        status, body, headers = await api.post("/api/activities", ACTIVITY, idem="shared")
        assert (status, body) == (201, b1) and headers["Idempotent-Replayed"] == "true"
        assert await api.count() == 1 and await api.count(key=OTHER) == 1


async def test_keys_expire_after_the_retention_and_the_job_forgets_them(db_path: Path) -> None:
    async with serving(db_path, retention=600.0, first=True) as api:
        s1, b1, _ = await api.post("/api/activities", ACTIVITY, idem="k-1")
        await asyncio.sleep(599)  # virtual time
        assert (await api.post("/api/activities", ACTIVITY, idem="k-1"))[1] == b1
        idem = api.app[IDEMPOTENCY_KEY]
        assert await idem.expire() == 0
        await asyncio.sleep(2)
        status, body, headers = await api.post("/api/activities", ACTIVITY, idem="k-1")
        assert status == 201 and body["id"] != b1["id"] and "Idempotent-Replayed" not in headers
        await asyncio.sleep(601)
        assert await idem.expire() == 1 and await IdempotencyStore(api.engine.store).count() == 0


async def test_every_creating_post_honours_the_key(tmp_path: Path, receiver) -> None:
    # its own file: the receiver's engine (the fixture) owns db_path
    async with serving(tmp_path / "api.db", first=True) as api:
        cfg = {"provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url,
               "retry": {"max_attempts": 1}}
        s1, c1, _ = await api.post("/api/dispatch-configurations", cfg, idem="cfg")
        s2, c2, _ = await api.post("/api/dispatch-configurations", cfg, idem="cfg")
        assert s1 == s2 == 201 and c1 == c2
        async with api.session.get("/api/dispatch-configurations", headers={"X-Api-Key": ACME}) as resp:
            assert len((await resp.json())["items"]) == 1
        _, act, _ = await api.post("/api/activities", ACTIVITY)
        result = {"activity_id": act["id"], "status": "COMPLETED"}
        first = await api.post("/api/integration/activity-results/tasks", result, idem="res")
        again = await api.post("/api/integration/activity-results/tasks", result, idem="res")
        assert first[0] == again[0] == 201 and first[1] == again[1] and again[2]["Idempotent-Replayed"] == "true"
        s, body, _ = await api.post(f"/api/dispatch-configurations/{c1['id']}/recover", {"since": None}, idem="rec")
        assert s == 200
        assert (await api.post(f"/api/dispatch-configurations/{c1['id']}/recover", {"since": None},
                               idem="rec"))[1] == body


async def test_a_failed_request_keeps_nothing_and_a_bad_key_is_400(db_path: Path) -> None:
    async with serving(db_path, first=True) as api:
        status, body, _ = await api.post("/api/activities", {"channel": 5}, idem="k-1")
        assert status == 400
        assert (await api.post("/api/activities", ACTIVITY, idem="k-1"))[0] == 201  # the key was not used up
        status, body, _ = await api.post("/api/activities", ACTIVITY, idem="x" * 256)
        assert status == 400 and "Idempotency-Key" in body["detail"]
        assert await api.count() == 1


async def test_a_request_while_the_first_with_its_key_runs_is_409_until_abandoned(db_path: Path) -> None:
    async with serving(db_path, first=True) as api:
        store = api.app[IDEMPOTENCY_KEY].store
        now = api.engine.clock.now()
        raw = json.dumps(ACTIVITY).encode()
        # the reservation a first request holds while it runs (or left when its process died mid-request)
        assert await store.reserve("acme", "busy", fingerprint("POST", "/api/activities", raw), now,
                                   expired_before=0, abandoned_before=0) is None
        status, body, _ = await api.post("/api/activities", raw=raw, idem="busy")
        assert status == 409 and body["field"] == "Idempotency-Key" and await api.count() == 0
        await asyncio.sleep(ABANDONED_AFTER + 1)  # virtual time: nobody will ever answer it
        assert (await api.post("/api/activities", raw=raw, idem="busy"))[0] == 201


async def test_caller_supplied_activity_id_and_duplicate_409(db_path: Path) -> None:
    async with serving(db_path, first=True) as api:
        aid = str(uuid.UUID(int=42))
        status, body, headers = await api.post("/api/activities", {**ACTIVITY, "id": aid})
        assert status == 201 and body["id"] == aid and headers["Location"] == f"/api/activities/{aid}"
        status, body, _ = await api.post("/api/activities", {**ACTIVITY, "id": aid})
        assert status == 409 and body["field"] == "id" and aid in body["detail"]
        status, body, _ = await api.post("/api/activities", {**ACTIVITY, "id": aid}, key=OTHER)
        assert status == 409
        status, body, _ = await api.post("/api/activities", {**ACTIVITY, "id": "not-a-uuid"})
        assert status == 400 and "id" in body["detail"]
        assert await api.count() == 1


async def test_a_request_the_database_could_not_take_is_503_and_its_key_is_free_once_it_is_back(db_path: Path) -> None:
    """The database went away mid-request (a PostgreSQL restart): the engine raised StorageUnavailable,
    which the API answered 400, as if the request were wrong, and the key's reservation could not be
    freed either, so the client's retry with its key got 409 "still running" for a minute. Now: 503 with
    Retry-After, and the reservation is freed as soon as the database takes writes again, so the retry
    is answered. Both failures are injected into the real engine and store; HTTP and SQLite are real."""
    from dispatchsim.engine import StorageUnavailable

    async with serving(db_path, first=True) as api:
        idem_store, real_create, real_release = (api.app[IDEMPOTENCY_KEY].store, api.engine.create_activity,
                                                 api.app[IDEMPOTENCY_KEY].store.release)

        async def unavailable(*args, **kwargs):
            raise StorageUnavailable("storage unavailable: injected; nothing was stored, retry later")

        api.engine.create_activity, idem_store.release = unavailable, unavailable
        status, body, headers = await api.post("/api/activities", ACTIVITY, idem="k-1")
        assert (status, body["type"].rsplit("/", 1)[-1], headers["Retry-After"]) == (503, "storage-unavailable", "5")
        async with api.session.get("/api/activities", headers={"X-Api-Key": ACME}) as resp:
            assert resp.status == 200
        api.engine.create_activity, idem_store.release = real_create, real_release  # the database is back
        status, body, _ = await api.post("/api/activities", ACTIVITY, idem="k-1")
        assert status == 201 and await api.count() == 1
        assert api.app[IDEMPOTENCY_KEY].unreleased == set()
