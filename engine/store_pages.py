"""A finished SQLite database read a page at a time, without the engine: what a scenario's reports
and expectations stream once its run is over.

A long simulation leaves hundreds of thousands of deliveries and attempts behind; read into lists,
they were most of the run's memory. These reads hold one page at a time and open their own
read-only connection for each pass, so a pass that is abandoned half-way leaves nothing open for
long. They are synchronous (plain ``sqlite3``) because their readers are: the expectations and the
reports run after the run's event loop has finished, or inside a loop that must not be re-entered.
The rows are the store's own (:class:`~.store_rows.Delivery`, :class:`~.store_rows.Attempt`), read
with the same columns and filter as :meth:`Store.deliveries`, so they show what the API shows.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import store_file
from .store_rows import Attempt, Delivery, columns
from .store_sql import attempts_query, deliveries_query

#: rows read at a time
PAGE = 2000

_DELIVERY = columns(Delivery)
_ATTEMPT = columns(Attempt)


class PageReader:
    """Deliveries, attempts and activity ids of a database nobody writes any more, in id order."""

    def __init__(self, path: str | Path, *, page: int = PAGE) -> None:
        self.path = str(path)
        self.page = page

    def _connect(self) -> sqlite3.Connection:
        return store_file.connect(self.path, readonly=True)

    def _pages(self, sql: str, params: tuple[Any, ...], *, parts: int = 1) -> Iterator[list[Any]]:
        """Pages of ``sql``, which takes ``params`` and the last id seen (``parts`` times: a compound
        SELECT), then the page size, and selects the id first."""
        conn = self._connect()
        try:
            after = 0
            while rows := conn.execute(sql, (*params, after) * parts + (self.page,)).fetchall():
                yield rows
                after = rows[-1][0]
        finally:
            conn.close()

    def deliveries(self) -> Iterator[Delivery]:
        """Every delivery."""
        sql, _ = deliveries_query(_DELIVERY, "?", activity_id=None, config_id=None, status=None, queue=None,
                                  after_id=0, limit=self.page)
        for rows in self._pages(sql, ()):
            yield from map(Delivery.from_row, rows)

    def attempts(self, delivery_id: int | None = None) -> Iterator[Attempt]:
        """Every attempt (those in flight too, from their leases), or those of one delivery."""
        if delivery_id is None:
            sql, params = attempts_query(_ATTEMPT, "id > ?", " LIMIT ?"), ()
        else:
            sql, params = attempts_query(_ATTEMPT, "delivery_id = ? AND id > ?", " LIMIT ?"), (delivery_id,)
        for rows in self._pages(sql, params, parts=2):
            yield from map(Attempt.from_row, rows)

    def activity_ids(self) -> Iterator[str]:
        """Every activity id, in creation order."""
        for rows in self._pages("SELECT seq, id FROM activities WHERE seq > ? ORDER BY seq LIMIT ?", ()):
            for row in rows:
                yield row[1]

    def by_webhook_id(self, webhook_ids: Sequence[str]) -> dict[str, tuple[int, str, str]]:
        """``webhook_id -> (id, config_id, queue)`` for those of ``webhook_ids`` that are deliveries
        (by the unique index; a page of them per statement)."""
        out: dict[str, tuple[int, str, str]] = {}
        conn = self._connect()
        try:
            for start in range(0, len(webhook_ids), self.page):
                chunk = list(webhook_ids[start:start + self.page])
                marks = ", ".join("?" * len(chunk))
                for wid, did, cid, queue in conn.execute(
                        f"SELECT webhook_id, id, config_id, queue FROM deliveries WHERE webhook_id IN ({marks})", chunk):
                    out[wid] = (did, cid, queue)
        finally:
            conn.close()
        return out

    def attempts_spread(self, delivery_id: int | None = None) -> tuple[int, int | None, int | None]:
        """(deliveries, fewest attempts, most attempts) of every delivery, or of one: what a bound on
        the attempts per delivery needs, without reading every row."""
        where, params = ("", ()) if delivery_id is None else (" WHERE id = ?", (delivery_id,))
        conn = self._connect()
        try:
            n, lo, hi = conn.execute(f"SELECT COUNT(*), MIN(attempts), MAX(attempts) FROM deliveries{where}",
                                     params).fetchone()
        finally:
            conn.close()
        return int(n), lo, hi

    def last_dispatched_at(self) -> float | None:
        """When the last delivery was DISPATCHED (None: none was)."""
        conn = self._connect()
        try:
            return conn.execute("SELECT MAX(dispatched_at) FROM deliveries").fetchone()[0]
        finally:
            conn.close()

    def not_dispatched_by(self, at: float) -> Iterator[tuple[int, str, float | None]]:
        """``(id, status, dispatched_at)`` in id order of the deliveries not DISPATCHED, or DISPATCHED
        after ``at``."""
        conn = self._connect()
        try:
            yield from conn.execute("SELECT id, status, dispatched_at FROM deliveries WHERE status != ?"
                                    " OR dispatched_at > ? ORDER BY id", ("DISPATCHED", at))
        finally:
            conn.close()

    def count(self, table: str) -> int:
        """Rows in ``deliveries``, ``attempts`` or ``activities``."""
        if table not in ("deliveries", "attempts", "activities"):
            raise ValueError(f"no count of {table!r}")
        conn = self._connect()
        try:
            # the attempts in flight too (read from their deliveries: schema v10), as the attempts listed
            source = "attempts_all" if table == "attempts" else table
            return int(conn.execute(f"SELECT COUNT(*) FROM {source}").fetchone()[0])
        finally:
            conn.close()
