"""Statements both backends build the same way, written once with the placeholder as a parameter.

SQLite takes ``?`` and psycopg ``%s``; the filters, their order and the clauses are otherwise the same,
so a fix to one (a new filter, a different order) cannot miss the other backend.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .states import Status

if TYPE_CHECKING:
    from .store_console import DeliveryCursor, DeliveryFilter


def deliveries_query(columns: str, ph: str, *, activity_id: str | None, config_id: str | None,
                     status: Status | str | None, queue: str | None, after_id: int,
                     limit: int | None) -> tuple[str, list[Any]]:
    """``SELECT`` of deliveries matching every given filter, in id order, ``limit`` after ``after_id``."""
    where, params = [f"id > {ph}"], [after_id]
    for col, val in (("activity_id", activity_id), ("config_id", config_id), ("queue", queue),
                     ("status", str(status) if status else None)):
        if val is not None:
            where.append(f"{col} = {ph}")
            params.append(val)
    sql = f"SELECT {columns} FROM deliveries WHERE " + " AND ".join(where) + " ORDER BY id"
    if limit is not None:
        sql += f" LIMIT {ph}"
        params.append(limit)
    return sql, params


def newest_where(ph: str, config_id: str, status: Status, f: DeliveryFilter,
                 before: DeliveryCursor | None, limit: int) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (and its parameters, the limit last) of one configuration's walk of the
    console index: newest first, within the filter's creation times, before the cursor."""
    where, params = [f"config_id = {ph}", f"status = {ph}"], [config_id, status.value]
    for clause, val in ((f"created_at >= {ph}", f.created_from), (f"created_at < {ph}", f.created_to)):
        if val is not None:
            where.append(clause)
            params.append(val)
    if before is not None:
        where.append(f"(created_at, id) < ({ph}, {ph})")
        params.extend((before.created_at, before.before_id))
    params.append(limit)
    return " AND ".join(where), params


#: Columns that record when something happened (not when it is due: ``next_attempt_at``,
#: ``lease_until`` and ``circuit_until`` are schedules and may lie in the future).
HAPPENED = (("tenants", "created_at"), ("providers", "created_at"), ("configurations", "updated_at"),
            ("config_versions", "created_at"), ("activities", "created_at"), ("deliveries", "updated_at"),
            ("attempts", "started_at"), ("attempts", "finished_at"), ("endpoint_health", "updated_at"),
            ("notifications", "at"), ("api_keys", "created_at"), ("api_keys", "revoked_at"),
            ("message_events", "created_at"), ("event_batches", "created_at"))


def latest_time_query() -> str:
    """The latest time anything in :data:`HAPPENED` records (one row, NULL when the database is empty)."""
    union = " UNION ALL ".join(f"SELECT MAX({col}) AS t FROM {table}" for table, col in HAPPENED)
    return f"SELECT MAX(t) FROM ({union}) AS happened"


def attempts_query(cols: str, where: str = "", tail: str = "") -> str:
    """Attempts recorded and in flight (schema v10: one in flight has no row yet, its lease names it:
    the view ``attempts_open``) matching ``where`` (its parameters given twice, once for each part), in
    id order, then ``tail`` (a LIMIT). One compound SELECT rather than the view ``attempts_all``: SQLite
    merges the two parts in id order (the rows read by their key, the few in flight sorted), where an
    ORDER BY over the view sorts every row in a temporary tree before a LIMIT takes a page of them."""
    cond = f" WHERE {where}" if where else ""
    return f"SELECT {cols} FROM attempts{cond} UNION ALL SELECT {cols} FROM attempts_open{cond} ORDER BY id{tail}"


def first_leases(leases: Sequence[tuple[int, float]]) -> dict[int, float]:
    """A claim's (delivery id -> lease end) in the order asked, a repeated id keeping its first lease:
    what both stores lease, each id once."""
    once: dict[int, float] = {}
    for did, until in leases:
        once.setdefault(did, until)
    return once
