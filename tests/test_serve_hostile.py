"""Hostile environments: every one is a one-line error and exit 2 before anything is written;
a full disk is a 503 during a request and the service recovers when space returns."""
from __future__ import annotations

import hashlib
import os
import random
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dispatchsim.cli import main
from dispatchsim.engine import Engine
from dispatchsim.engine.errors import DatabaseInUse, StoreError
from dispatchsim.engine.store import Store, migrations
from dispatchsim.engine.store_file import OwnerLock


def _files(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` and a digest of its content: 'nothing was written' is this unchanged."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line_error(capsys, rc: int, fragment: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert fragment in lines[0], lines[0]
    return lines[0]


def _real_db(path: Path) -> Path:
    Store(path).conn.close()  # only the file, migrated: no event loop needed
    return path


def _make(tmp_path: Path, kind: str) -> Path:
    """A database path of one hostile kind."""
    if kind == "missing-dir":
        return tmp_path / "nope" / "x.db"
    if kind == "directory":
        (tmp_path / "adir").mkdir()
        return tmp_path / "adir"
    db = tmp_path / "x.db"
    if kind == "garbage":
        db.write_bytes(b"this is not a database, just some text that is long enough to have a header" * 3)
    elif kind == "truncated":
        _real_db(tmp_path / "real.db")
        conn = sqlite3.connect(tmp_path / "real.db")
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
        data = (tmp_path / "real.db").read_bytes()
        (tmp_path / "real.db").unlink()
        db.write_bytes(data[: len(data) // 2])
    elif kind == "damaged":
        _real_db(tmp_path / "real.db")
        conn = sqlite3.connect(tmp_path / "real.db")
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
        data = bytearray((tmp_path / "real.db").read_bytes())
        (tmp_path / "real.db").unlink()
        data[5000:9000] = random.Random(1).randbytes(4000)  # pages 2 and 3 overwritten
        db.write_bytes(bytes(data))
    elif kind == "other-application":
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.commit()
        conn.close()
    elif kind == "newer-schema":
        _real_db(db)
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA user_version = 999")
        conn.close()
    return db


HOSTILE = {
    "missing-dir": "does not exist",
    "directory": "is a directory",
    "garbage": "not a SQLite database",
    "truncated": "truncated",
    "damaged": "damaged",
    "other-application": "not a dispatchsim database",
    "newer-schema": f"schema v999 is newer than this dispatchsim (schema v{migrations()[-1][0]})",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["serve", "status", "keys list", "keys create"])
def test_hostile_database_is_one_line_and_nothing_is_written(tmp_path, capsys, kind, command) -> None:
    db = _make(tmp_path, kind)
    before = _files(tmp_path)
    argv = {"serve": ["serve", "--db", str(db), "--port", "0"], "status": ["status", str(db)],
            "keys list": ["keys", "list", "--db", str(db)],
            "keys create": ["keys", "create", "--db", str(db), "--admin"]}[command]
    fragment = HOSTILE[kind] if not (command == "status" and kind == "missing-dir") else "does not exist"
    _one_line_error(capsys, main(argv), fragment)
    assert _files(tmp_path) == before  # no lock file, no WAL, no migration


async def test_a_checkpoint_cut_off_by_kill9_is_not_mistaken_for_truncation(tmp_path) -> None:
    """Found by the chaos run: kill -9 during a WAL checkpoint can leave the database header saying more
    pages than the file has; the WAL still holds them, so SQLite recovers and serve must start."""
    db = tmp_path / "w.db"
    store = Store(db)
    store.conn.execute("PRAGMA wal_autocheckpoint = 0")
    await store.add_tenant("acme", "acme", 0.0)
    for n in range(300):
        await store.add_provider(f"p{n}", "x" * 200, 0.0)  # pages in the WAL only
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        (copy / f"w.db{suffix}").write_bytes(Path(f"{db}{suffix}").read_bytes())  # as kill -9 leaves them
    await store.close()
    data = bytearray((copy / "w.db").read_bytes())
    pages = int.from_bytes(data[28:32], "big")
    data[28:32] = (pages + 1).to_bytes(4, "big")  # the header written before the file was extended
    (copy / "w.db").write_bytes(bytes(data))
    Store.check(copy / "w.db", write=True)
    again = Store(copy / "w.db")
    assert len(await again.providers()) == 300
    await again.close()


def test_status_never_changes_a_database_it_did_not_create(tmp_path, capsys) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)  # schema v1 only, as an older dispatchsim left it
    conn.executescript(migrations()[0][1] + "\nPRAGMA user_version = 1;")
    conn.close()
    before = _files(tmp_path)
    assert main(["status", str(db)]) == 0
    out = capsys.readouterr().out
    assert "schema v1; older than this dispatchsim" in out and "deliveries: READY 0" in out
    assert _files(tmp_path) == before
    _one_line_error(capsys, main(["status", str(tmp_path / "missing.db")]), "no such file")
    assert not (tmp_path / "missing.db").exists()


def test_port_out_of_range_and_in_use(tmp_path, capsys) -> None:
    db = tmp_path / "p.db"
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--db", str(db), "--port", "70000"])
    assert exc.value.code == 2 and "a whole number from 0 to 65535" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        _one_line_error(capsys, main(["serve", "--db", str(db), "--port", str(port)]),
                        f"cannot listen on 127.0.0.1:{port}")
    assert list(tmp_path.iterdir()) == []  # the database was not even created


def test_second_owner_is_refused_naming_the_holder(tmp_path, capsys) -> None:
    db = _real_db(tmp_path / "o.db")
    holder = OwnerLock(db)
    holder.acquire()
    try:
        _one_line_error(capsys, main(["serve", "--db", str(db), "--port", "0"]),
                        f"in use by another dispatchsim serve or engine (pid {os.getpid()})")
    finally:
        holder.release()
    again = OwnerLock(db)
    again.acquire()  # released cleanly: free again, and no pid of a dead owner is left behind
    assert again.previous_pid is None
    again.release()


def test_a_symbolic_link_to_an_owned_database_is_the_same_database(tmp_path, capsys) -> None:
    """The lock file is named after the file itself: serve on a link to a served database was not refused,
    and both sent the same deliveries."""
    db = _real_db(tmp_path / "o.db")
    (tmp_path / "alias.db").symlink_to(db)
    holder = OwnerLock(db)
    holder.acquire()
    try:
        _one_line_error(capsys, main(["serve", "--db", str(tmp_path / "alias.db"), "--port", "0"]),
                        f"alias.db: in use by another dispatchsim serve or engine (pid {os.getpid()})")
    finally:
        holder.release()


async def test_a_library_engine_owns_its_file_like_serve(tmp_path) -> None:
    """``Engine.open`` on a file takes the owner lock too: a library engine on a running serve's database
    dispatched its deliveries (duplicates, attempts on its own clock). The lock goes with close() and with a
    simulated crash (as the operating system drops a dead process's)."""
    db = tmp_path / "lib.db"
    first = await Engine.open(db, virtual=True)
    with pytest.raises(DatabaseInUse, match=f"in use by another dispatchsim serve or engine \\(pid {os.getpid()}\\)"):
        await Engine.open(db, virtual=True)
    with pytest.raises(DatabaseInUse):  # what serve takes first (test_second_owner_is_refused_naming_the_holder)
        OwnerLock(db).acquire()
    await first.crash()
    second = await Engine.open(db, virtual=True)
    await second.close()
    await second.close()  # twice is harmless
    third = await Engine.open(db)  # free again after close
    await third.close()
    mem = [await Engine.open(":memory:", virtual=True) for _ in range(2)]  # nothing to own
    for engine in mem:
        await engine.close()


async def test_a_failed_open_leaves_the_file_free(tmp_path) -> None:
    """An Engine.open that failed after taking the owner lock (an unknown keyword; the virtual clock outside
    its loop) kept it: the next open in the process was refused as in use by the process itself."""
    db = tmp_path / "leak.db"
    with pytest.raises(TypeError):
        await Engine.open(db, bogus=1)
    engine = await Engine.open(db)
    await engine.close()


@pytest.mark.parametrize("url", ["PostgreSQL://bob:S3cretPw@db.example/prod", ' "postgresql://bob:S3cretPw@db.example/p"',
                                 "postgresql+psycopg://bob:S3cretPw@db.example/prod"])
async def test_engine_open_refuses_a_mistyped_url_before_its_lock_file_names_it(url, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as refused:
        await Engine.open(url)
    assert "S3cretPw" not in str(refused.value) and "lock" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # no lock file, no folder


async def test_a_file_name_with_postgres_and_an_at_sign_is_still_a_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = await Engine.open("postgres-archive@2026.db")
    await engine.close()
    assert (tmp_path / "postgres-archive@2026.db").is_file()


@pytest.fixture
def read_only(tmp_path):
    """``make(folder)``: the folder (and what is in it) becomes read-only for this process. Root
    writes through file modes, so as root the folder is bind-mounted read-only instead."""
    mounts: list[Path] = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            for p in folder.iterdir():
                os.chmod(p, 0o444)
            os.chmod(folder, 0o555)
            return folder
        view = folder.with_name(folder.name + "-ro")
        view.mkdir()
        for cmd in (["mount", "--bind", str(folder), str(view)], ["mount", "-o", "remount,ro,bind", str(view)]):
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                pytest.skip("running as root without permission to mount: a read-only file cannot be made")
        mounts.append(view)
        return view

    yield make
    for view in mounts:
        subprocess.run(["umount", str(view)], check=True)
    for p in [tmp_path, *tmp_path.rglob("*")]:
        os.chmod(p, 0o755)


def _serve_refused(db: Path, fragment: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "dispatchsim", "serve", "--db", str(db), "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr, proc.stderr


def test_read_only_file_or_directory_is_refused_before_anything_is_written(tmp_path, read_only) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _real_db(data / "r.db")
    folder = read_only(data)
    before = _files(folder)
    _serve_refused(folder / "r.db", "the file is read-only")
    _serve_refused(folder / "new.db", "is read-only (SQLite needs to create files")
    assert _files(folder) == before
    # status only reads: it works on a read-only database and leaves it as it was
    proc = subprocess.run([sys.executable, "-m", "dispatchsim", "status", str(folder / "r.db")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "schema v" in proc.stdout, proc.stderr
    assert _files(folder) == before


def test_store_refuses_newer_schema_in_the_library_too(tmp_path) -> None:
    db = _make(tmp_path, "newer-schema")
    with pytest.raises(StoreError, match="newer than this dispatchsim"):
        Store(db)


async def test_disk_full_is_a_503_nothing_half_written_and_the_service_recovers(engine, receiver, setup_config):
    """SQLite's ``max_page_count`` caps the file as a full disk would: writes fail with SQLITE_FULL."""
    import aiohttp
    from aiohttp import web

    from dispatchsim.server.api import make_app
    from dispatchsim.server.keys import KeyRing

    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 4})
    runner = web.AppRunner(make_app(engine, keys=KeyRing(engine.store, {"acme-key-0000000000000": "acme"})),
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    conn = engine.store.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 40}")
    big = {"channel": "SALESMAN", "commerceName": "x" * 20000}
    acked, refused = [], []
    try:
        async with aiohttp.ClientSession(base, headers={"X-Api-Key": "acme-key-0000000000000"}) as http:
            for _ in range(100):
                async with http.post("/api/activities", json=big) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 201:
                        acked.append(body["id"])
                        continue
                    assert resp.status == 503 and resp.content_type == "application/problem+json"
                    assert resp.headers["Retry-After"] == "5" and "disk is full" in body["detail"], body
                    refused.append(body)
                    break
            assert acked and refused
            # nothing half-written: exactly the acknowledged activities, each with its delivery
            rows = conn.execute("SELECT a.id, COUNT(d.id) FROM activities a LEFT JOIN deliveries d"
                                " ON d.activity_id = a.id GROUP BY a.id").fetchall()
            assert sorted(r[0] for r in rows) == sorted(acked) and all(r[1] == 1 for r in rows)
            conn.execute("PRAGMA max_page_count = 1073741823")  # space returns
            async with http.post("/api/activities", json=big) as resp:
                assert resp.status == 201
                acked.append((await resp.json())["id"])
        summary = await engine.run_until_idle()
        assert summary.counts["DISPATCHED"] == len(acked)
        assert sorted(h.body["id"] for h in receiver.posts()) == sorted(acked)
    finally:
        await runner.cleanup()


async def test_dispatcher_waits_out_an_unwritable_database_and_loses_nothing(engine, receiver, setup_config,
                                                                              db_path):
    """Another connection holds the write lock (as a full disk refuses writes) while attempts are in
    flight: their results cannot be stored and nothing new can be claimed. The dispatcher keeps the
    results, stores them once writes work again, and sends nothing twice."""
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 4})
    receiver.respond = lambda hit, n: (200, {}, 1.0)
    made = [await engine.create_activity("acme", {"channel": "SALESMAN"}) for _ in range(3)]
    engine.store.conn.execute("PRAGMA busy_timeout = 0")
    engine.start()
    await engine.clock.sleep(0.5)
    assert engine.dispatcher.in_flight == 3
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        await engine.clock.sleep(5)
        assert len(receiver.posts()) == 3 and (await engine.counts())["DISPATCHED"] == 0
        assert '"pending_results": 3' in engine.log_buffer.getvalue()
    finally:
        other.execute("COMMIT")
        other.close()
    await engine.clock.sleep(5)
    await engine.stop()
    assert (await engine.counts())["DISPATCHED"] == 3
    assert sorted(h.body["id"] for h in receiver.posts()) == sorted(a["id"] for a in made)


def _unavailable_at(store, name: str, *, call: int) -> list[int]:
    """Make the store's operation ``name`` raise StorageUnavailable at its ``call``-th call (a lost
    connection, a full disk) and work otherwise; returns the list its calls are counted in."""
    from dispatchsim.engine import StorageUnavailable

    real, calls = getattr(store, name), []

    async def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise StorageUnavailable("storage unavailable: injected; nothing was stored, retry later")
        return await real(*args, **kwargs)

    setattr(store, name, failing)
    return calls


async def test_a_storage_failure_in_the_middle_of_a_claim_leaves_every_slot_counted(engine, receiver, setup_config):
    """The storage fails in the second round of a dispatch cycle's claim (after the first round
    leased and started an attempt): the cycle waits it out, and the slots it had reserved come back
    exactly once. Given back twice, the global limit would let one attempt more than it allows. The
    failure is injected into that one read of the real store; everything else is real."""
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 1})
    # more due than a round asks for (twice the engine's room of 100), so the claim takes a second round
    await engine.create_activities("acme", [{"channel": "SALESMAN"} for _ in range(210)])
    calls = _unavailable_at(engine.store, "due_candidates", call=2)
    summary = await engine.run_until_idle()
    assert len(calls) > 2 and summary.counts["DISPATCHED"] == 210 and len(receiver.posts()) == 210
    assert "store.unavailable" in engine.log_buffer.getvalue()
    dispatcher = engine.dispatcher
    assert dispatcher.in_flight == 0 and dispatcher._free() == dispatcher._concurrency  # nothing held, nothing extra


async def test_a_storage_failure_in_the_loops_wake_up_read_does_not_end_the_dispatcher(engine, receiver, setup_config):
    """The read of the next wake-up ran outside the loop's storage guard: one lost connection there (a
    PostgreSQL restart) ended the dispatcher for good while the API went on accepting work, with nothing
    logged. Now it is waited out like any failed read of the loop, and later work still goes out. The
    failure is injected into that one read of the real store; everything else is real."""
    await setup_config(receiver.url, ordering={"mode": "none", "concurrency": 4})
    calls = _unavailable_at(engine.store, "next_wakeup", call=1)
    engine.start()
    await engine.clock.sleep(1)
    assert calls and engine.dispatching
    assert "store.unavailable" in engine.log_buffer.getvalue()
    made = [await engine.create_activity("acme", {"channel": "SALESMAN"}) for _ in range(3)]
    await engine.clock.sleep(10)
    assert engine.dispatching and len(calls) > 1
    await engine.stop()
    assert (await engine.counts())["DISPATCHED"] == 3
    assert sorted(h.body["id"] for h in receiver.posts()) == sorted(a["id"] for a in made)


async def test_serve_stops_with_exit_1_when_its_dispatcher_ends_on_a_bug(tmp_path: Path, capsys) -> None:
    """A dispatcher that ends on an error that is not the database's (a bug) left the service accepting
    work that nobody would send, silently. Now it is logged (``dispatcher.crashed``), the service stops
    the way SIGTERM stops it (the leases released, ``serve.stopped`` logged) and exits 1, so that a
    supervisor restarts it. The bug is injected into one read of the real store."""
    import io

    from dispatchsim.server.serve import ServeOptions, serve

    def inject(server) -> None:
        async def bug(*args, **kwargs):
            raise RuntimeError("an injected bug")

        server.engine.store.next_wakeup = bug
        server.engine.dispatcher.wake()

    log, out = io.StringIO(), io.StringIO()
    opts = ServeOptions(db=str(tmp_path / "serve.db"), port=0, keys={"admin-key-000000000000": None},
                        tenants=["acme"], shutdown_deadline=1.0)
    assert await serve(opts, log_stream=log, out=out, on_ready=inject) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the dispatcher stopped on an error (RuntimeError: an injected bug)" in err
    assert '"dispatcher.crashed"' in log.getvalue() and '"serve.stopped"' in log.getvalue()
    assert "stopped; 0 attempt(s) released" in out.getvalue()
    assert "Traceback" not in err + out.getvalue()


async def test_a_stop_waits_for_the_commit_that_follows_the_one_storing(engine, receiver, setup_config) -> None:
    """Results that end while a group commit stores go into another one. A stop waited only for the
    commits under way when it began, so it could return while a later one was still storing, and serve then released the leases it was about to record: a delivery answered 200
    was sent again. Each commit is made slow (0.4 s of the engine's clock inside its transaction), as a
    network database's is; everything else is real."""
    receiver.respond = lambda hit, n: (200, {}, 0.1 * n)  # the second attempt ends while the first's result is stored
    await setup_config(receiver.url, ordering={"mode": "none"})
    await setup_config(receiver.url, provider="erp", ordering={"mode": "none"})
    await engine.create_activity("acme", {"channel": "SALESMAN"})
    real = engine.store.finish_attempts

    async def slow_commit(finishes):
        await engine.clock.sleep(0.4)
        return await real(finishes)

    engine.store.finish_attempts = slow_commit
    engine.dispatcher.merge_waves(0.0)
    engine.start()
    await engine.clock.sleep(0.3)
    assert len(receiver.posts()) == 2
    await engine.stop()
    assert await engine.store.release_own_leases(engine.clock.now(), engine.instance) == []
    assert (await engine.counts())["DISPATCHED"] == 2


@pytest.mark.parametrize("request_head, status", [
    (b"GET /api/tenants HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n", b"401"),
    (b"GET /api/tenants HTTP/1.1\r\nX-Api-Key: \xff\xfe-key\r\n", b"401"),
    (b"GET /console/ HTTP/1.1\r\nCookie: dispatchsim_console=\xff\xfe\r\n", b"303"),
    (b"POST /console/logout HTTP/1.1\r\nCookie: dispatchsim_console=\xff\r\nContent-Length: 0\r\n", b"401"),
], ids=["bearer", "api-key", "console-cookie", "logout-cookie"])
async def test_a_key_or_session_cookie_that_is_not_utf8_is_no_one_s(engine, request_head: bytes, status: bytes) -> None:
    """A key or a console cookie whose bytes are not UTF-8 answered 500 (hashing it raised): it is
    nobody's key (401) and nobody's session (the sign-in page; a sign-out without a session is 401, as
    with any unknown cookie)."""
    import asyncio

    from dispatchsim.server.api import make_app
    from dispatchsim.server.keys import KeyRing
    from support import start_site

    runner, port = await start_site(make_app(engine, keys=KeyRing(engine.store, {"admin-key-000000000000": None})))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_head + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == status, answer[:300]
        assert "UnicodeEncodeError" not in engine.log_buffer.getvalue()
    finally:
        await runner.cleanup()
