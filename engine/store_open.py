"""Opening a store, and what only a database file needs: the seam between backends.

Serve mode, the status report and the key commands open their database here, so none of them asks
which backend it has. A SQLite file is checked before it is opened (``store_file``: a hostile
environment is one line, nothing written) and has one owner process at a time (an ``flock``); a
network database needs neither, so :func:`check_store` does nothing for it and :func:`owner_lock`
returns None (its workers coordinate in the database itself).
"""
from __future__ import annotations

from pathlib import Path

from .store import Store
from .store_contract import StoreContract
from .store_file import OwnerLock


def _memory(db: str | Path) -> bool:
    return str(db) == ":memory:"


def check_store(db: str | Path, *, write: bool) -> None:
    """Everything about the database that can be checked before opening it (StoreError: one line)."""
    if not _memory(db):
        Store.check(db, write=write)


def owner_lock(db: str | Path) -> OwnerLock | None:
    """The lock that makes one process the owner of a database file, or None when the database
    needs none (in memory)."""
    return None if _memory(db) else OwnerLock(db)


async def open_store(db: str | Path = ":memory:", *, readonly: bool = False,
                     durable: bool = True) -> StoreContract:
    """The store on ``db`` (creating and migrating it unless ``readonly``); ``durable=False`` lets a
    simulation's commits skip waiting for the disk (see :class:`Store`)."""
    return Store(db, readonly=readonly, durable=durable)
