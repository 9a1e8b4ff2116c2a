"""The store's read models for the web console: a tenant's deliveries page and its ordered queues.

Named store operations like the others (``Store`` mixes them in). They answer from indexes in
time that does not grow with the table: the deliveries page walks ``deliveries_console (config_id,
status, created_at, rowid)`` backwards once per (status, configuration), starting at the window's
end, and merges the short runs, so a page of 50 out of a million rows reads about 50 rows per run; the
queue overview reads only rows that hold an ordered queue (the partial index ``deliveries_queue_holds``).
"""
from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .states import ACTIVE, Status
from .store_rows import Delivery, columns
from .store_sql import newest_where

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

#: The order of the console's list: what needs a person first, then what is still moving, then history.
CONSOLE_ORDER = (Status.FAILED, Status.RETRYING, Status.READY, Status.DISPATCHED)


@dataclass(frozen=True, kw_only=True)
class DeliveryFilter:
    """Which deliveries a console page shows (all given conditions hold)."""

    config_ids: tuple[str, ...]  #: the tenant's configurations (or the one chosen)
    status: Status | None = None
    created_from: float | None = None  #: inclusive
    created_to: float | None = None  #: exclusive


@dataclass(frozen=True)
class DeliveryCursor:
    """Where a page ends: the section (index into :data:`CONSOLE_ORDER`) and the last row shown
    (its creation time and id: the list is newest first by creation time, then id)."""

    section: int
    created_at: float
    before_id: int


@dataclass(frozen=True)
class QueueRow:
    """One ordered queue that holds deliveries: its head, how many wait, and when the head goes next."""

    queue: str
    config_id: str
    backlog: int
    head_id: int
    head_webhook_id: str
    head_status: Status
    head_attempts: int
    next_attempt_at: float | None


_DELIVERY = columns(Delivery)


class ConsoleOps:
    """Console read models; mixed into ``Store``, which provides the connection."""

    conn: sqlite3.Connection

    if TYPE_CHECKING:
        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...

    async def console_deliveries(self, f: DeliveryFilter, *, cursor: DeliveryCursor | None = None,
                           limit: int = 50) -> tuple[list[Delivery], DeliveryCursor | None]:
        """A page of deliveries, FAILED first (then RETRYING, READY, DISPATCHED), newest created first
        within each status; and the cursor of the next page (None at the end)."""
        sections = [i for i, s in enumerate(CONSOLE_ORDER) if f.status is None or s == f.status]
        out: list[Delivery] = []
        for section in sections:
            if cursor is not None and section < cursor.section:
                continue
            before = cursor if cursor is not None and section == cursor.section else None
            want = limit + 1 - len(out)
            rows = self._newest(CONSOLE_ORDER[section], f, before=before, limit=want)
            out.extend(rows)
            if len(out) > limit:
                last = out[limit - 1]
                return out[:limit], DeliveryCursor(CONSOLE_ORDER.index(last.status), last.created_at, last.id)
        return out, None

    def _newest(self, status: Status, f: DeliveryFilter, *, before: DeliveryCursor | None,
                limit: int) -> list[Delivery]:
        """The ``limit`` newest deliveries in ``status`` over the filter's configurations: one
        index walk per configuration, merged by (creation time, id)."""
        runs = []
        for config_id in f.config_ids:
            where, params = newest_where("?", config_id, status, f, before, limit)
            rows = self.conn.execute(f"SELECT {_DELIVERY} FROM deliveries INDEXED BY deliveries_console WHERE {where}"
                                     " ORDER BY created_at DESC, id DESC LIMIT ?", params).fetchall()
            runs.append([Delivery.from_row(r) for r in rows])
        return list(heapq.merge(*runs, key=lambda d: (-d.created_at, -d.id)))[:limit]

    async def ordered_queues(self, config_ids: Sequence[str]) -> list[QueueRow]:
        """Every ordered queue of these configurations that holds something, with its head."""
        if not config_ids:
            return []
        marks = ",".join("?" * len(config_ids))
        groups = self.conn.execute(
            "SELECT queue, config_id, COUNT(*) AS backlog, MIN(id) AS head FROM deliveries"
            f" INDEXED BY deliveries_queue_holds WHERE holds = 1 AND config_id IN ({marks})"
            " GROUP BY queue ORDER BY queue", list(config_ids)).fetchall()
        out = []
        for g in groups:
            head = self.conn.execute("SELECT webhook_id, status, attempts, next_attempt_at FROM deliveries"
                                     " WHERE id = ?", (g["head"],)).fetchone()
            status = Status(head["status"])
            out.append(QueueRow(queue=g["queue"], config_id=g["config_id"], backlog=g["backlog"], head_id=g["head"],
                                head_webhook_id=head["webhook_id"], head_status=status, head_attempts=head["attempts"],
                                next_attempt_at=head["next_attempt_at"] if status in ACTIVE else None))
        return out

    async def bench_fill_deliveries(self, *, tenant_id: str, config_id: str, config_version: int, count: int,
                                    failed_every: int, now: float, pending: bool = False) -> None:
        """Benchmark only: ``count`` activities of ``tenant_id`` and one finished delivery each
        (every ``failed_every``-th FAILED, the rest DISPATCHED), written in one statement per table;
        with ``pending``, one READY unordered delivery each instead, due from ``now`` on.
        The rows are shaped like real ones but no attempt is recorded; never called by the engine."""
        with self._tx() as c:
            start = c.execute("SELECT COALESCE(MAX(seq), 0) FROM activities").fetchone()[0]
            c.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                " INSERT INTO activities (id, tenant_id, type, channel, payload, created_at)"
                " SELECT 'bench-' || (? + i), ?, 'TASK', 'SALESMAN', '{}', ? + i * 0.001 FROM n",
                (count, start, tenant_id, now))
            if pending:
                c.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                    " INSERT INTO deliveries (webhook_id, activity_id, config_id, config_version, queue, status,"
                    " holds, eligible, budget_started_at, next_attempt_at, created_at, updated_at)"
                    " SELECT 'msg_bench' || (? + i), 'bench-' || (? + i), ?, ?, ?, 'READY', 0, 1,"
                    " ? + i * 0.001, ? + i * 0.001, ? + i * 0.001, ? + i * 0.001 FROM n",
                    (count, start, start, config_id, config_version, config_id, now, now, now, now))
                return
            c.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                " INSERT INTO deliveries (webhook_id, activity_id, config_id, config_version, queue, status, holds,"
                " eligible, attempts, budget_attempts, budget_started_at, next_attempt_at, failed_reason,"
                " dispatched_at, created_at, updated_at)"
                " SELECT 'msg_bench' || (? + i), 'bench-' || (? + i), ?, ?, ?,"
                " CASE WHEN i % ? = 0 THEN 'FAILED' ELSE 'DISPATCHED' END, 0, 0,"
                " CASE WHEN i % ? = 0 THEN 10 ELSE 1 END, CASE WHEN i % ? = 0 THEN 10 ELSE 1 END,"
                " ? + i * 0.001, ? + i * 0.001, CASE WHEN i % ? = 0 THEN 'exhausted' END,"
                " CASE WHEN i % ? = 0 THEN NULL ELSE ? + i * 0.001 END, ? + i * 0.001, ? + i * 0.001 FROM n",
                (count, start, start, config_id, config_version, config_id, failed_every, failed_every,
                 failed_every, now, now, failed_every, failed_every, now, now, now))
