"""``dispatchsim status DB``: what is in a database, at a glance."""
from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from dispatchsim.engine import Circuit, StoreContract, StoreError, iso, latest_schema_version
from dispatchsim.engine import check_store, display_url, open_store


def print_status(db: str, out: TextIO | None = None) -> int:
    """Read-only: a database is never created, migrated or changed here; one of another application,
    with a newer schema, or damaged is refused with one line (``StoreError``)."""
    return asyncio.run(status_report(db, out or sys.stdout))


async def status_report(db: str, out: TextIO) -> int:
    """The report of :func:`print_status`, for a caller that already runs an event loop."""
    try:
        check_store(db, write=False)
        store = await open_store(db, readonly=True)
    except StoreError as exc:
        print(f"dispatchsim status: {exc}", file=sys.stderr)
        return 2
    try:
        counts = await store.counts()
        version, latest = await store.schema_version(), latest_schema_version()
        older = f"; older than this dispatchsim's v{latest}: serve migrates it" if version < latest else ""
        out.write(f"{display_url(db)} (schema v{version}{older})\n")
        out.write("deliveries: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
        rows = await store.queue_status_counts()
        if rows:
            out.write("per queue:\n")
            for queue, status, n in rows:
                out.write(f"  {queue:<40} {status:<10} {n}\n")
        oldest = await store.oldest_pending()
        if oldest:
            did, queue, created = oldest
            out.write(f"oldest pending: delivery {did} in {queue} since {iso(created)}\n")
        for did, queue in await store.blocked_heads():
            out.write(f"blocked queue: {queue} (FAILED head: delivery {did}; force-retry or skip it)\n")
        failures = await store.recent_failures(5)
        if failures:
            out.write("recent failures:\n")
            for did, queue, reason, error in failures:
                out.write(f"  delivery {did} ({queue}): {reason}: {error}\n")
        if version >= 2:  # endpoint health came with schema v2
            await _health(store, out)
    finally:
        await store.close()
    return 0


async def _health(store: StoreContract, out: TextIO, notifications: int = 5) -> None:
    """Inactive configurations (auto-disabled ones with their reason), circuits, latest notifications."""
    inactive = await store.inactive_configs()
    if inactive:
        out.write("inactive configurations (pending deliveries wait; activate to resume):\n")
        for cid, reason, since_at in inactive:
            since = f" since {iso(since_at)}" if since_at is not None else ""
            out.write(f"  {cid:<40}{since}: {reason or 'not activated'}\n")
    circuits = await store.health_rows()
    if circuits:
        out.write("endpoint health:\n")
        for r in circuits:
            line = f"  {r.config_id:<40} circuit {r.circuit}"
            if r.circuit is Circuit.OPEN and r.circuit_until is not None:
                line += f" until {iso(r.circuit_until)}"
            if r.consecutive_failures:
                line += f", {r.consecutive_failures} consecutive failures"
                if r.failing_since is not None:
                    line += f" since {iso(r.failing_since)}"
            out.write(line + "\n")
    notes = await store.latest_notifications(notifications)
    if notes:
        out.write("latest notifications:\n")
        for n in notes:
            sent = f" [operator webhook: {n.delivery}]" if n.delivery else ""
            out.write(f"  {iso(n.at)} {n.kind:<21} {n.config_id}: {n.message}{sent}\n")
