"""Serve mode: the engine on the real clock, the HTTP API, message events and recurring jobs.

Shutdown (SIGTERM/SIGINT) is graceful: the HTTP server stops taking requests, the dispatchers
stop claiming, attempts in flight get ``shutdown_deadline`` seconds, and anything still running
after that is released (marked INTERRUPTED, due again), so the next ``serve`` on the same file
re-sends it at once. The database is the only state: a restart resumes where this one stopped.
"""
from __future__ import annotations

import contextlib
import asyncio
import logging
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from dispatchsim.engine import (AlreadyExists, ConfigError, DispatchsimError, Engine, OwnerLock, WalCheckpointer,
                                check_id, check_store, display_url, join_cluster, owner_lock, storage_error)
from dispatchsim.errors import Collector
from dispatchsim.yamlfile import dotted, load_file

from .api import IDEMPOTENCY_KEY, make_app
from .idempotency import DEFAULT_RETENTION, Idempotency
from .jobs import Jobs
from .logs import route_stdlib_logging
from .unparsable import ProblemAppRunner
from .keys import KeyRing, check_key_name


class ServeError(DispatchsimError):
    """Serve mode cannot start in this environment."""


@dataclass
class ServeOptions:
    db: str
    host: str = "127.0.0.1"
    port: int = 8080
    shutdown_deadline: float = 10.0
    #: api key -> tenant id (None: admin), from the config file
    keys: dict[str, str | None] = field(default_factory=dict)
    tenants: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    sweep_interval: float = 5.0
    stats_interval: float = 60.0
    retention_days: float | None = None
    log_format: str = "json"
    #: dispatcher pacing (see Dispatcher.pace): at most one dispatch cycle per this many seconds,
    #: at most this many claims per cycle; keeps API latency low while dispatch runs
    dispatch_interval: float = 0.005
    claim_chunk: int = 25
    #: WAL checkpoints in a worker thread every this many seconds (not inside an API request's commit)
    checkpoint_interval: float = 1.0
    #: seconds an Idempotency-Key and its first answer are kept (the expiry job forgets older ones)
    idempotency_retention: float = DEFAULT_RETENTION
    #: PostgreSQL: connections of this worker's pool (the LISTEN and job-leadership ones come on top)
    pool_size: int = 10
    #: a lease lasts the configuration's total timeout plus this margin: how long a dead worker's
    #: attempt waits before another worker sends it again
    lease_margin: float = 30.0


_SERVE_KEYS = {"keys", "tenants", "providers", "sweep_interval", "stats_interval", "retention_days",
               "dispatch_interval", "claim_chunk", "checkpoint_interval",
               "idempotency_retention", "pool_size", "lease_margin"}
#: number settings: name -> (lowest, highest, what the value is)
_SERVE_NUMBERS = {"sweep_interval": (0.001, 86400.0, "seconds"), "stats_interval": (0.001, 86400.0, "seconds"),
                  "retention_days": (0.0, 36500.0, "days"), "dispatch_interval": (0.0, 1.0, "seconds"),
                  "checkpoint_interval": (0.01, 3600.0, "seconds"),
                  "idempotency_retention": (1.0, 30 * 86400.0, "seconds"),
                  "lease_margin": (0.5, 3600.0, "seconds")}
#: whole-number settings: name -> (lowest, highest)
_SERVE_COUNTS = {"claim_chunk": (1, 100_000), "pool_size": (1, 1000)}


