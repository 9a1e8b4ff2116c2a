"""``dispatchsim status DB``: what is in a database, at a glance."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from dispatchsim.engine.clock import iso
from dispatchsim.engine.store import Store


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
        _health(store, out)
    finally:
        store.close()
    return 0


def _health(store: Store, out: TextIO, notifications: int = 5) -> None:
    """Inactive configurations (auto-disabled ones with their reason), circuits, latest notifications."""
    c = store.conn
    inactive = c.execute("SELECT id, inactive_reason, inactive_since FROM configurations"
                         " WHERE active = 0 AND deleted = 0 ORDER BY id").fetchall()
    if inactive:
        out.write("inactive configurations (pending deliveries wait; activate to resume):\n")
        for r in inactive:
            since = f" since {iso(r['inactive_since'])}" if r["inactive_since"] is not None else ""
            out.write(f"  {r['id']:<40}{since}: {r['inactive_reason'] or 'not activated'}\n")
    circuits = c.execute("SELECT config_id, circuit, circuit_until, consecutive_failures, failing_since"
                         " FROM endpoint_health ORDER BY config_id").fetchall()
    if circuits:
        out.write("endpoint health:\n")
        for r in circuits:
            line = f"  {r['config_id']:<40} circuit {r['circuit']}"
            if r["circuit"] == "open" and r["circuit_until"] is not None:
                line += f" until {iso(r['circuit_until'])}"
            if r["consecutive_failures"]:
                line += f", {r['consecutive_failures']} consecutive failures"
                if r["failing_since"] is not None:
                    line += f" since {iso(r['failing_since'])}"
            out.write(line + "\n")
    notes = c.execute("SELECT at, kind, config_id, message, delivery FROM notifications"
                      " ORDER BY id DESC LIMIT ?", (notifications,)).fetchall()
    if notes:
        out.write("latest notifications:\n")
        for n in reversed(notes):
            sent = f" [operator webhook: {n['delivery']}]" if n["delivery"] else ""
            out.write(f"  {iso(n['at'])} {n['kind']:<21} {n['config_id']}: {n['message']}{sent}\n")
