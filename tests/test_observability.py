"""Serve mode's observability through real HTTP on 127.0.0.1: request ids and the access log,
every ``logging`` record as one structlog JSON line, ``/readyz``, and key revocation and rotation."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from dispatchsim.cli import main
from dispatchsim.engine import Engine, Store
from dispatchsim.server.api import make_app
from dispatchsim.server.keys import KeyRing
from dispatchsim.server.logs import route_stdlib_logging
from support import run_sync

ACME = "acme-key-0000000000000"


@pytest.fixture
async def served(engine: Engine) -> AsyncIterator[tuple[aiohttp.ClientSession, Engine]]:
    await engine.add_tenant("acme")
    runner = web.AppRunner(make_app(engine, keys=KeyRing(engine.store, {ACME: "acme"})), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session, engine
    finally:
        await runner.cleanup()


def _events(engine: Engine) -> list[dict]:
    return [json.loads(line) for line in engine.log_buffer.getvalue().splitlines()]  # type: ignore[attr-defined]


async def test_every_request_has_an_id_in_its_header_its_access_event_and_its_events(served) -> None:
    session, engine = served
    async with session.post("/api/activities", json={"channel": "SALESMAN"}, headers={"X-Api-Key": ACME}) as resp:
        assert resp.status == 201
        rid = resp.headers["X-Request-Id"]
    assert rid.startswith("req_")
    async with session.get("/api/nowhere", headers={"X-Api-Key": ACME, "X-Request-Id": "trace-42"}) as resp:
        assert resp.status == 404 and resp.headers["X-Request-Id"] == "trace-42"
    async with session.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"}) as resp:
        assert resp.headers["X-Request-Id"].startswith("req_")  # not a token: replaced, never echoed
    events = _events(engine)
    access = [e for e in events if e["event"] == "http.request"]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [
        ("POST", "/api/activities", 201), ("GET", "/api/nowhere", 404), ("GET", "/healthz", 200)]
    assert access[0]["request_id"] == rid and access[1]["request_id"] == "trace-42"
    assert all(isinstance(e["duration_ms"], float) for e in access)
    created = [e for e in events if e["event"] == "activity.not_dispatched"]
    assert created and created[0]["request_id"] == rid  # an event logged while the request ran carries its id
    assert all("request_id" not in e for e in events if e["event"] == "tenant.created")


async def test_aiohttp_and_stdlib_records_are_one_json_line_each(served) -> None:
    session, engine = served
    undo = route_stdlib_logging(engine.log, engine.redactor)
    try:
        port = session._base_url.port  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")  # what a TLS client sends to a plain port
        await writer.drain()
        await reader.read()
        writer.close()
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("some.library").exception("it failed")
        logging.getLogger("other.library").critical("it is on fire")
    finally:
        undo()
    lines = engine.log_buffer.getvalue().splitlines()  # type: ignore[attr-defined]
    records = [json.loads(line) for line in lines if '"log.record"' in line]  # every line is JSON
    assert {r["logger"] for r in records} >= {"some.library"}
    lib = next(r for r in records if r["logger"] == "some.library")
    assert lib["level"] == "error" and lib["message"] == "it failed" and lib["error"] == "ValueError: boom"
    assert next(r for r in records if r["logger"] == "other.library")["level"] == "critical"
    assert not any("Traceback" in line for line in lines)
    assert logging.getLogger().handlers == [] or all(
        type(h).__name__ != "StructlogHandler" for h in logging.getLogger().handlers)


async def test_readyz_checks_database_migrations_and_dispatcher(served) -> None:
    session, engine = served
    async with session.get("/readyz") as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 503 and resp.content_type == "application/problem+json"
        assert body["checks"] == {"database": "ok", "migrations": "ok", "dispatcher": "not running"}
        assert "dispatcher" in body["detail"]
    engine.start()
    async with session.get("/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"
    current = (await engine.store.schema_version())
    engine.store.conn.execute(f"PRAGMA user_version = {current - 1}")
    try:
        async with session.get("/readyz") as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 503 and body["checks"]["migrations"] == f"schema {current - 1}, expected {current}"
    finally:
        engine.store.conn.execute(f"PRAGMA user_version = {current}")
    async with session.get("/healthz") as resp:
        assert resp.status == 200  # liveness does not depend on readiness


def test_keys_revoke_and_rotate(tmp_path, capsys) -> None:
    db = str(tmp_path / "keys.db")
    assert main(["keys", "create", "--db", db, "--tenant", "acme", "--create-tenant"]) == 0
    first = capsys.readouterr().out.strip()
    store = Store(db)
    ring = KeyRing(store)
    old = run_sync(ring.lookup(first))
    assert old is not None and old.tenant_id == "acme"
    run_sync(store.close())

    assert main(["keys", "rotate", old.key_id, "--db", db]) == 0
    out = capsys.readouterr()
    second = out.out.strip()
    assert second.startswith("dsk_") and second != first and "no longer works" in out.err
    assert second not in out.err  # printed once, on standard output
    store = Store(db)
    ring = KeyRing(store)
    assert run_sync(ring.lookup(first)) is None
    new = run_sync(ring.lookup(second))
    assert new is not None and new.tenant_id == "acme" and new.key_id != old.key_id
    run_sync(store.close())

    assert main(["keys", "rotate", old.key_id, "--db", db]) == 2  # a revoked key cannot be rotated again
    assert "no active key" in capsys.readouterr().err
    assert main(["keys", "revoke", new.key_id, "--db", db]) == 0
    store = Store(db)
    assert run_sync(KeyRing(store).lookup(second)) is None
    run_sync(store.close())
    assert main(["keys", "revoke", new.key_id, "--db", db]) == 2
    assert main(["keys", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert listing.count("revoked") == 2 and first not in listing and second not in listing


async def test_a_lone_surrogate_is_400_naming_the_field_and_405_lists_allow(served) -> None:
    session, engine = served
    headers = {"X-Api-Key": ACME, "Content-Type": "application/json"}
    for raw, field in ((b'{"channel": "SALESMAN", "activityDetails": {"note": "\\ud800"}}', "activityDetails.note"),
                       (b'{"channel": "\\udfff"}', "channel"),
                       (b'{"channel": "SALESMAN", "\\ud83d": 1}', "\\ud83d")):
        async with session.post("/api/activities", data=raw, headers=headers) as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 400 and resp.content_type == "application/problem+json", body
            assert body["field"] == field and "surrogate" in body["detail"]
            assert body["errors"] == [{"field": field, "message": body["detail"].split(f"{field}: ", 1)[1]}]
    # a proper pair (an emoji) is text
    async with session.post("/api/activities", data=b'{"channel": "SALESMAN", "commerceName": "\\ud83d\\ude00"}',
                            headers=headers) as resp:
        assert resp.status == 201 and (await resp.json())["commerceName"] == "\U0001F600"
    async with session.delete("/api/activities", headers=headers) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET, POST"
        assert (await resp.json(content_type=None))["status"] == 405