def load_serve_config(path: str | Path, opts: ServeOptions) -> ServeOptions:
    """``--config FILE`` (YAML or JSON): keys, tenants, providers, jobs.

    Read with the one YAML reader; every mistake is reported at once as ``file:line: key: message``.
    """
    source = str(path)
    data, lines = load_file(path, error=ConfigError, what="the serve config")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with keys, tenants, providers", source=source, line=1)
    found = Collector()

    def fail(key: tuple[str | int, ...], message: str) -> ConfigError:
        line = next((lines[key[:n]] for n in range(len(key), 0, -1) if key[:n] in lines), None)
        return ConfigError(message, source=source, line=line, field=dotted(key))

    for name in sorted(set(data) - _SERVE_KEYS, key=str):
        found.errors.append(fail((name,), f"unknown key {name!r} (known: {', '.join(sorted(_SERVE_KEYS))})"))
    keys = data.get("keys") or []
    if not isinstance(keys, list):
        found.errors.append(fail(("keys",), "a list of {key, admin: true} or {key, tenant: ID}"))
        keys = []
    first: dict[str, int] = {}  # key -> the entry that gave it first
    for i, entry in enumerate(keys):
        problems = _key_entry_problems(entry)
        if not problems and entry["key"] in first:  # the later entry would silently take the key over
            problems = [(("key",), f"the same key as keys[{first[entry['key']]}]: a key belongs to one tenant "
                                   "(or is an admin key); give each entry its own")]
        found.errors.extend(fail(("keys", i, *where), message) for where, message in problems)
        if not problems:
            first[entry["key"]] = i
            opts.keys[entry["key"]] = None if entry.get("admin") else str(entry["tenant"])
    for name in ("tenants", "providers"):
        values = data.get(name) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            found.errors.append(fail((name,), "a list of ids"))
            continue
        for i, value in enumerate(values):  # the rule the API and the engine apply, checked before starting
            with found.guard():
                try:
                    check_id(name[:-1], value)
                except ConfigError as exc:
                    raise fail((name, i), exc.message) from None
        getattr(opts, name).extend(values)
    for name, (lo, hi, unit) in _SERVE_NUMBERS.items():
        if name not in data or (name == "retention_days" and data[name] is None):
            continue
        value = data[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            found.errors.append(fail((name,), f"{unit} between {lo:g} and {hi:g}, got {value!r}"))
            continue
        setattr(opts, name, float(value))
    for name, (lo_n, hi_n) in _SERVE_COUNTS.items():
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, int) or isinstance(value, bool) or not lo_n <= value <= hi_n:
            found.errors.append(fail((name,), f"a whole number between {lo_n} and {hi_n}, got {value!r}"))
        else:
            setattr(opts, name, value)
    found.raise_if_any(ConfigError)
    return opts


#: what an entry of ``keys:`` may hold
_KEY_ENTRY = ("admin", "key", "name", "tenant")


def _key_entry_problems(entry: Any) -> list[tuple[tuple[str, ...], str]]:
    """Every mistake in one ``keys:`` entry, each with the key it is under (``()``: the entry itself)."""
    if not isinstance(entry, dict):
        return [((), "a mapping {key, admin: true} or {key, tenant: ID}")]
    problems: list[tuple[tuple[str, ...], str]] = [
        ((str(name),), f"unknown key {name!r} (known: {', '.join(_KEY_ENTRY)})")
        for name in sorted(set(entry) - set(_KEY_ENTRY), key=str)]
    if not isinstance(entry.get("key"), str) or len(entry["key"]) < 16:
        problems.append((("key",) if "key" in entry else (), "the API key: a string of 16 or more characters"))
    if bool(entry.get("admin")) == ("tenant" in entry):
        problems.append(((), "give either admin: true or tenant: ID"))
    # a number is its digits (``tenant: 42`` in YAML), as before this check was made here
    checks = [("tenant", lambda v: check_id("tenant", str(v) if isinstance(v, int) and not isinstance(v, bool)
                                            else v)), ("name", check_key_name)]
    for field_name, check in checks:
        if field_name in entry:
            try:
                check(entry[field_name])
            except ConfigError as exc:
                problems.append(((field_name,), exc.message))
    return problems


