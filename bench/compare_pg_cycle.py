"""PostgreSQL before/after, the database's side only: the statements of the dispatch cycle (due read,
claim of 25, group-commit finish of 25) driven through the store for N deliveries, no HTTP and no
workers, for several checkouts (or schema variants) interleaved in one session on one server.

``compare_postgres.py`` measures the whole run, where the workers, the receiver and the database share
the cores and the database's CPU per delivery moves by ±15 % from one round to the next. Here one
process asks the store what a worker asks it per delivery, with about 50 attempts in flight (two
claims), so what changes between two versions is what the database does for them. Printed per
delivery: the CPU of the database server's processes (user + system, from the first claim to the last
finish), the statements' planning and execution time (``pg_stat_statements``) and the two dearest
statements.

Each variant is ``NAME=PYTHON[:SQLFILE]``: the Python of a checkout's virtual environment (its
dispatchsim fills the database and runs the cycle), and optionally a file of SQL statements (``;``
between them) run after the fill, to try a schema change before writing its migration.

``--commits``: each finish as a serve worker's group commit makes it, in a transaction with the
configuration's read before it and the claims of the next due deliveries after it, followed by the
reads of the dispatch cycle that follows a commit (as the checkout's dispatcher makes them: its
``cycle_view`` where the store has one) and its next wake-up: the round trips and transactions of a
worker, not only its three busiest statements. The CPU of this process (the client's side of those
round trips) is printed too.

Usage: python bench/compare_pg_cycle.py N ROUNDS NAME=PYTHON[:SQLFILE] [NAME=PYTHON[:SQLFILE] ...] [--commits]
  e.g. python bench/compare_pg_cycle.py 6000 5 before=../base/.venv/bin/python after=.venv/bin/python
"""
from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHUNK = 25  #: deliveries per claim and per group commit (serve's default ``claim_chunk``)


def _child(db: str, n: int, sql_file: str, postmaster: int, url: str, commits: bool) -> None:
    """One variant under this interpreter's dispatchsim; prints one JSON line."""
    import dispatchsim.engine  # noqa: F401 - this interpreter's package, before bench/common.py adds this tree

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_postgres as bp
    import psutil
    import psycopg

    from dispatchsim.engine import Status, open_store
    from dispatchsim.engine.store import AttemptResult
    from dispatchsim.engine.store_contract import Finish

    asyncio.run(bp._prefill(db, url, n))
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE configurations SET active = true")
        for stmt in (Path(sql_file).read_text().split(";") if sql_file else []):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("ANALYZE")
    server = psutil.Process(postmaster)

    def server_cpu() -> float:
        total = 0.0
        for proc in server.children():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        return total

    async def cycle() -> tuple[float, float]:
        store = await open_store(db, pool_size=3)
        try:
            bp._statements(db, reset=True)
            before, client = server_cpu(), time.process_time()
            now, tokens, in_flight, done = time.time(), 0, [], 0
            while done < n:
                now += 0.001
                if len(in_flight) < 2 and not commits:
                    due = await store.due_candidates(now + 100, 2 * CHUNK)
                    if due:
                        tokens += 1
                        in_flight.append(await store.claim([(d, now + 60) for d, _, _ in due],
                                                           token=f"bench:{tokens}", now=now, limit=CHUNK))
                        continue
                if commits and len(in_flight) < 2:  # the first claims of a dispatch cycle
                    tokens += 1
                    in_flight.append(await _claim_due(store, now, f"bench:{tokens}"))
                    continue
                if not in_flight:
                    raise SystemExit(f"only {done} of {n} deliveries were due")
                claims = in_flight.pop(0)
                finishes = [Finish(claim=c, status=Status.DISPATCHED, result=AttemptResult(
                    finished_at=now, outcome="SUCCESS", status_code=200, latency=0.001, excerpt="ok"))
                    for c in claims]
                if commits:
                    async with store.tx():  # a group commit: the configuration, the finish, the refill's claim
                        await store.config("c")
                        results = await store.finish_attempts(finishes)
                        tokens += 1
                        in_flight.append(await _claim_due(store, now, f"bench:{tokens}", skip_paused=True))
                    await _cycle_reads(store, now)  # the dispatch cycle that follows (nothing more to claim)
                else:
                    results = await store.finish_attempts(finishes)
                if not all(r is True for r in results):
                    raise SystemExit(f"a finish was refused: {results}")
                done += len(claims)
            return server_cpu() - before, time.process_time() - client
        finally:
            await store.close()

    cpu, client = asyncio.run(cycle())
    statements = bp._statements(db, reset=False)
    top = sorted(statements, key=lambda s: -s[1])[:2]
    print("RESULT " + json.dumps({"db_us": cpu / n * 1e6, "statements_us": sum(s[1] for s in statements) / n * 1000,
                                  "client_us": client / n * 1e6, "calls": sum(s[0] for s in statements) / n,
                                  "top": [(calls / n, ms / n * 1000, " ".join(q.split())[:50])
                                          for calls, ms, q in top]}))


