"""The PostgreSQL store beyond the shared contract: its schema against SQLite's, opening a database,
and many workers on one database (the part SQLite, with one owner per file, never meets).

Real PostgreSQL (tests/pg.py), real SQLite files; every worker here is a store with its own
connection pool, as separate ``serve`` processes would have.
"""
from __future__ import annotations

import asyncio
import io
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import database_of

from dispatchsim.engine import Circuit, ConfigDeleted, ConfigInUse, Engine, Store, StoreError, latest_schema_version
from dispatchsim.engine.store import AttemptResult, migrations
from dispatchsim.engine.store_idempotency_pg import PgIdempotencyStore
from dispatchsim.engine.store_open import display_url
from dispatchsim.engine.store_pg import JOB_LOCK, PgStore

pytestmark = pytest.mark.postgres
T0 = 1_000_000.0


# -- the schema: one version, two dialects ------------------------------------------------------


def test_every_migration_number_has_both_dialects_from_the_postgres_baseline() -> None:
    sqlite_numbers = [n for n, _ in migrations()]
    pg_numbers = [n for n, _ in migrations("postgres")]
    assert pg_numbers and pg_numbers[-1] == sqlite_numbers[-1] == latest_schema_version()
    baseline = pg_numbers[0]
    assert [n for n in sqlite_numbers if n >= baseline] == pg_numbers