class Server:
    """One serve process: ``await start()``, then ``await stop()`` (or :func:`serve` for the CLI).

    Start checks the environment before it writes anything: the database file,
    its owner lock (one serve per SQLite file), the listening socket. Stop runs in order: HTTP,
    recurring jobs (scheduling stops, the running one finishes), dispatchers, then connections.

    On PostgreSQL (``--db postgresql://…``) there is no owner lock: any number of workers share
    the database. Each wakes on the others' new work (LISTEN/NOTIFY), reads the endpoint health
    they store, and runs a cluster-wide job (lease sweep, retention, idempotency expiry) only
    while it leads that job (see ``dispatchsim.engine.store_pg_cluster``).
    """

    def __init__(self, opts: ServeOptions, *, log_stream: TextIO | None = None) -> None:
        self.opts = opts
        self._log_stream = log_stream
        self.engine: Engine | None = None
        self.runner: ProblemAppRunner | None = None
        self.jobs: Jobs | None = None
        self.port: int | None = None
        self.checkpointer: WalCheckpointer | None = None
        self.lock: OwnerLock | None = None
        self._idempotency: Idempotency | None = None
        self._unroute_logging: Callable[[], None] | None = None
        #: PostgreSQL: this worker's place among the others (None on SQLite: one owner)
        self.cluster: Any = None
        #: lease owners the last lease sweep found dead (released when the next sweep finds them dead too)
        self._dead_owners: set[str] = set()
        #: set when the dispatcher ended on an error: the service stops rather than accept work it cannot send
        self.failed = asyncio.Event()
        self.failure: str | None = None

    async def start(self) -> None:
        check_store(self.opts.db, write=True)
        sock = _listen(self.opts.host, self.opts.port)
        try:
            self.lock = owner_lock(self.opts.db)
            if self.lock is not None:
                self.lock.acquire()
            engine = self.engine = await Engine.open(self.opts.db, log_stream=self._log_stream,
                                                     log_format=self.opts.log_format, pool_size=self.opts.pool_size,
                                                     lease_margin=self.opts.lease_margin, owner=self.lock)
            self.cluster = await join_cluster(self.opts.db, on_work=engine.dispatcher.wake)
            if self.cluster is not None:
                engine.dispatcher.share_health(every=min(1.0, self.opts.sweep_interval))
        except BaseException:
            sock.close()
            raise
        engine.dispatcher.pace(interval=self.opts.dispatch_interval, chunk=self.opts.claim_chunk)
        await self._recover_leases(engine)
        self.checkpointer = engine.store.wal_checkpointer()
        self.checkpointer.take_over()
        # every worker of a cluster registers the config file's tenants and providers when it starts;
        # the store's insert is one statement, so workers starting together do not collide
        for tid in self.opts.tenants:
            with contextlib.suppress(AlreadyExists):
                await engine.add_tenant(tid)
        for pid in self.opts.providers:
            with contextlib.suppress(AlreadyExists):
                await engine.add_provider(pid)
        for tenant in {t for t in self.opts.keys.values() if t is not None}:
            if await engine.store.tenant(tenant) is None:
                sock.close()
                raise ConfigError(f"api key for tenant {tenant!r}: no such tenant (list it under tenants:)")
        self._unroute_logging = route_stdlib_logging(engine.log, engine.redactor)
        app = make_app(engine, keys=KeyRing(engine.store, self.opts.keys),
                       idempotency_retention=self.opts.idempotency_retention)
        self._idempotency = app[IDEMPOTENCY_KEY]
        self.runner = ProblemAppRunner(app, access_log=None, shutdown_timeout=2.0, max_line_size=MAX_REQUEST_LINE,
                                    logger=_protocol_logger(engine))
        await self.runner.setup()
        site = web.SockSite(self.runner, sock)
        await site.start()
        self.port = sock.getsockname()[1]
        engine.start(on_crash=self._dispatcher_crashed)
        jobs = self.jobs = Jobs(engine.log)
        jobs.add("lease-sweep", self.sweep, seconds=self.opts.sweep_interval)
        if self.cluster is not None:
            jobs.add("lease-reaper", self._cluster_wide("lease-reaper", self.reap), seconds=self.opts.sweep_interval)
        jobs.add("stats", self.stats, seconds=self.opts.stats_interval)
        if self.checkpointer.enabled:
            jobs.add("wal-checkpoint", self.checkpoint, seconds=self.opts.checkpoint_interval)
        jobs.add("idempotency-expiry", self._cluster_wide("idempotency-expiry", self.expire_idempotency_keys),
                 seconds=min(3600.0, max(1.0, self.opts.idempotency_retention / 4)))
        jobs.add("console-session-expiry", self._cluster_wide("console-session-expiry", self.expire_console_sessions),
                 seconds=3600)
        if self.opts.retention_days:
            jobs.add("retention", self._cluster_wide("retention", self.retention), seconds=3600)
        jobs.start()
        engine.log.info("serve.started", url=f"http://{self.opts.host}:{self.port}", db=display_url(self.opts.db),
                        counts=await engine.counts(), worker=engine.instance)

    async def _stop_engine(self, engine: Engine, out: dict[str, int]) -> None:
        try:
            out["abandoned"] = await engine.stop(deadline=self.opts.shutdown_deadline)
        except Exception:  # the dispatcher had ended on an error (logged then): release what it held
            if self.failure is None:
                raise
        try:
            released = await engine.store.release_own_leases(engine.clock.now(), engine.instance)
        except Exception as exc:
            if storage_error(exc) is None:
                raise
            released = []  # the leases stay; the next start (holding the lock) releases them at once
            engine.log.error("serve.release_failed", error=str(storage_error(exc)))
        for did in released:
            engine.log.warning("attempt.interrupted", delivery_id=did, reason="shutdown deadline passed")
        try:
            counts: dict[str, int] | None = await engine.counts()
        except Exception as exc:  # the database went away meanwhile: the stop goes on without them
            if storage_error(exc) is None:
                raise
            counts = None
        engine.log.info("serve.stopped", counts=counts, **out)

    def _dispatcher_crashed(self, exc: BaseException) -> None:
        self.failure = f"{type(exc).__name__}: {exc}"
        self.failed.set()

    def _cluster_wide(self, name: str, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """``job`` as it runs in this process: always on SQLite (one owner), and on PostgreSQL only
        while this worker leads it, so it runs once per interval across all workers."""
        async def run() -> None:
            if self.cluster is None or await self.cluster.leads(name):
                await job()
        return run

    async def _recover_leases(self, engine: Engine) -> None:
        """Holding the owner lock, every lease in the file was left by a process that is gone: its
        attempts go again now (an ordered queue resumes at once instead of after the lease)."""
        if self.lock is None:
            return
        released = await engine.store.release_dead_owners_leases(engine.clock.now())
        if released:
            engine.log.warning("serve.recovered", previous_pid=self.lock.previous_pid, attempts=len(released),
                               reason="the previous owner of the database stopped during these attempts")

    async def sweep(self) -> None:
        """Lease-expiry sweep: wake the dispatcher so expired leases are released even when idle (and,
        with several workers, the polling fallback should a wake-up notification be missed)."""
        assert self.engine is not None
        if self.cluster is not None:  # keep this worker's owner lock: a lost session would make it look dead
            await self.engine.store.register_owner(self.engine.instance)
        self.engine.dispatcher.wake()
        if self._idempotency is not None and self._idempotency.unreleased:
            await self._idempotency.release_pending()

    async def reap(self) -> None:
        """PostgreSQL, on the worker leading the job: release the leases that ended, and at once those
        of a worker whose database session is gone (kill -9, a lost machine) when two sweeps in a row
        find it gone (a session that reconnects within a sweep keeps its leases); the release notifies
        every worker, so one of them sends them again."""
        assert self.engine is not None
        store, now = self.engine.store, self.engine.clock.now()
        for did in await store.release_expired_leases(now):
            self.engine.log.warning("attempt.interrupted", delivery_id=did,
                                    reason="lease expired (its worker stopped); will be re-sent now")
        dead = set(await store.dead_owners()) - {self.engine.instance}  # alive: it runs this; its sweep relocks
        for owner in sorted(dead & self._dead_owners):
            for did in await store.release_leases(now, ending_by=float("inf"), owner=owner,
                                                  error="its worker stopped during this attempt (its session ended)"):
                self.engine.log.warning("attempt.interrupted", delivery_id=did, worker=owner,
                                        reason="its worker's database session ended; will be re-sent now")
        self._dead_owners = dead

    async def stats(self) -> None:
        assert self.engine is not None
        self.engine.log.info("serve.stats", counts=await self.engine.counts(),
                             in_flight=self.engine.dispatcher.in_flight,
                             event_batches=await self.engine.events.counts())

    async def checkpoint(self) -> None:
        """WAL checkpoint in a worker thread (see ``dispatchsim.engine.WalCheckpointer``)."""
        if self.checkpointer is not None:
            await self.checkpointer.run()

    async def retention(self) -> None:
        assert self.engine is not None and self.opts.retention_days
        cutoff = self.engine.clock.now() - self.opts.retention_days * 86400
        n = await self.engine.store.delete_old_attempts(cutoff)
        self.engine.log.info("serve.retention", deleted_attempts=n, before_days=self.opts.retention_days)

    async def expire_console_sessions(self) -> None:
        """Delete the console sessions that ended (a lookup already ignores them; this frees the rows)."""
        assert self.engine is not None
        n = await self.engine.store.expire_console_sessions(self.engine.clock.now())
        if n:
            self.engine.log.info("serve.console_sessions_expired", deleted_sessions=n)

    async def expire_idempotency_keys(self) -> None:
        """Forget Idempotency-Keys past their retention (a lookup already ignores them; this frees the rows)."""
        assert self.engine is not None and self._idempotency is not None
        n = await self._idempotency.expire()
        if n:
            self.engine.log.info("serve.idempotency_expired", deleted_keys=n,
                                 retention=self.opts.idempotency_retention)

    async def stop(self) -> dict[str, int]:
        """Graceful, in order: stop HTTP; stop the recurring jobs (the running one finishes); stop
        claiming and wait for attempts in flight up to the deadline; release this process's
        abandoned leases; close the connections; drop the owner lock."""
        engine = self.engine
        out = {"abandoned": 0}
        try:
            if self.runner is not None:
                await self.runner.cleanup()
                self.runner = None
            if self.jobs is not None:
                await self.jobs.stop()
                self.jobs = None
            if self.checkpointer is not None:
                self.checkpointer.close()
                self.checkpointer = None
            if self.cluster is not None:
                await self.cluster.stop()
                self.cluster = None
            if engine is None:
                return out
            try:
                await self._stop_engine(engine, out)
            finally:  # the connections are closed whatever happened (a pool left open kept its tasks running)
                await engine.close(deadline=0)
                self.engine = None
            return out
        finally:
            if self._unroute_logging is not None:
                self._unroute_logging()
                self._unroute_logging = None
            if self.lock is not None:
                self.lock.release()
                self.lock = None


#: longest request line (method, path and query) accepted; aiohttp's default is 8,190 bytes
MAX_REQUEST_LINE = 65536


def _protocol_logger(engine: Engine) -> logging.Logger:
    """aiohttp logs a request it cannot even parse (a request line over the limit, garbage instead
    of HTTP) with a traceback; here it becomes one event in the engine's log."""

    class OneLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            exc = record.exc_info[1] if record.exc_info else None
            # aiohttp quotes the request's bytes (b'…') after its message: they may hold any credential, an
            # API key included, which the redaction does not know, so they are left out, not scrubbed
            said = re.split(r"""\s*b['"]""", " ".join(str(exc).split()), maxsplit=1)[0] if exc is not None else ""
            error = engine.redactor.error(f"{type(exc).__name__}: {said}", cap=300) if exc is not None else None
            engine.log.warning("http.unparsable_request", message=record.getMessage(), error=error)

    logger = logging.getLogger(f"dispatchsim.serve.http.{engine.instance}")
    logger.propagate = False
    logger.handlers[:] = [OneLine()]
    return logger


def _listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket before the database is opened: a port in use is refused before
    anything is written."""
    try:
        return socket.create_server((host, port), backlog=128)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def serve(opts: ServeOptions, *, log_stream: TextIO | None = sys.stderr, out: TextIO = sys.stdout,
                stop_event: asyncio.Event | None = None, on_ready: Callable[[Server], Any] | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop_event``), then shut down gracefully."""
    server = Server(opts, log_stream=log_stream)
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        try:
            await server.start()
        except BaseException:
            await server.stop()
            raise
        print(f"dispatchsim serve: listening on http://{opts.host}:{server.port} (db {display_url(opts.db)})", file=out,
              flush=True)
        if on_ready is not None:
            on_ready(server)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.failed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if server.failure is not None:
            print(f"dispatchsim serve: the dispatcher stopped on an error ({server.failure}); shutting down so"
                  " that a supervisor restarts the service (see the log: dispatcher.crashed)", file=sys.stderr,
                  flush=True)
        print("dispatchsim serve: stopping (waiting for attempts in flight up to "
              f"{opts.shutdown_deadline:g}s)", file=out, flush=True)
        result = await server.stop()
        print(f"dispatchsim serve: stopped; {result['abandoned']} attempt(s) released for the next start",
              file=out, flush=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 1 if server.failure is not None else 0