async def _claim_due(store: Any, now: float, token: str, *, skip_paused: bool = False) -> list[Any]:
    due = await store.due_candidates(now + 100, 2 * CHUNK, skip_paused=skip_paused)
    return await store.claim([(d, now + 60) for d, _, _ in due], token=token, now=now, limit=CHUNK) if due else []


async def _cycle_reads(store: Any, now: float) -> None:
    """What a dispatch cycle reads before it claims, as the checkout's dispatcher reads it: one
    ``cycle_view`` where the store has it, else one operation after the other; then its next wake-up."""
    if hasattr(store, "cycle_view"):
        view = await store.cycle_view(now, ["c"], health=False)
        if view.leases_ended:
            await store.release_expired_leases(now)
    else:
        await store.release_expired_leases(now)
        await store.paused_configs()
        await store.config("c")
    await store.next_wakeup(exclude_configs=["c"])


def main(n: int, rounds: int, variants: dict[str, str], *, commits: bool = False) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_postgres as bp
    import psycopg

    runs: dict[str, list[dict]] = {name: [] for name in variants}
    made = 0
    # the receiver answers the configuration's activation GET
    with bp.compare_server("compare-cycle-", statements=True) as (server, folder, postmaster, url, _rx):
        for r in range(rounds):
            for name, spec in variants.items():
                python, _, sql_file = spec.partition(":")
                made += 1
                with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE cycle{made}")
                out = subprocess.run([python, str(Path(__file__).resolve()), "--child", server.get_uri(f"cycle{made}"),
                                      str(n), str(Path(sql_file).resolve()) if sql_file else "", str(postmaster), url,
                                      "commits" if commits else "claims"],
                                     capture_output=True, text=True, cwd=folder)
                line = next((s for s in out.stdout.splitlines() if s.startswith("RESULT ")), None)
                if line is None:
                    raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
                res = json.loads(line[7:])
                runs[name].append(res)
                print(f"round {r + 1} {name:>10}: database {res['db_us']:5.1f} µs CPU per delivery, client"
                      f" {res['client_us']:5.1f} µs, {res['calls']:.3f} statements,"
                      f" {res['statements_us']:5.1f} µs  (" + "; ".join(f"{c:.3f} × {us:.1f} µs {q[:30]}…"
                                                                         for c, us, q in res["top"]) + ")", flush=True)
    print(f"medians of {rounds} interleaved round(s), N = {n}, per delivery:")
    for name in variants:
        db = [r["db_us"] for r in runs[name]]
        st = [r["statements_us"] for r in runs[name]]
        cl = [r["client_us"] for r in runs[name]]
        print(f"  {name:>10}: database CPU {statistics.median(db):5.1f} µs ({min(db):.1f}-{max(db):.1f}),"
              f" statements {statistics.median(st):5.1f} µs ({min(st):.1f}-{max(st):.1f}),"
              f" client CPU {statistics.median(cl):5.1f} µs ({min(cl):.1f}-{max(cl):.1f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        a = sys.argv[2:]
        _child(a[0], int(a[1]), a[2], int(a[3]), a[4], a[5] == "commits")
    else:
        args = [a for a in sys.argv[1:] if a != "--commits"]
        if len(args) < 3 or any("=" not in a for a in args[2:]):
            raise SystemExit(__doc__.strip().splitlines()[-2])
        main(int(args[0]), int(args[1]), dict(a.split("=", 1) for a in args[2:]), commits="--commits" in sys.argv)