async def test_both_dialects_end_with_the_same_tables_and_columns(pg_url: str, tmp_path: Path) -> None:
    Store(tmp_path / "s.db").conn.close()  # only the file, migrated
    lite = sqlite3.connect(tmp_path / "s.db")
    tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                                         " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    want = {t: [r[1] for r in lite.execute(f"PRAGMA table_info({t})")] for t in tables}
    lite.close()
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        rows = await (await conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND table_name <> 'dispatchsim_schema' ORDER BY table_name, ordinal_position")).fetchall()
        indexes = {r[0] for r in await (await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).fetchall()}
    have: dict[str, list[str]] = {}
    for table, column in rows:
        have.setdefault(table, []).append(column)
    assert have == want
    lite_indexes = {r[0] for r in sqlite3.connect(tmp_path / "s.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    assert lite_indexes <= indexes


async def test_a_new_database_is_migrated_once_by_workers_starting_together(pg_server) -> None:
    url = pg_server.empty()
    try:
        stores = await asyncio.gather(*(PgStore.open(url, pool_size=1) for _ in range(3)))
        assert [await s.schema_version() for s in stores] == [latest_schema_version()] * 3
        async with await psycopg.AsyncConnection.connect(url) as conn:
            applied = await (await conn.execute("SELECT version FROM dispatchsim_schema ORDER BY version")).fetchall()
        assert applied == [(n,) for n, _ in migrations("postgres")]  # each migration once
        for s in stores:
            await s.close()
    finally:
        pg_server.drop(url)


async def test_v10_moves_an_attempt_open_at_a_crash_to_its_lease_and_recovery_keeps_its_id(pg_server) -> None:
    """As on SQLite (tests/test_engine.py): an attempt a v9 claim opened, left open by a worker that died,
    is moved by the v10 migration to its delivery's lease: listed in flight under its id, then recorded
    INTERRUPTED under the same id and number when the lease is released; the next claim numbers on."""
    url = pg_server.empty()
    try:
        store = await PgStore.open(url, pool_size=1)
        await store.add_tenant("t", "Tenant", T0)
        await store.add_provider("p", "Provider", T0)
        await store.insert_config("c", "t", "p", "S", {"endpoint_url": "http://127.0.0.1:9/h"}, T0)
        await store.set_config_active("c", True, T0)
        await store.insert_activity("a1", "t", "TASK", "S", {"id": "a1", "type": "TASK", "status": "PENDING"}, T0)
        did = await store.insert_delivery(webhook_id="w1", activity_id="a1", config_id="c", config_version=1,
                                          queue="c", ordered=False, now=T0)
        [claim] = await store.claim([(did, T0 + 60)], token="dead:1", now=T0)
        await store.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            async with conn.transaction():  # what a v9 claim left: the attempt's open row
                await conn.execute("INSERT INTO attempts (id, delivery_id, number, started_at, config_id)"
                                   " VALUES (%s, %s, 1, %s, 'c')", (claim.attempt_id, did, T0))
                await conn.execute("DROP VIEW attempts_all")
                await conn.execute("DROP VIEW attempts_open")
                await conn.execute("ALTER TABLE deliveries DROP COLUMN lease_attempt, DROP COLUMN lease_started_at")
                await conn.execute("DELETE FROM dispatchsim_schema WHERE version >= 10")  # v10 and later run again
        store = await PgStore.open(url, pool_size=1)
        try:
            [open_] = await store.attempts(did)
            assert (open_.id, open_.number, open_.started_at, open_.outcome) == (claim.attempt_id, 1, T0, None)
            assert await store.release_expired_leases(T0 + 60) == [did]
            [interrupted] = await store.attempts(did)
            assert (interrupted.id, interrupted.number, interrupted.outcome) == (claim.attempt_id, 1, "INTERRUPTED")
            [again] = await store.claim([(did, T0 + 120)], token="next:1", now=T0 + 61)
            assert (again.number, again.attempt_id) == (2, claim.attempt_id + 1)
        finally:
            await store.close()
    finally:
        pg_server.drop(url)


async def test_v11_the_index_of_eligible_rows_holds_ordered_heads_only(pg_url: str) -> None:
    """Schema v11 (as SQLite's v9): ``deliveries_queue_eligible`` has no entry for the deliveries of an
    unordered configuration, neither when they are created nor when they are claimed (each claim of a row
    writes a new version of it, with an entry in every index whose condition it meets); an ordered
    queue's head is in it, and the promotion's read of a queue's heads still finds it there."""
    store = await PgStore.open(pg_url, pool_size=1)
    try:
        await store.add_tenant("t", "T", T0)
        await store.add_provider("p", "P", T0)
        await store.insert_config("c", "t", "p", "S", {"endpoint_url": "http://127.0.0.1:9/h"}, T0)
        await store.set_config_active("c", True, T0)
        await store.bench_fill_deliveries(tenant_id="t", config_id="c", config_version=1, count=2000,
                                          failed_every=0, now=T0, pending=True)
        due = await store.due_candidates(T0 + 1, 25)
        assert len(await store.claim([(did, T0 + 60) for did, _, _ in due], token="w:1", now=T0 + 1)) == 25
        for i in range(3):
            await store.insert_activity(f"o{i}", "t", "TASK", "S", {"id": f"o{i}"}, T0)
            await store.insert_delivery(webhook_id=f"o{i}", activity_id=f"o{i}", config_id="c", config_version=1,
                                        queue="q", ordered=True, now=T0)
        head = await store.queue_head("q", T0 + 1)
        assert head is not None
        pages = await store._one("SELECT pg_relation_size('deliveries_queue_eligible') / current_setting('block_size')::int")
        assert pages is not None and pages[0] <= 2, pages  # its meta page and one leaf: 2,025 entries would fill more
        rows = await store._all("SELECT id FROM deliveries WHERE queue = %s AND eligible AND holds ORDER BY id", ("q",))
        assert rows == [(head[0],)]
    finally:
        await store.close()


async def test_v13_deliveries_is_vacuumed_early_and_each_vacuum_clears_the_due_reads_dead_prefix(
        pg_url: str) -> None:
    """Schema v13: autovacuum takes ``deliveries`` after at most 10,000 dead row versions, and
    each vacuum cleans its indexes. A claimed delivery leaves the entry of its old row version at the
    front of ``deliveries_due``, which every due read walks until a vacuum removes it. In a table of many
    finished deliveries the pages 750 claims dirtied are under 2 % of it, where a vacuum left to
    decide (the default) skips the indexes and the due read keeps walking those entries."""
    store = await PgStore.open(pg_url, pool_size=1)
    try:
        [(options,)] = await store._all("SELECT reloptions FROM pg_class WHERE oid = 'deliveries'::regclass")
        [(version,)] = await store._all("SELECT current_setting('server_version_num')::int")
        assert dict(o.split("=") for o in options) == ({"autovacuum_vacuum_max_threshold": "10000",
                                                         "vacuum_index_cleanup": "on"} if version >= 180000 else
                                                        # older servers: the same bound, as the threshold alone
                                                        {"autovacuum_vacuum_scale_factor": "0",
                                                         "autovacuum_vacuum_threshold": "10000",
                                                         "vacuum_index_cleanup": "on"})
        await store.add_tenant("t", "T", T0)
        await store.add_provider("p", "P", T0)
        await store.insert_config("c", "t", "p", "S", {"endpoint_url": "http://127.0.0.1:9/h"}, T0)
        await store.set_config_active("c", True, T0)
        for count, pending in ((100_000, False), (1_000, True)):
            await store.bench_fill_deliveries(tenant_id="t", config_id="c", config_version=1, count=count,
                                              failed_every=10**9, now=T0, pending=pending)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute("VACUUM ANALYZE deliveries")

            async def due_read_buffers() -> int:
                cur = await admin.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) SELECT id FROM deliveries WHERE eligible"
                    " AND lease_until IS NULL AND status IN ('READY', 'RETRYING') AND next_attempt_at <= %s"
                    " ORDER BY next_attempt_at, id LIMIT 50", (T0 + 2,))
                [(plan,)] = await cur.fetchall()
                top = plan[0]["Plan"]
                assert "deliveries_due" in str(plan), plan
                return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])

            fresh = await due_read_buffers()
            for wave in range(30):
                due = await store.due_candidates(T0 + 2, 50)
                claims = await store.claim([(did, T0 + 60) for did, _, _ in due[:25]], token=f"w:{wave}", now=T0 + 1)
                async with store.tx():
                    for claim in claims:
                        await store.mark_dispatched(claim, AttemptResult(finished_at=T0 + 1, outcome="SUCCESS",
                                                                         status_code=200), ordered=False)
            walked = await due_read_buffers()
            assert walked >= fresh + 2, (fresh, walked)  # 750 claimed: their old entries fill leaf pages
            await admin.execute("VACUUM deliveries")  # as autovacuum would: the table's settings decide
            assert await due_read_buffers() <= fresh, (fresh, walked)  # 7 when the vacuum skips the index
    finally:
        await store.close()


