"""``dispatchsim status DB``: what is in a database, at a glance."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from engine.clock import iso
from engine.store import Store


def print_status(db: str, out: TextIO = sys.stdout) -> int:
    if not Path(db).is_file():
        print(f"dispatchsim status: {db}: no such file", file=sys.stderr)
        return 2
    store = Store(db)
    try:
        c = store.conn
        counts = store.counts()
        out.write(f"{db} (schema v{store.schema_version})\n")
        out.write("deliveries: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
        rows = c.execute("SELECT queue, status, COUNT(*) AS n FROM deliveries GROUP BY queue, status"
                         " ORDER BY queue, status").fetchall()
        if rows:
            out.write("per queue:\n")
            for r in rows:
                out.write(f"  {r['queue']:<40} {r['status']:<10} {r['n']}\n")
        oldest = c.execute("SELECT id, queue, created_at FROM deliveries WHERE status IN ('READY','RETRYING')"
                           " ORDER BY created_at, id LIMIT 1").fetchone()
        if oldest:
            out.write(f"oldest pending: delivery {oldest['id']} in {oldest['queue']} since {iso(oldest['created_at'])}\n")
        blocked = c.execute("SELECT id, queue FROM deliveries WHERE status = 'FAILED' AND holds = 1").fetchall()
        for b in blocked:
            out.write(f"blocked queue: {b['queue']} (FAILED head: delivery {b['id']}; force-retry or skip it)\n")
        failures = c.execute("SELECT id, queue, failed_reason, last_error FROM deliveries WHERE status = 'FAILED'"
                             " ORDER BY updated_at DESC LIMIT 5").fetchall()
        if failures:
            out.write("recent failures:\n")
            for f in failures:
                out.write(f"  delivery {f['id']} ({f['queue']}): {f['failed_reason']}: {f['last_error']}\n")
    finally:
        store.close()
    return 0
