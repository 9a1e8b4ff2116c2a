"""Serve mode on PostgreSQL, end to end and in one process: two workers on one database, the HTTP API,
a real receiver on 127.0.0.1, ``/metrics`` and ``dispatchsim status``.

The servers, the receiver and the test share one real-time loop (the ``postgres`` marker); waits
are for what the receiver records, with a deadline.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psycopg
import pytest

from dispatchsim.engine import ConfigError, ConsoleSession, Engine, StorageUnavailable
from dispatchsim.engine.store_pg import JOB_LOCK
from dispatchsim.server.console_sessions import COOKIE
from dispatchsim.server.keys import create_key, revoke_key
from dispatchsim.server.serve import Server, ServeOptions, load_serve_config
from dispatchsim.status import status_report
from support import Receiver

pytestmark = pytest.mark.postgres
ADMIN = "admin-key-000000000000"


async def _until(cond, what: str, timeout: float = 20.0) -> None:
    """Wait for ``cond()`` (true, or awaitable to true) on the real clock, checking every 20 ms."""
    end = time.monotonic() + timeout
    while not ((await v) if inspect.isawaitable(v := cond()) else v):
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def workers(pg_url: str) -> AsyncIterator[list[Server]]:
    servers = [Server(ServeOptions(db=pg_url, port=0, keys={ADMIN: None}, tenants=["acme"], providers=["crm"],
                                   pool_size=3, sweep_interval=0.2, shutdown_deadline=2.0),
                      log_stream=io.StringIO()) for _ in range(2)]
    try:
        for s in servers:
            await s.start()
        yield servers
    finally:
        for s in servers:
            await s.stop()


async def _all_dispatched(server: Server, n: int) -> bool:
    assert server.engine is not None
    return (await server.engine.counts())["DISPATCHED"] == n


async def _call(session: aiohttp.ClientSession, server: Server, method: str, path: str,
                body: object = None) -> tuple[int, object]:
    async with session.request(method, f"http://127.0.0.1:{server.port}{path}", json=body,
                               headers={"X-Api-Key": ADMIN}) as r:
        return r.status, (await r.json() if r.content_type.endswith("json") else await r.text())


async def _configure(http: aiohttp.ClientSession, creator: Server, activator: Server, url: str, ordering: str) -> None:
    """The test configuration crm-hook (fast retries), created on one worker and activated on another."""
    status, created = await _call(http, creator, "POST", "/api/dispatch-configurations", {
        "id": "crm-hook", "tenant_id": "acme", "provider_id": "crm", "channel": "SALESMAN",
        "endpoint_url": url, "ordering": ordering, "retry": {"base": 0.05, "factor": 2, "cap": 0.2}})
    assert status == 201
    status, view = await _call(http, activator, "POST", f"/api/dispatch-configurations/{created['id']}/activate")
    assert status == 200 and view["active"] is True


async def test_two_workers_deliver_in_order_and_report_from_the_shared_database(workers: list[Server],
                                                                                pg_url: str) -> None:
    a, b = workers
    async with Receiver(time.time) as rx, aiohttp.ClientSession() as http:
        await _configure(http, a, b, rx.url, "ordered")  # the other worker activates what the first created
        rx.respond = lambda hit, n: (503, {}, 0.0) if n <= 3 else (200, {}, 0.01)  # the first tries fail
        ids = []
        for n in range(12):  # arriving on both workers
            status, act = await _call(http, (a, b)[n % 2], "POST", "/api/activities?tenant_id=acme",
                                      {"channel": "SALESMAN", "commerceExternalId": f"c{n}"})
            assert status == 201
            ids.append(act["id"])
        await _until(lambda: len({h.body["id"] for h in rx.posts()}) == 12 and len(rx.posts()) >= 15,
                     "every activity to reach the receiver")
        firsts = []
        for h in rx.posts():
            if h.body["id"] not in firsts:
                firsts.append(h.body["id"])
        assert firsts == ids  # one ordered queue across both workers: creation order
        status, listing = await _call(http, b, "GET", "/api/activities?tenant_id=acme&limit=50")
        assert status == 200 and len(listing["items"]) == 12
        await _until(lambda: _all_dispatched(a, 12), "the deliveries to be recorded DISPATCHED")
        dispatched = 0.0
        for w in workers:  # each worker's /metrics counts what it did; together, every delivery once
            async with http.get(f"http://127.0.0.1:{w.port}/metrics", headers={"X-Api-Key": ADMIN}) as r:
                for line in (await r.text()).splitlines():
                    if line.startswith('dispatchsim_delivery_transitions_total{status="DISPATCHED"}'):
                        dispatched += float(line.split()[-1])
        assert dispatched == 12
    out = io.StringIO()
    assert await status_report(pg_url, out) == 0
    report = out.getvalue()
    assert report.startswith("postgresql://") and "deliveries: READY 0, DISPATCHED 12, RETRYING 0, FAILED 0" in report


def test_the_serve_config_takes_pool_size_and_lease_margin(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("pool_size: 4\nlease_margin: 2.5\nclaim_chunk: 10\n")
    opts = load_serve_config(cfg, ServeOptions(db="postgresql:///x"))
    assert (opts.pool_size, opts.lease_margin, opts.claim_chunk) == (4, 2.5, 10)
    cfg.write_text("pool_size: 0\nlease_margin: 0\n")
    with pytest.raises(ConfigError) as err:
        load_serve_config(cfg, ServeOptions(db="postgresql:///x"))
    assert "serve.yaml:1: pool_size: a whole number between 1 and 1000, got 0" in str(err.value)
    assert "serve.yaml:2: lease_margin: seconds between 0.5 and 3600, got 0" in str(err.value)


async def test_the_virtual_clock_is_sqlites(pg_url: str) -> None:
    with pytest.raises(ConfigError, match="virtual clock runs on a SQLite database"):
        await Engine.open(pg_url, virtual=True)


async def test_a_seed_is_refused_on_a_shared_database(pg_url: str) -> None:
    """Two engines opened with one seed would make the same activity ids and lease tokens."""
    with pytest.raises(ConfigError, match="engines sharing a PostgreSQL database need unique ids") as err:
        await Engine.open(pg_url, seed=7)
    assert err.value.field == "seed"


def test_a_scenario_refuses_a_postgresql_database(capsys) -> None:
    from dispatchsim.cli import main

    scenario = Path(__file__).resolve().parent.parent / "scenarios" / "happy_path_seed_payload.yaml"
    assert main(["run", str(scenario), "--db", "postgresql://app:s3cret@127.0.0.1:1/x", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--db takes a SQLite file: a scenario runs on the virtual clock" in err and "s3cret" not in err


async def test_a_circuit_one_worker_opens_holds_for_the_other(pg_url: str) -> None:
    """Worker A's failures open the circuit; worker B, which read the endpoint's health as closed when it
    started, stops sending to it too (serve mode shares health this way on PostgreSQL)."""
    async with Receiver(time.time) as rx:
        rx.respond = lambda hit, n: (500, {}, 0.0)
        a, b = await Engine.open(pg_url, pool_size=3), await Engine.open(pg_url, pool_size=3)
        try:
            for e in (a, b):
                e.dispatcher.share_health(every=0.05)
            await a.add_tenant("acme")
            await a.add_provider("crm")
            await a.add_config("acme", "crm", "SALESMAN", config_id="crm", endpoint_url=rx.url, activate=True,
                               retry={"base": 600, "max_attempts": None}, ordering={"mode": "none", "concurrency": 1},
                               circuit_breaker={"window": 60, "failure_rate": 0.5, "min_requests": 2,
                                                "cooldown": 600})
            assert (await b.health("crm"))["circuit"] == "closed"
            for _ in range(2):
                await a.create_activity("acme", {"channel": "SALESMAN"})
            for _ in range(100):  # two tries one after the other (concurrency 1): a second was too short under load
                await a.run_for(0.1)
                if len(rx.posts()) >= 2 and (await a.health("crm"))["circuit"] == "open":
                    break
            assert (await a.health("crm"))["circuit"] == "open" and len(rx.posts()) == 2
            for _ in range(50):  # what is shared is what A has stored: let its dispatcher write it
                if any(r.config_id == "crm" and r.circuit.value == "open" for r in await a.store.health_rows()):
                    break
                await a.run_for(0.1)
            else:
                raise AssertionError("worker A never stored its open circuit")
            await b.create_activity("acme", {"channel": "SALESMAN"})  # due now, on the other worker
            await b.run_for(0.5)
            assert (await b.health("crm"))["circuit"] == "open"
            assert len(rx.posts()) == 2  # B sent nothing: the circuit A opened holds for it
        finally:
            await a.close()
            await b.close()


async def test_a_cluster_wide_job_keeps_one_leader_when_the_leaders_lock_session_ends(pg_url: str,
                                                                                      pg_server) -> None:
    """The server ends the leader's lock session (pg_terminate_backend): the old leader notices at its
    next run and stops, the other takes the freed lock, and the job runs once per interval throughout,
    counted from the job's own log line on each worker."""
    streams = [io.StringIO(), io.StringIO()]
    servers = [Server(ServeOptions(db=pg_url, port=0, keys={ADMIN: None}, tenants=["acme"], providers=["crm"],
                                   pool_size=2, retention_days=30, sweep_interval=3600, shutdown_deadline=2.0),
                      log_stream=log)
               for log in streams]
    try:
        for s in servers:
            await s.start()
        runs = [s._cluster_wide("retention", s.retention) for s in servers]  # the job as the scheduler runs it

        def ran() -> list[int]:
            return [log.getvalue().count('"serve.retention"') for log in streams]

        async def interval(order: tuple[int, ...]) -> list[int]:
            before = ran()
            for n in order:
                await runs[n]()
            return [after - b for after, b in zip(ran(), before)]

        assert await interval((0, 1)) == [1, 0]
        assert await interval((1, 0)) == [1, 0]
        assert pg_server.end_lock_sessions(pg_url, JOB_LOCK) == 1  # the leader's lock session; its pool stays
        assert await interval((1, 0)) == [0, 1]  # the other worker takes it; the old leader does not run
        for order in ((0, 1), (1, 0), (0, 1)):
            assert await interval(order) == [0, 1]  # and does not take it back while it is held
        assert servers[0].cluster is not None and servers[0].cluster.leading == []
    finally:
        for s in servers:
            await s.stop()