async def test_v14_no_trigger_checks_an_attempts_delivery_and_every_attempt_written_has_one(pg_url: str) -> None:
    """Schema v14: ``attempts.delivery_id`` has no foreign key on PostgreSQL, whose check was a trigger and
    a query per attempt row (about 15 % of the group commit's database CPU). It guarded nothing the store
    does: each attempt row is written where its delivery was found (a finish records only what it moved,
    the lease sweep what it locked, a replay the delivery it locked), and no delivery is ever deleted."""
    from dispatchsim.engine.store_contract import Finish
    from dispatchsim.engine.states import Status

    store = await PgStore.open(pg_url, pool_size=1)
    try:
        assert await store._all("SELECT conname FROM pg_constraint WHERE conrelid = 'attempts'::regclass"
                                " AND contype = 'f'") == []
        await _setup(store)
        await store.insert_activity("a1", "t", "TASK", "S", {"id": "a1"}, T0)
        ids = [await store.insert_delivery(webhook_id=f"w{n}", activity_id="a1", config_id="c", config_version=1,
                                           queue=f"u{n}", ordered=False, now=T0) for n in range(4)]
        claims = await store.claim([(d, T0 + 60) for d in ids], token="w:1", now=T0)
        ok = AttemptResult(finished_at=T0 + 1, outcome="SUCCESS", status_code=200, latency=0.001)
        gone = claims[0]._replace(delivery_id=10**9, attempt_id=10**9)  # a delivery that is not there
        async with store.tx():
            done = await store.finish_attempts(
                [Finish(claim=claims[0], result=ok, status=Status.DISPATCHED),
                 Finish(claim=claims[1], result=ok, status=Status.RETRYING, next_at=T0 + 5, error="HTTP 503"),
                 Finish(claim=gone, result=ok, status=Status.DISPATCHED)])
        assert done == [True, True, False]
        assert sorted(await store.release_expired_leases(T0 + 61)) == ids[2:]  # their attempts: INTERRUPTED
        replay = await store.start_replay(ids[0], T0 + 70)
        await store.finish_replay(replay, ok)
        rows = await store._all("SELECT a.delivery_id, d.id FROM attempts a LEFT JOIN deliveries d"
                                " ON d.id = a.delivery_id ORDER BY a.id")
        assert len(rows) == 5 and all(d == did for d, did in rows), rows  # nothing of the missing delivery
    finally:
        await store.close()


