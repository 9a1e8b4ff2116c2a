"""Read queries and housekeeping that serve mode needs beyond ``Store``'s named operations.

Filtered activity listing with a cursor, ownership look-ups for authorisation, Prometheus
aggregates, retention cleanup and WAL checkpoints off the event loop. Plain SQL on the engine's connection; nothing here changes
a delivery's status.
"""
from __future__ import annotations

import asyncio
import base64
import sqlite3
from dataclasses import dataclass
from typing import Any

from dispatchsim.engine.errors import NotFound
from dispatchsim.engine.store import Store

#: Buckets (seconds) of the attempt latency histogram.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, kw_only=True)
class ActivityFilter:
    tenant_id: str | None = None
    channel: str | None = None
    status: str | None = None  #: the payload's ``status`` (e.g. PENDING)
    dispatch_status: str | None = None  #: activities with at least one delivery in this status
    created_from: float | None = None  #: inclusive
    created_to: float | None = None  #: exclusive


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"a:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The last ``seq`` seen; ValueError for anything that is not one of our cursors."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor: not a cursor returned by this API") from None
    kind, _, num = raw.partition(":")
    if kind != "a" or not num.isdigit():
        raise ValueError("cursor: not a cursor returned by this API")
    return int(num)


def list_activities(store: Store, f: ActivityFilter, *, after_seq: int = 0,
                    limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """One page, oldest first; the cursor is None on the last page."""
    where, params = ["a.seq > ?"], [after_seq]
    if f.tenant_id is not None:
        where.append("a.tenant_id = ?")
        params.append(f.tenant_id)
    if f.channel is not None:
        where.append("a.channel = ?")
        params.append(f.channel)
    if f.status is not None:
        where.append("json_extract(a.payload, '$.status') = ?")
        params.append(f.status)
    if f.created_from is not None:
        where.append("a.created_at >= ?")
        params.append(f.created_from)
    if f.created_to is not None:
        where.append("a.created_at < ?")
        params.append(f.created_to)
    if f.dispatch_status is not None:
        where.append("EXISTS (SELECT 1 FROM deliveries d WHERE d.activity_id = a.id AND d.status = ?)")
        params.append(f.dispatch_status)
    rows = store.conn.execute(f"SELECT a.seq, a.id FROM activities a WHERE {' AND '.join(where)}"
                              " ORDER BY a.seq LIMIT ?", (*params, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [store.activity_view(r["id"]) for r in rows]
    return items, (encode_cursor(rows[-1]["seq"]) if more and rows else None)


def activity_tenant(store: Store, activity_id: str) -> str:
    row = store.conn.execute("SELECT tenant_id FROM activities WHERE id = ?", (activity_id,)).fetchone()
    if row is None:
        raise NotFound(f"activity {activity_id!r} not found")
    return row["tenant_id"]


def delivery_tenant(store: Store, delivery_id: int) -> str:
    row = store.conn.execute("SELECT a.tenant_id FROM deliveries d JOIN activities a ON a.id = d.activity_id"
                             " WHERE d.id = ?", (delivery_id,)).fetchone()
    if row is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return row["tenant_id"]


@dataclass(frozen=True)
class Metrics:
    deliveries: dict[str, int]
    attempts: dict[str, int]
    queue_depth: dict[str, int]  #: READY + RETRYING per queue
    latency_buckets: list[tuple[float, int]]
    latency_count: int
    latency_sum: float
    in_flight: int


def metrics(store: Store) -> Metrics:
    c = store.conn
    attempts = {r["o"]: r["n"] for r in c.execute(
        "SELECT COALESCE(outcome, 'IN_FLIGHT') AS o, COUNT(*) AS n FROM attempts GROUP BY o")}
    depth = {r["queue"]: r["n"] for r in c.execute(
        "SELECT queue, COUNT(*) AS n FROM deliveries INDEXED BY deliveries_status"
        " WHERE status IN ('READY', 'RETRYING') GROUP BY queue")}
    cols = ", ".join(f"SUM(latency <= {b!r})" for b in LATENCY_BUCKETS)
    row = c.execute(f"SELECT COUNT(*), COALESCE(SUM(latency), 0), {cols} FROM attempts"
                    " WHERE latency IS NOT NULL").fetchone()
    buckets = [(b, int(row[i + 2] or 0)) for i, b in enumerate(LATENCY_BUCKETS)]
    return Metrics(deliveries=store.counts(), attempts=attempts, queue_depth=depth, latency_buckets=buckets,
                   latency_count=int(row[0]), latency_sum=float(row[1]), in_flight=store.in_flight())


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(m: Metrics, *, extra: dict[str, float] | None = None) -> str:
    """Prometheus text exposition format 0.0.4."""
    out = ["# HELP dispatchsim_deliveries Deliveries by status.", "# TYPE dispatchsim_deliveries gauge"]
    out += [f'dispatchsim_deliveries{{status="{s}"}} {n}' for s, n in sorted(m.deliveries.items())]
    out += ["# HELP dispatchsim_attempts_total Attempts by outcome.", "# TYPE dispatchsim_attempts_total counter"]
    out += [f'dispatchsim_attempts_total{{outcome="{_esc(o)}"}} {n}' for o, n in sorted(m.attempts.items())]
    out += ["# HELP dispatchsim_queue_depth Pending (READY or RETRYING) deliveries per queue.",
            "# TYPE dispatchsim_queue_depth gauge"]
    out += [f'dispatchsim_queue_depth{{queue="{_esc(q)}"}} {n}' for q, n in sorted(m.queue_depth.items())]
    out += ["# HELP dispatchsim_pending_deliveries Pending deliveries, all queues.",
            "# TYPE dispatchsim_pending_deliveries gauge", f"dispatchsim_pending_deliveries {sum(m.queue_depth.values())}",
            "# HELP dispatchsim_in_flight Attempts holding a lease.", "# TYPE dispatchsim_in_flight gauge",
            f"dispatchsim_in_flight {m.in_flight}",
            "# HELP dispatchsim_attempt_latency_seconds Latency of finished attempts.",
            "# TYPE dispatchsim_attempt_latency_seconds histogram"]
    out += [f'dispatchsim_attempt_latency_seconds_bucket{{le="{b:g}"}} {n}' for b, n in m.latency_buckets]
    out += [f'dispatchsim_attempt_latency_seconds_bucket{{le="+Inf"}} {m.latency_count}',
            f"dispatchsim_attempt_latency_seconds_sum {m.latency_sum:.6f}",
            f"dispatchsim_attempt_latency_seconds_count {m.latency_count}"]
    for name, value in (extra or {}).items():
        out += [f"# TYPE {name} gauge", f"{name} {value:g}"]
    return "\n".join(out) + "\n"


def delete_old_attempts(store: Store, before: float) -> int:
    """Retention: attempts finished before ``before`` of deliveries that are over (DISPATCHED or FAILED).

    The last attempt of each delivery is kept, so a FAILED delivery still shows why it failed.
    """
    with store.tx() as c:
        cur = c.execute(
            "DELETE FROM attempts WHERE finished_at IS NOT NULL AND finished_at < ? AND delivery_id IN"
            " (SELECT id FROM deliveries WHERE status IN ('DISPATCHED', 'FAILED'))"
            " AND id < (SELECT MAX(b.id) FROM attempts b WHERE b.delivery_id = attempts.delivery_id)",
            (before,))
        n = cur.rowcount
        cur = c.execute(
            "DELETE FROM event_attempts WHERE finished_at IS NOT NULL AND finished_at < ? AND batch_id IN"
            " (SELECT id FROM event_batches WHERE status IN ('DISPATCHED', 'FAILED'))"
            " AND id < (SELECT MAX(b.id) FROM event_attempts b WHERE b.batch_id = event_attempts.batch_id)",
            (before,))
        return n + cur.rowcount


def release_all_leases(store: Store, now: float) -> list[int]:
    """After a graceful stop, when this process is the only sender on the file: attempts it abandoned
    are marked INTERRUPTED and their deliveries are due again ``now`` (the same effect as
    ``Store.release_expired_leases`` once the leases end, without waiting for them)."""
    return store.release_leases(now, ending_by=float("inf"), error="shutdown deadline passed during this attempt")


class WalCheckpointer:
    """Serve mode: SQLite WAL checkpoints off the event loop.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1000 WAL pages, on the
    event-loop thread, and with ``synchronous = NORMAL`` it fsyncs the WAL and the database file:
    about 5 ms on a quiet disk, over 100 ms when other processes keep the disk busy, and every API
    request waits meanwhile. With :meth:`take_over` the engine's connection stops checkpointing by
    itself; :meth:`run` (a recurring job) copies the WAL and fsyncs on a connection of its own in a
    worker thread (sqlite3 releases the GIL there), then lets the engine's connection finish the few
    pages committed during that copy, so the WAL is complete, restarts at the next write, and its
    size stays bounded by what one interval writes.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.enabled = store.path != ":memory:" and \
            store.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        self._conn: sqlite3.Connection | None = None

    def take_over(self) -> None:
        if self.enabled:
            self.store.conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn = sqlite3.connect(self.store.path, isolation_level=None, check_same_thread=False)

    def _bulk(self) -> None:
        assert self._conn is not None
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def run(self) -> tuple[int, int]:
        """One checkpoint; returns (WAL frames, frames copied) as the engine's connection saw them."""
        if self._conn is None:
            return (0, 0)
        await asyncio.to_thread(self._bulk)
        if self.store.conn.in_transaction:  # never the case between callbacks; be safe anyway
            return (0, 0)
        _busy, log, done = self.store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return (log, done)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self.store.conn.execute("PRAGMA wal_autocheckpoint = 1000")
