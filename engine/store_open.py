"""Opening a store, and what only a database file needs: the seam between backends.

Serve mode, the status report and the key commands open their database here, so none of them asks
which backend it has. A SQLite file is checked before it is opened (``store_file``: a hostile
environment is one line, nothing written) and has one owner process at a time (an ``flock``); a
network database (PostgreSQL, a ``postgresql://`` URL) needs neither, so :func:`check_store` does
nothing for it and :func:`owner_lock` returns None (its workers coordinate in the database itself).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode

from .store import Store
from .store_contract import StoreContract
from .errors import StoreError
from .store_file import OwnerLock

if TYPE_CHECKING:
    from .store_pg_cluster import PgCluster


def _memory(db: str | Path) -> bool:
    return str(db) == ":memory:"


def is_url(db: str | Path) -> bool:
    """Whether ``db`` names a PostgreSQL database (``postgresql://…``) rather than a SQLite file."""
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


#: text that starts like a URL (``scheme:/…``); a file path does not
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


def refuse_mistyped_url(db: str | Path) -> None:
    """Refuse text that is meant as a database URL but is not one dispatchsim opens, such as
    ``postgressql://…``, ``PostgreSQL://…`` or ``postgresql:/…``: taken for a file path, it was echoed
    back whole, password included, as a directory that does not exist. The message shows the scheme
    only."""
    text = str(db).strip().strip("\"'").strip()  # pasted with blanks or quotes (an env file keeps them)
    if is_url(str(db)):
        return
    if is_url(text):
        raise StoreError("the database URL has blanks or quotes around it: give postgresql://… without them")
    meant = _URL_LIKE.match(text)
    if meant is None and not (text[:8].lower() == "postgres" and ("//" in text or (":" in text and "@" in text))):
        return
    scheme = text.partition(":")[0] if meant else text[:10]
    raise StoreError(f"{scheme!r} does not start a database URL dispatchsim opens: write postgresql://user@host/dbname"
                     " (or postgres://) for PostgreSQL, in lower case, or give a file path for SQLite")


#: The query parameters of a database URL that carry a secret: libpq takes the password there too, and the
#: client key's passphrase as ``sslpassword``.
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def _userinfo(url: str) -> tuple[str, str, str | None]:
    """``(scheme, the rest after the user part, the user part or None)`` of a database URL, made from
    the text. The user part ends at the LAST ``@``: libpq takes a password with an unencoded ``#``, ``?``
    or ``/`` in it, where a URL parser would end the authority early and show the password as a host.
    (An ``@`` in a query value makes more of the URL count as the user part: more is hidden, never less.)"""
    scheme, _, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    return scheme, after if at else rest, userinfo if at else None


def display_url(db: str | Path) -> str:
    """The database as messages and logs may show it: a URL without its password, or the path.

    Made from the text itself, never from a URL parser's port or host (which raise on a port out of
    range or a broken IPv6 address): showing a bad URL must not fail, and must not show its password."""
    url = str(db)
    if not is_url(url):
        return url
    scheme, rest, userinfo = _userinfo(url)
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{rest}" if colon and user else (f"***@{rest}" if colon else f"{user}@{rest}")
    if "password=" in rest:  # libpq also takes the password (and the client key's) as a query parameter
        before, q, query = rest.partition("?")
        query, hash_, fragment = query.partition("#")
        query = urlencode([(k, "***" if k in _SECRET_PARAMS else v)
                           for k, v in parse_qsl(query, keep_blank_values=True)], safe="/*")
        rest = f"{before}{q}{query}{hash_}{fragment}"
    return f"{scheme}://{rest}"


def _password_forms(db: str | Path) -> list[str]:
    """The password of a database URL as it may appear in a driver's message: as written (percent-
    encoded or not) and decoded, from the user part and from a ``password=`` (or ``sslpassword=``) parameter."""
    url = str(db)
    if not is_url(url):
        return []
    _, rest, userinfo = _userinfo(url)
    found = [userinfo.partition(":")[2]] if userinfo is not None else []
    query = rest.partition("?")[2].partition("#")[0]
    found += [v for part in query.split("&") for k, _, v in [part.partition("=")] if k in _SECRET_PARAMS]
    found += [unquote(v) for v in found]
    return sorted({v for v in found if v}, key=len, reverse=True)


def scrub_url_secrets(text: str, db: str | Path) -> str:
    """``text`` (e.g. a driver's error message about ``db``) with the URL's password hidden."""
    for secret in _password_forms(db):
        text = text.replace(secret, "***")
    return text


def check_store(db: str | Path, *, write: bool) -> None:
    """Everything about the database that can be checked before opening it (StoreError: one line)."""
    refuse_mistyped_url(db)
    if not _memory(db) and not is_url(db):
        Store.check(db, write=write)


def owner_lock(db: str | Path) -> OwnerLock | None:
    """The lock that makes one process the owner of a database file, or None when the database
    needs none (in memory)."""
    return None if _memory(db) or is_url(db) else OwnerLock(db)


async def open_store(db: str | Path = ":memory:", *, readonly: bool = False, durable: bool = True,
                     pool_size: int = 10, scratch: bool = False) -> StoreContract:
    """The store on ``db`` (creating and migrating it unless ``readonly``): a SQLite file, or a
    PostgreSQL database when ``db`` is a ``postgresql://`` URL (``pool_size`` connections; psycopg
    comes with the ``postgres`` extra, and its absence is one line saying so). ``durable=False`` lets
    a simulation's SQLite commits skip waiting for the disk, ``scratch=True`` a SQLite file nobody keeps
    its journal in memory (see :class:`Store`; a PostgreSQL database ignores both)."""
    refuse_mistyped_url(db)
    if is_url(db):
        assert isinstance(db, str)
        try:
            from .store_pg import PgStore
        except ImportError as exc:
            raise StoreError(f"{db.split('://')[0]}:// databases need the PostgreSQL driver: "
                             f"pip install 'dispatchsim[postgres]' ({exc.name} is missing)") from None
        return await PgStore.open(db, readonly=readonly, pool_size=pool_size)
    return Store(db, readonly=readonly, durable=durable, scratch=scratch)


async def join_cluster(db: str | Path, *, on_work: Callable[[], None]) -> PgCluster | None:
    """A serve worker's place among the others on a shared database (PostgreSQL): wake-ups when
    another worker creates work, and the leadership of cluster-wide jobs. None for a SQLite file,
    which has one owner (:func:`owner_lock`) and nobody to coordinate with."""
    if not is_url(db):
        return None
    from .store_pg_cluster import PgCluster

    cluster = PgCluster(str(db), on_work=on_work)
    await cluster.start()
    return cluster