async def test_newer_schema_other_application_and_empty_readonly_are_refused(pg_server, pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO dispatchsim_schema (version) VALUES (99)")
    with pytest.raises(StoreError, match=rf"schema v99 is newer than this dispatchsim \(schema v{latest_schema_version()}\)"):
        await PgStore.open(pg_url)
    empty = pg_server.empty()
    try:
        with pytest.raises(StoreError, match="empty, not a dispatchsim database yet"):
            await PgStore.open(empty, readonly=True)
        async with await psycopg.AsyncConnection.connect(empty, autocommit=True) as conn:
            await conn.execute("CREATE TABLE invoices (id int)")
        with pytest.raises(StoreError, match="not a dispatchsim database .*tables invoices"):
            await PgStore.open(empty)
    finally:
        pg_server.drop(empty)


async def test_another_roles_tables_make_a_database_another_applications(pg_server) -> None:
    """The tables of a role the user cannot read still belong to another application: such a database was
    taken for an empty one and migrated (the check listed only tables the user had privileges on)."""
    empty = pg_server.empty()
    role = f"app{os.getpid()}"
    try:
        async with await psycopg.AsyncConnection.connect(empty, autocommit=True) as conn:
            await conn.execute("CREATE TABLE orders (id int)")  # the superuser's, not the role's
            await conn.execute(f"CREATE ROLE {role} LOGIN")
            await conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
        as_role = empty.replace("postgresql://postgres", f"postgresql://{role}", 1)
        assert as_role != empty
        with pytest.raises(StoreError, match="not a dispatchsim database .*tables orders"):
            await PgStore.open(as_role)
        async with await psycopg.AsyncConnection.connect(empty, autocommit=True) as conn:
            found = await (await conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'dispatchsim_schema'"))\
                .fetchone()
        assert found == (0,)  # nothing was written
    finally:
        pg_server.drop(empty)
        async with await psycopg.AsyncConnection.connect(pg_server.base_url, autocommit=True) as conn:
            await conn.execute(f"DROP ROLE IF EXISTS {role}")


async def test_a_readonly_store_reads_and_refuses_writes(pg_url: str) -> None:
    store = await PgStore.open(pg_url, readonly=True)
    try:
        assert await store.counts() == {"READY": 0, "RETRYING": 0, "DISPATCHED": 0, "FAILED": 0}
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await store.add_tenant("t", "T", T0)
    finally:
        await store.close()


async def test_an_unreachable_server_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://app:s3cret-pw@/nowhere?host={tmp_path}"
    with pytest.raises(StoreError) as err:
        await PgStore.open(url, connect_timeout=2)
    text = str(err.value)
    assert "s3cret-pw" not in text and "cannot connect to PostgreSQL" in text and "\n" not in text
    assert display_url("postgresql://app:pw@db.example:5433/d?x=1") == "postgresql://app:***@db.example:5433/d?x=1"
    assert display_url("postgresql:///d") == "postgresql:///d"
    assert display_url("postgresql:///d?host=/run/pg&password=pw") == "postgresql:///d?host=/run/pg&password=***"
    assert display_url("/var/lib/dispatch.db") == "/var/lib/dispatch.db"


@pytest.mark.parametrize("url, secrets", [
    ("postgresql://u:my%pass%word@127.0.0.1:1/db", ["my%pass%word", "pass"]),  # the driver quotes a bad token
    ("postgresql://u@127.0.0.1:1/db?password=my%zzpass", ["my%zzpass", "zzpass"]),
    ("postgresql://u@127.0.0.1:1/db?sslpassword=S3cretKeyPw", ["S3cretKeyPw"]),  # the client key's passphrase
    ("postgresql://u:S3cretPw@127.0.0.1:99999/db", ["S3cretPw"]),  # port out of range
    ("postgresql://u:S3cretPw@127.0.0.1:abc/db", ["S3cretPw"]),
    ("postgresql://u:S3cretPw@[::1/db", ["S3cretPw"]),  # broken IPv6 host: the driver quotes the URL
    ("postgresql://u:a%20S3cretPw@127.0.0.1:1/db", ["S3cretPw"]),
    # libpq takes a password with an unencoded # or / (a URL parser would end the host part there)
    ("postgresql://u:Xk9#Qz7pW@127.0.0.1:1/db", ["Xk9", "Qz7pW"]),
    ("postgresql://u:Xk9/Qz7pW@127.0.0.1:1/db", ["Xk9", "Qz7pW"]),
])
def test_a_bad_url_is_one_line_on_the_command_line_without_the_password(url: str, secrets: list[str],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Every command that opens a database (status, keys; serve opens it the same way) shows a URL it
    cannot use as one line and exit 2, never with its password, never as a traceback."""
    from dispatchsim.cli import main

    for argv in (["status", url], ["keys", "list", "--db", url]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
        assert "postgres" in err and "***" in err and not any(s in err for s in secrets), err
    assert display_url(url).count("***") == 1


@pytest.mark.parametrize("url", [
    "postgressql://u:S3cretPw@db.internal/d", "PostgreSQL://u:S3cretPw@db.internal/d",
    "postgresql+psycopg://u:S3cretPw@db.internal/d", "postgresql:/u:S3cretPw@db.internal/d",
    "postgresql//u:S3cretPw@db.internal/d", "mysql://u:S3cretPw@db.internal/d",
])
def test_a_mistyped_database_url_is_refused_without_the_password(url: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A URL with a scheme dispatchsim does not open was taken for a file path and echoed whole, password
    included, as a missing directory. Now it is refused by its scheme alone; file paths still work."""
    from dispatchsim.cli import main

    for argv in (["status", url], ["keys", "list", "--db", url], ["serve", "--db", url, "--port", "0"]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and "does not start a database URL" in err and "S3cretPw" not in err, err
    # paths that merely look a little like one are still paths
    for path in (tmp_path / "postgres-data.db", tmp_path / "my:db.sqlite"):
        assert main(["keys", "create", "--db", str(path), "--admin"]) == 0, capsys.readouterr()
    capsys.readouterr()


def test_a_client_library_without_pipeline_mode_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment's libpq, not the server, is what lacks it (libpq before 14): say so before connecting."""
    monkeypatch.setattr(psycopg.capabilities, "has_pipeline", lambda check=False: False)
    with pytest.raises(StoreError) as err:
        asyncio.run(PgStore.open("postgresql://app:s3cret-pw@db.example/d"))
    text = str(err.value)
    assert text.startswith("postgresql://app:***@db.example/d: the PostgreSQL client library (libpq ")
    assert "pipeline mode" in text and "s3cret-pw" not in text and "\n" not in text


# -- many workers, one database ----------------------------------------------------------------


async def _setup(store: PgStore) -> None:
    await store.add_tenant("t", "T", T0)
    await store.add_provider("p", "P", T0)
    await store.insert_config("c", "t", "p", "S", {"endpoint_url": "http://127.0.0.1:9/h"}, T0)
    await store.set_config_active("c", True, T0)


async def test_workers_split_the_work_and_each_ordered_queue_goes_in_order(pg_url: str) -> None:
    """Three workers claim, fail some tries and finish concurrently while a producer keeps adding to
    the queues: every delivery is dispatched exactly once, each ordered queue in creation order, and
    at no moment does an ordered queue have two deliveries leased."""
    workers = [await PgStore.open(pg_url, pool_size=3) for _ in range(3)]
    first = workers[0]
    await _setup(first)
    queues = [f"q{i}" for i in range(4)]
    made: dict[str, list[int]] = {q: [] for q in queues}
    dispatched: list[tuple[str, int]] = []
    leased: dict[str, int] = {}
    overlaps: list[str] = []
    rng = random.Random(7)
    total = 60

    async def produce() -> None:
        for n in range(total):
            q = queues[n % len(queues)]
            async with first.tx():
                await first.insert_activity(f"a{n}", "t", "TASK", "S", {"id": f"a{n}"}, T0)
                did = await first.insert_delivery(webhook_id=f"w{n}", activity_id=f"a{n}", config_id="c",
                                                  config_version=1, queue=q, ordered=True, now=T0)
            made[q].append(did)
            await asyncio.sleep(0)

    async def work(i: int, store: PgStore) -> None:
        idle = 0
        while idle < 40:
            rows = await store.due_candidates(T0 + 10, 3)
            claims = await store.claim([(d, T0 + 100) for d, _, _ in rows], token=f"w{i}:1", now=T0 + 10)
            if not claims:
                idle += 1
                await asyncio.sleep(0.005)
                continue
            idle = 0
            for c in claims:
                if leased.setdefault(c.queue, c.delivery_id) != c.delivery_id:
                    overlaps.append(f"{c.queue}: {leased[c.queue]} and {c.delivery_id}")
            await asyncio.sleep(0.001)
            for c in claims:
                res = AttemptResult(finished_at=T0 + 1, outcome="SUCCESS", status_code=200, latency=0.001)
                del leased[c.queue]
                if rng.random() < 0.3:
                    assert await store.schedule_retry(c, res, T0 + 2, "HTTP 503")
                else:
                    assert await store.mark_dispatched(c, res, ordered=True)
                    dispatched.append((c.queue, c.delivery_id))

    try:
        await asyncio.gather(produce(), *(work(i, s) for i, s in enumerate(workers)))
        assert overlaps == []
        assert sorted(d for _, d in dispatched) == sorted(d for ds in made.values() for d in ds)
        for q in queues:
            assert [d for qq, d in dispatched if qq == q] == made[q]
        assert (await first.counts())["DISPATCHED"] == total
    finally:
        for s in workers:
            await s.close()


async def test_a_claim_never_leases_what_another_worker_holds(pg_url: str) -> None:
    a, b = await PgStore.open(pg_url, pool_size=2), await PgStore.open(pg_url, pool_size=2)
    try:
        await _setup(a)
        await a.insert_activity("a1", "t", "TASK", "S", {"id": "a1"}, T0)
        ids = [await a.insert_delivery(webhook_id=f"w{n}", activity_id="a1", config_id="c", config_version=1,
                                       queue=f"u{n}", ordered=False, now=T0) for n in range(20)]
        got = await asyncio.gather(*(s.claim([(d, T0 + 60) for d in ids], token=f"{k}:1", now=T0)
                                     for k, s in (("a", a), ("b", b))))
        leased = [c.delivery_id for claims in got for c in claims]
        assert sorted(leased) == ids  # each leased exactly once, by one of them
        assert await b.claim([(d, T0 + 60) for d in ids], token="b:2", now=T0) == []
        assert sorted(await b.release_own_leases(T0 + 1, "b")) == sorted(c.delivery_id for c in got[1])
        assert await a.in_flight() == len(got[0])
    finally:
        await a.close()
        await b.close()


async def test_one_worker_reserves_an_idempotency_key_the_other_sees_it(pg_url: str) -> None:
    a, b = await PgStore.open(pg_url, pool_size=2), await PgStore.open(pg_url, pool_size=2)
    try:
        keys = [PgIdempotencyStore(a), PgIdempotencyStore(b)]
        answers = await asyncio.gather(*(k.reserve("t", "key-1", "fp", T0, expired_before=T0 - 100,
                                                   abandoned_before=T0 - 10) for k in keys))
        assert sorted(x is None for x in answers) == [False, True]
        held = next(x for x in answers if x is not None)
        assert (held.fingerprint, held.status) == ("fp", None)
        await keys[0].complete("t", "key-1", status=201, body="{}", location="/x")
        again = await keys[1].reserve("t", "key-1", "fp", T0 + 1, expired_before=T0 - 100, abandoned_before=T0 - 10)
        assert again is not None and again.status == 201
        assert await keys[1].count() == 1 and await keys[0].delete_expired(T0 + 1) == 1
    finally:
        await a.close()
        await b.close()


async def test_a_lost_connection_is_storage_unavailable(pg_server, pg_url: str) -> None:
    from dispatchsim.engine import StorageUnavailable

    store = await PgStore.open(pg_url, pool_size=1)
    name = database_of(pg_url)
    try:
        with pytest.raises(StorageUnavailable, match="storage unavailable: .*retry later"):
            async with store.tx():
                await store.add_tenant("t", "T", T0)
                with pg_server.admin() as admin:  # the server ends the connection mid-transaction
                    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                                  " AND pid <> pg_backend_pid()", (name,))
                await store.add_provider("p", "P", T0)
        assert await store.tenant("t") is None  # nothing half-written; the pool replaced the connection
    finally:
        await store.close()


async def test_a_transaction_in_pipeline_mode_rolls_back_and_reports_a_failure_as_outside_it(pg_url: str) -> None:
    """Transactions run in pipeline mode (BEGIN and COMMIT travel with statements): a statement whose
    result nobody reads fails later than it ran, yet the operation that ran it raises the error it
    raises outside a transaction, and the transaction rolls back everything, the statements the server
    had already run included. A refusal read from a row count (NotFound) and an error of the caller's
    own code roll back the same way, and the connection serves the next transaction."""
    from dispatchsim.engine import NotFound

    store = await PgStore.open(pg_url, pool_size=1)
    try:
        await _setup(store)
        with pytest.raises(psycopg.errors.ForeignKeyViolation) as alone:
            await store.insert_config("x", "nope", "p", "S", {}, T0)  # its own transaction: no tenant "nope"
        with pytest.raises(psycopg.errors.ForeignKeyViolation) as inside:
            async with store.tx():
                await store.add_tenant("u", "U", T0)
                await store.insert_config("x", "nope", "p", "S", {}, T0)  # nothing read: it fails at the next wait
                await store.add_provider("q", "Q", T0)  # never run: the pipeline is aborted
        assert type(inside.value) is type(alone.value) and str(inside.value) == str(alone.value)
        for failing, error in ((lambda: store.set_config_active("gone", True, T0), NotFound),
                               (lambda: _raise(RuntimeError("the caller's own error")), RuntimeError)):
            with pytest.raises(error):
                async with store.tx():
                    await store.add_tenant("u", "U", T0)
                    await store.set_config_active("c", False, T0, "manual")
                    await failing()
        assert (await store.tenant("u"), await store.provider("q"), await store.config("x")) == (None, None, None)
        assert (await store.config("c")).active  # rolled back with the rest
        async with store.tx():
            assert await store.add_tenant("u", "U", T0) is True  # a row count read in the pipeline
            await store.set_config_active("c", False, T0, "manual")
        assert (await store.tenant("u")).name == "U" and await store.paused_configs() == ["c"]
    finally:
        await store.close()


async def _raise(exc: Exception) -> None:
    raise exc


async def test_a_statement_failing_in_the_cycle_pipeline_is_reported_as_outside_it(pg_server, pg_url: str) -> None:
    """The dispatch cycle's reads go in one pipeline (``cycle_view``): when one of them fails (here its
    lock wait times out behind a table lock) or the server ends the connection, the failure is the one
    the same statement raises on its own: one line, StorageUnavailable (the dispatcher logs it and tries
    again); nothing else of the pipeline is answered, and the connection serves the next call."""
    from dispatchsim.engine import StorageUnavailable

    store = await PgStore.open(pg_url, pool_size=1)
    try:
        await _setup(store)
        await store.save_circuit("c", circuit=Circuit.OPEN, circuit_until=T0 + 30, now=T0)
        await store._run("SET lock_timeout = '50ms'")  # the pool's one connection
        with psycopg.connect(pg_url) as locker:  # a transaction holding the table until it ends
            locker.execute("LOCK TABLE endpoint_health IN ACCESS EXCLUSIVE MODE")
            errors = []
            for call in (store.health_rows, lambda: store.cycle_view(T0, ["c"], health=True)):
                with pytest.raises(StorageUnavailable) as caught:
                    await call()
                errors.append(str(caught.value))
            assert errors[0] == errors[1] == ("storage unavailable: canceling statement due to lock timeout;"
                                              " nothing was stored, retry later")
            view = await store.cycle_view(T0, ["c"], health=False)  # the same connection, out of the failed pipeline
            assert (view.paused, list(view.configs), view.health) == ([], ["c"], None)
        assert [h.circuit for h in (await store.cycle_view(T0, [], health=True)).health or []] == [Circuit.OPEN]
        with pg_server.admin() as admin:  # the server ends the pool's connection
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                          " AND pid <> pg_backend_pid()", (database_of(pg_url),))
        with pytest.raises(StorageUnavailable, match=r"^storage unavailable: [^\n]*retry later$"):
            await store.cycle_view(T0, ["c"], health=True)
        assert (await store.cycle_view(T0, ["c"], health=False)).configs["c"] is not None  # a new connection
    finally:
        await store.close()


async def test_new_work_wakes_every_listening_worker_and_one_worker_leads_each_job(pg_url: str, pg_server) -> None:
    from dispatchsim.engine.store_pg_cluster import PgCluster

    store = await PgStore.open(pg_url, pool_size=2)
    woken = [asyncio.Event(), asyncio.Event()]
    cluster = [PgCluster(pg_url, on_work=w.set) for w in woken]
    try:
        for c in cluster:
            await c.start()
        await _setup(store)
        await store.insert_activity("a1", "t", "TASK", "S", {"id": "a1"}, T0)
        await asyncio.wait_for(asyncio.gather(*(w.wait() for w in woken)), 10)  # the activation's
        for c, w in zip(cluster, woken):
            c.notified = 0
            w.clear()
        async with store.tx():  # notifications are sent when the transaction commits, once
            for n in range(3):
                await store.insert_delivery(webhook_id=f"w{n}", activity_id="a1", config_id="c", config_version=1,
                                            queue="q", ordered=True, now=T0)
        await asyncio.wait_for(asyncio.gather(*(w.wait() for w in woken)), 10)
        assert [c.notified for c in cluster] == [1, 1]
        leads = [await c.leads("retention") for c in cluster]
        assert leads == [True, False] and await cluster[0].leads("retention")  # kept while it lives
        assert await cluster[1].leads("idempotency-expiry")  # each job has its own leader
        await cluster[0].stop()
        assert await cluster[1].leads("retention")  # the lock died with the leader's session
        assert pg_server.end_lock_sessions(pg_url, JOB_LOCK) == 1  # the server ends the new leader's lock session
        assert await cluster[0].leads("retention")  # free: taken through the lock
        assert not await cluster[1].leads("retention") and cluster[1].leading == []  # it noticed: both jobs lost
        assert await cluster[1].leads("idempotency-expiry")  # taken again through its (free) lock
    finally:
        for c in cluster:
            await c.stop()
        await store.close()


async def test_failed_activities_page_is_never_a_generic_plan(pg_url: str) -> None:
    """Pooled connections prepare every statement, and after five executions PostgreSQL may switch a
    prepared one to a generic plan, made without the parameters' values: for the page of activities
    with a FAILED delivery that plan walked every activity probing its deliveries. The page runs
    unprepared, planned with its values, which read the FAILED deliveries through their index."""
    from dispatchsim.engine.store_pg_queries import activity_page_query
    from dispatchsim.engine.store_queries import ActivityFilter

    store = await PgStore.open(pg_url, pool_size=1)
    try:
        await store.add_tenant("t", "T", 1.0)
        await store.add_provider("p", "P", 1.0)
        await store.insert_config("c", "t", "p", "S", {"endpoint_url": "http://127.0.0.1:9/h"}, 1.0)
        await store.bench_fill_deliveries(tenant_id="t", config_id="c", config_version=1, count=100_000,
                                          failed_every=1000, now=2.0)
        await store._run("ANALYZE")
        f = ActivityFilter(tenant_id="t", dispatch_status="FAILED")
        for _ in range(8):  # past the five custom plans after which a prepared statement may go generic
            page = await store.activity_page(f, limit=50)
            assert len(page) == 50
        prepared = await store._all("SELECT statement FROM pg_prepared_statements")
        assert not [s for (s,) in prepared if "FROM activities a WHERE" in s]
        sql, params = activity_page_query(f, after_seq=0, limit=50)
        plan = "\n".join(r[0] for r in await store._all("EXPLAIN " + sql, params, prepare=False))
        assert "deliveries_status" in plan or "deliveries_failed_activity" in plan, plan
    finally:
        await store.close()


# -- deleting a configuration while an activity fans out to it ---------------------------------------


async def _two_engines(pg_url: str) -> tuple[Engine, Engine]:
    """Two engines (as two serve workers) on one database, with an active configuration ``c`` of
    tenant ``t``, channel ``S``; no dispatcher runs, so what the fan-out creates stays READY."""
    a, b = [await Engine.open(pg_url, pool_size=2, log_stream=io.StringIO()) for _ in range(2)]
    await a.add_tenant("t")
    await a.add_provider("p")
    await a.add_config("t", "p", "S", config_id="c", endpoint_url="http://127.0.0.1:9/h")
    await a.store.set_config_active("c", True, a.clock.now())  # no verification GET: nothing is sent here
    return a, b


async def _blocked_or_done(pg_url: str, task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` waits for a row lock in the database (True) or has ended (False): the test
    reads the server's own view of its sessions, so it neither sleeps nor guesses."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        while not task.done():
            row = await (await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'")).fetchone()
            if row and row[0]:
                return True
    return False


def _pause_after(store: Any, method: str, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make ``store.method`` stop once it has answered, inside its caller's transaction, until released."""
    reached, release = asyncio.Event(), asyncio.Event()
    real = getattr(store, method)

    async def paused(*args: Any, **kw: Any) -> Any:
        out = await real(*args, **kw)
        reached.set()
        await release.wait()
        return out

    monkeypatch.setattr(store, method, paused)
    return reached, release


async def _stranded(engine: Engine) -> list[int]:
    """Ids of READY or RETRYING deliveries whose configuration is deleted: nothing would ever send them."""
    cfgs = await engine.store.configs_by_id(["c"])
    return [d.id for d in await engine.deliveries(config_id="c") if d.status.value in ("READY", "RETRYING")
            and (cfgs["c"] is None or cfgs["c"].deleted)]


async def test_a_delete_waits_for_a_fan_out_that_read_the_configuration_and_then_refuses(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fan-out has read ``c`` as active and not inserted yet; the delete on the other worker waits
    for it to commit and then sees its delivery (409 ConfigInUse): no delivery of a deleted one."""
    a, b = await _two_engines(pg_url)
    try:
        reached, release = _pause_after(a.store, "active_configs", monkeypatch)
        create = asyncio.create_task(a.create_activity("t", {"channel": "S"}))
        await reached.wait()
        delete = asyncio.create_task(b.delete_config("c"))
        waited = await _blocked_or_done(pg_url, delete)
        release.set()
        activity, deleted = await asyncio.gather(create, delete, return_exceptions=True)
        assert await _stranded(b) == []
        assert waited and isinstance(deleted, ConfigInUse)
        [made] = await a.deliveries(activity_id=activity["id"])
        assert made.config_id == "c" and made.status.value == "READY" and not (await b.config("c")).deleted
    finally:
        await a.close()
        await b.close()


async def test_a_fan_out_waits_for_a_delete_in_progress_and_skips_the_deleted_configuration(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The delete has checked that nothing waits and not committed yet; the fan-out on the other worker
    waits for it and then creates no delivery for the deleted configuration."""
    a, b = await _two_engines(pg_url)
    try:
        reached, release = _pause_after(b.store, "deliveries", monkeypatch)
        delete = asyncio.create_task(b.delete_config("c"))
        await reached.wait()
        create = asyncio.create_task(a.create_activity("t", {"channel": "S"}))
        waited = await _blocked_or_done(pg_url, create)
        release.set()
        await delete
        activity = await create
        assert await _stranded(a) == []
        assert waited and await a.deliveries(activity_id=activity["id"]) == []
    finally:
        await a.close()
        await b.close()


async def test_a_force_retry_waits_for_a_delete_in_progress_and_is_refused(pg_url: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A FAILED delivery does not keep its configuration from being deleted; a force retry arriving while
    the delete is in progress (it found nothing waiting) waits for it and is refused (ConfigDeleted),
    instead of making a READY delivery of a deleted configuration."""
    a, b = await _two_engines(pg_url)
    try:
        activity = await a.create_activity("t", {"channel": "S"})
        [d] = await a.deliveries(activity_id=activity["id"])
        claim = (await a.store.claim([(d.id, a.clock.now() + 60)], token="x:1", now=a.clock.now()))[0]
        assert await a.store.mark_failed(claim, AttemptResult(finished_at=a.clock.now(), outcome="CONNECT_ERROR"),
                                         "exhausted", "refused", ordered=False, block=False)
        await a.deactivate("c")
        reached, release = _pause_after(b.store, "deliveries", monkeypatch)
        delete = asyncio.create_task(b.delete_config("c"))
        await reached.wait()
        retry = asyncio.create_task(a.force_retry(d.id))
        waited = await _blocked_or_done(pg_url, retry)
        release.set()
        await delete
        refused = (await asyncio.gather(retry, return_exceptions=True))[0]
        assert await _stranded(a) == []
        assert waited and isinstance(refused, ConfigDeleted)
        assert (await a.delivery(d.id)).status.value == "FAILED"
    finally:
        await a.close()
        await b.close()


def _docs_block(name: str) -> str:
    """The text of the block docs/postgres.md writes to ``name`` (``<!-- doc: file NAME -->``)."""
    from docs_harness import blocks

    [block] = [b for b in blocks(Path(__file__).resolve().parent.parent / "docs" / "postgres.md") if b.file == name]
    return block.text


async def test_the_docs_role_and_database_are_all_a_worker_needs_and_their_grant_fixes_a_foreign_one(
        pg_server) -> None:
    """docs/postgres.md's set-up SQL, run as written: the role it creates migrates the database it owns.
    In a database owned by postgres (PostgreSQL 15+: no CREATE on ``public`` for others) the store
    refuses in the words the page quotes, and the page's GRANT, run there, is the fix."""
    with pg_server.admin() as admin:
        for statement in filter(str.strip, _docs_block("setup.sql").split(";")):
            admin.execute(statement)
        admin.execute("CREATE DATABASE foreign_owned")  # by postgres, as createdb or a hosting panel makes it

    def as_role(database: str) -> str:
        return pg_server.url(database).replace("://postgres:@", "://dispatchsim@", 1)

    try:
        store = await PgStore.open(as_role("dispatchsim"), pool_size=1)
        assert await store.schema_version() == latest_schema_version()
        await store.close()
        with pytest.raises(StoreError) as refused:
            await PgStore.open(as_role("foreign_owned"), pool_size=1)
        [quoted] = [line for line in _docs_block("error.txt").splitlines() if "permission denied" in line]
        assert quoted.split("/dispatchsim: ", 1)[1].removesuffix(" …") in str(refused.value)
        with psycopg.connect(pg_server.url("foreign_owned"), autocommit=True) as owner:
            owner.execute(_docs_block("grant.sql"))
        store = await PgStore.open(as_role("foreign_owned"), pool_size=1)
        assert await store.schema_version() == latest_schema_version()
        await store.close()
    finally:
        with pg_server.admin() as admin:
            for database in ("dispatchsim", "foreign_owned"):
                admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.execute("DROP ROLE IF EXISTS dispatchsim")