async def test_workers_whose_connections_keep_being_ended_go_on_dispatching(workers: list[Server], pg_server,
                                                                             pg_url: str) -> None:
    """The server ends every connection of the database again and again while two workers dispatch (as a
    reviewer did with pg_terminate_backend in a loop: one worker's dispatcher ended for good when the
    loss met its wake-up read, and a group commit holding a stale and a current result of one delivery
    failed on a duplicate key). Every fourth POST the receiver gets, all the workers' sessions are ended.
    Each store call that meets a dead connection is waited out (the API answers 503): every activity is
    delivered, recorded DISPATCHED once, and both dispatchers still run. The client retries a 503 with
    the activity id it chose, as docs/serve.md advises: a 503 whose commit did reach the database (the
    connection ended after it) answers the retry 409, so nothing is created twice."""
    import uuid

    from pg import database_of

    name = database_of(pg_url)
    ended = []

    def respond(hit, n):
        if n % 4 == 0 and len(ended) < 20:
            with pg_server.admin() as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                              " AND pid <> pg_backend_pid()", (name,))
            ended.append(n)
        return 200, {}, 0.0

    async def recorded(n: int) -> bool:
        try:
            return await _all_dispatched(workers[0], n)
        except StorageUnavailable:  # the test's own read met an ended connection
            return False

    a, b = workers
    async with Receiver(time.time) as rx, aiohttp.ClientSession() as http:
        await _configure(http, a, a, rx.url, "none")
        rx.respond = respond
        ids = [str(uuid.uuid4()) for _ in range(60)]
        for n, aid in enumerate(ids):
            for tries in range(20):
                status, answer = await _call(http, (a, b)[(n + tries) % 2], "POST", "/api/activities?tenant_id=acme",
                                             {"id": aid, "channel": "SALESMAN", "commerceExternalId": f"c{n}"})
                if status != 503:
                    break
            assert status == 201 or (status == 409 and tries > 0), answer
        await _until(lambda: {h.body["id"] for h in rx.posts()} >= set(ids), "every activity to reach the receiver")
        await _until(lambda: recorded(60), "the deliveries to be recorded DISPATCHED")
    assert len(ended) >= 10
    assert all(w.engine is not None and w.engine.dispatching for w in workers)


