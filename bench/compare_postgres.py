"""PostgreSQL before/after: the 1- and 2-worker setups of ``bench_postgres.py`` run with two checkouts of
dispatchsim, interleaved in one session on one throwaway server and one receiver.

Each checkout is named by the Python of its own virtual environment (``pip install -e '.[test]'`` in
that checkout): the setup runs in a child process of that interpreter, so the library that fills
the database and the ``dispatchsim serve`` workers are that checkout's (this file's ``bench_postgres``
measures them). Interleaving matters on a machine shared with other jobs: a burst of their load then
falls on both versions, and the medians compare like with like. The CPU figures (workers, database,
receiver, per delivery) move much less with that load than the rates do.

Usage: python bench/compare_postgres.py N ROUNDS NAME=PYTHON [NAME=PYTHON ...] [--statements] [--ordered]
  e.g. python bench/compare_postgres.py 6000 3 before=../main-old/.venv/bin/python after=.venv/bin/python
``--statements``: per delivery, the statements' calls, plans and database time (pg_stat_statements).
``--ordered``: the deliveries of four configurations, each partitioned by commerce (200 ordered queues),
instead of one unordered configuration: an ordered delivery's finish moves its queue's head.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

SETUPS = (1, 2)  #: workers per setup


def _child(db: str, workers: int, n: int, url: str, cfg: str, postmaster: int, receiver: int,
           statements: bool, ordered: bool) -> None:
    """One setup under this interpreter's dispatchsim; prints one JSON line."""
    import dispatchsim.engine  # noqa: F401 - this interpreter's package, before bench/common.py adds this tree

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_postgres as bp
    import psutil

    r = bp.run_setup(f"{workers} workers", db, workers, n, url, Path(cfg), psutil.Process(postmaster),
                     psutil.Process(receiver), statements=statements, ordered=ordered)
    print("RESULT " + json.dumps({"rate": r.rate, "worker_ms": r.worker_ms, "db_ms": r.db_cpu / n * 1000,
                                  "rx_ms": r.receiver_cpu / n * 1000, "statements": _plans(db) if statements
                                  else None, "writes": r.writes}))


def _plans(db: str) -> list[tuple[int, int, float, str]]:
    """(calls, plans, ms planning + executing, statement) of the run, most time first."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(db)
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        return [(int(c), int(p), float(t), q) for c, p, t, q in conn.execute(
            "SELECT calls, plans, total_plan_time + total_exec_time, query FROM pg_stat_statements WHERE dbid ="
            " (SELECT oid FROM pg_database WHERE datname = %s) ORDER BY 3 DESC LIMIT 8", (parts.path.lstrip("/"),))]


def main(n: int, rounds: int, versions: dict[str, str], *, statements: bool, ordered: bool = False) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_postgres as bp
    import psycopg

    if ordered:
        n -= n % bp.ORDERED_CONFIGS
    runs: dict[tuple[str, int], list[dict]] = {(v, w): [] for v in versions for w in SETUPS}
    made = 0
    with bp.compare_server("compare-pg-", statements=statements) as (server, folder, postmaster, url, rx_pid):
        cfg = folder / "serve.yaml"
        cfg.write_text(f"keys:\n  - {{key: {bp.ADMIN}, admin: true}}\npool_size: 10\nclaim_chunk: 25\nsweep_interval: 1\n")
        for r in range(rounds):
            for name, python in versions.items():
                for workers in SETUPS:
                    made += 1
                    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
                        conn.execute(f"CREATE DATABASE compare{made}")
                    out = subprocess.run([python, __file__, "--child", server.get_uri(f"compare{made}"), str(workers),
                                          str(n), url, str(cfg), str(postmaster), str(rx_pid),
                                          "1" if statements else "0", "1" if ordered else "0"],
                                         capture_output=True, text=True,
                                         cwd=folder)
                    line = next((s for s in out.stdout.splitlines() if s.startswith("RESULT ")), None)
                    if line is None:
                        raise SystemExit(f"{name}, {workers} workers failed:\n{out.stderr[-3000:]}")
                    res = json.loads(line[7:])
                    runs[(name, workers)].append(res)
                    print(f"round {r + 1} {name:>10} {workers} worker(s): {res['rate']:6.0f}/s   CPU ms per delivery:"
                          f" workers {res['worker_ms']:.3f}, database {res['db_ms']:.3f}, receiver {res['rx_ms']:.3f}",
                          flush=True)
                    if res.get("writes"):
                        print("    deliveries rows updated per delivery {:.2f}, {:.0%} in place (HOT); WAL {:.0f} bytes"
                              " per delivery".format(*res["writes"]))
                    for calls, plans, ms, query in res["statements"] or []:
                        print(f"    {calls / n:6.3f} calls {plans / n:6.3f} plans {ms / n * 1000:6.1f} µs"
                              f"  {' '.join(query.split())[:90]}")
    print(f"medians of {rounds} interleaved round(s), N = {n}:")
    for name in versions:
        one, two = ([r["rate"] for r in runs[(name, w)]] for w in SETUPS)
        cpu = {w: tuple(statistics.median(r[k] for r in runs[(name, w)]) for k in ("worker_ms", "db_ms"))
               for w in SETUPS}
        print(f"  {name:>10}: 1 worker {statistics.median(one):6.0f}/s ({min(one):.0f}-{max(one):.0f}), 2 workers"
              f" {statistics.median(two):6.0f}/s ({min(two):.0f}-{max(two):.0f}), 2 / 1 = "
              f"{statistics.median(two) / statistics.median(one):.2f} (rounds {', '.join(f'{b / a:.2f}' for a, b in zip(one, two))});"
              f" CPU ms per delivery, workers | database: 1 worker {cpu[1][0]:.3f} | {cpu[1][1]:.3f},"
              f" 2 workers {cpu[2][0]:.3f} | {cpu[2][1]:.3f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        a = sys.argv[2:]
        _child(a[0], int(a[1]), int(a[2]), a[3], a[4], int(a[5]), int(a[6]), a[7] == "1", a[8] == "1")
    else:
        args = [a for a in sys.argv[1:] if not a.startswith("--")]
        if len(args) < 3 or any("=" not in a for a in args[2:]):
            raise SystemExit(next(line for line in __doc__.splitlines() if line.startswith("Usage:")))
        main(int(args[0]), int(args[1]), dict(a.split("=", 1) for a in args[2:]), statements="--statements" in sys.argv,
             ordered="--ordered" in sys.argv)