async def test_a_console_session_opened_on_one_worker_holds_on_the_other_and_ends_on_both(
        workers: list[Server], pg_url: str) -> None:
    """Behind a load balancer each request may reach another worker: a session opened on A is known to
    B (same user, same CSRF token), the database keeps only the token's SHA-256, and signing out on B
    ends it on A too; a key revoked on A ends the session it opened on B. Serve's expiry job deletes the
    ended sessions. Sessions used to live in each process: B sent the user back to sign in."""
    a, b = workers
    assert a.engine is not None
    _, key = await create_key(a.engine.store, tenant_id="acme", name="ops-alice", now=a.engine.clock.now())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async def page(worker: Server, path: str, **kw: object) -> tuple[int, str]:
            async with http.get(f"http://127.0.0.1:{worker.port}{path}", allow_redirects=False, **kw) as r:
                return r.status, await r.text()

        async with http.post(f"http://127.0.0.1:{a.port}/console/login", data={"api_key": key},
                             allow_redirects=False) as r:
            assert r.status == 303
            token = r.cookies[COOKIE].value
        csrf = []
        for worker in (a, b, a):
            status, html = await page(worker, "/console/")
            assert status == 200 and 'id="tenant">acme<' in html and "ops-alice" in html
            csrf += re.findall(r'name="csrf_token" value="([^"]+)"', html)
        assert len(csrf) == 3 and len(set(csrf)) == 1  # one session, whichever worker answers
        with psycopg.connect(pg_url) as db:
            rows = db.execute("SELECT * FROM console_sessions").fetchall()
        assert [r[0] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        assert not any(token in str(value) for value in rows[0])  # the token itself is nowhere
        async with http.post(f"http://127.0.0.1:{b.port}/console/logout", data={"csrf_token": csrf[0]},
                             allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/login"
        for worker in (a, b):  # the old cookie, sent again: signed out on both
            status, _ = await page(worker, "/console/", cookies={COOKIE: token})
            assert status == 303
        async with http.post(f"http://127.0.0.1:{b.port}/console/login", data={"api_key": key},
                             allow_redirects=False) as r:
            assert r.status == 303
        key_id = next(k.id for k in await a.engine.store.api_keys() if k.name == "ops-alice")
        await revoke_key(a.engine.store, key_id, now=a.engine.clock.now())  # on A: B's session ends with it
        status, html = await page(b, "/console/")
        assert status == 401 and "no longer valid" in html
    now = a.engine.clock.now()  # serve's expiry job deletes the sessions that ended, and only those
    for n, ends in enumerate((now - 1, now + 3600)):
        await a.engine.store.open_console_session(f"{n}" * 64, ConsoleSession("k", "d", "w", "acme", "c", ends), now)
    await b.expire_console_sessions()
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT token_digest FROM console_sessions").fetchall() == [("1" * 64,)]
