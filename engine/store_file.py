"""The SQLite file under a store: checks before opening it, its owner lock, and storage errors.

Every problem with the environment becomes one :class:`StoreError` with a one-line message,
raised before anything is written: a missing directory, a directory where the file should be,
a file that is not SQLite, a truncated or damaged database, a read-only file or directory, a
database of another application, or one whose schema is newer than this code. A write that
fails later because the disk is full (or the file became read-only) is a
:class:`StorageUnavailable`: the transaction was rolled back, so nothing is half-written, and
the next write succeeds once space returns.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from pathlib import Path

from .errors import DatabaseInUse, StorageUnavailable, StoreError

#: ``PRAGMA application_id`` of a dispatchsim database ("DSPS"): tells it from other SQLite files.
APPLICATION_ID = 0x44535053
_HEADER = b"SQLite format 3\x00"
#: SQLite primary result codes that mean "storage cannot take this write now".
_UNAVAILABLE = {5: "the database is busy", 6: "the database is locked", 8: "the database is read-only",
                10: "disk I/O error", 13: "the disk is full", 14: "the database file cannot be opened"}


def check_file(path: str | Path, *, write: bool) -> None:
    """Refuse, with one line, a path that cannot hold (or is not) a usable SQLite database."""
    try:
        _check_file(Path(path), write=write)
    except OSError as exc:  # a name the system refuses (too long, ...): pathlib's checks raise, not answer
        raise StoreError(f"{path}: {exc.strerror or exc}") from None


def _check_file(p: Path, *, write: bool) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise StoreError(f"{p}: directory {parent} does not exist")
    if not parent.is_dir():
        raise StoreError(f"{p}: {parent} is not a directory")
    if p.is_dir():
        raise StoreError(f"{p}: is a directory, not a database file")
    if p.exists():
        if not p.is_file():
            raise StoreError(f"{p}: not a regular file")
        if not os.access(p, os.R_OK):
            raise StoreError(f"{p}: not readable (permission denied)")
        _check_header(p)
        if write and not os.access(p, os.W_OK):
            raise StoreError(f"{p}: the file is read-only; give write permission or use another --db")
    elif not write:
        raise StoreError(f"{p}: no such file")
    if write and not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{p}: directory {parent} is read-only (SQLite needs to create files next to the "
                         "database); give write permission or use another --db")


def _check_header(p: Path) -> None:
    size = p.stat().st_size
    if size == 0:
        return  # an empty file is an empty database
    with p.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(_HEADER):
        raise StoreError(f"{p}: not a SQLite database")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages, valid_for = (int.from_bytes(head[i:i + 4], "big") for i in (24, 28, 92))
    wal = Path(f"{p}-wal")
    if wal.exists() and wal.stat().st_size:
        return  # a checkpoint cut off (kill -9) can leave the header ahead of the file; the WAL completes it
    if pages and change_counter == valid_for and size < pages * page_size:
        raise StoreError(f"{p}: damaged database: the file is truncated ({size} bytes, its header says "
                         f"{pages * page_size}); restore it from a backup")


def connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    """A connection for the store. Read-only opens never create, migrate or change anything: a
    database nobody is writing (no ``-wal`` file next to it) is read as immutable, so not even
    the WAL index files are created, and a read-only directory is no obstacle."""
    if not readonly:
        try:
            return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise damaged(path, exc) from None
    uri = Path(path).resolve().as_uri()
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "mode=ro&immutable=1"
    conn = sqlite3.connect(f"{uri}?{mode}", isolation_level=None, check_same_thread=False, uri=True)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise damaged(path, exc) from None
    return conn


def damaged(path: str | Path, exc: sqlite3.DatabaseError) -> StoreError:
    """The error for a file SQLite cannot read."""
    return StoreError(f"{path}: damaged or not a database ({exc}); restore it from a backup")


def check_schema(conn: sqlite3.Connection, path: str | Path, *, latest: int) -> int:
    """The schema version of a database this code may use; refuses another application's database
    and a newer schema (naming both versions). A brand-new (empty) database is version 0."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                         " AND name NOT LIKE 'sqlite_%'")}
    ours = app == APPLICATION_ID or (app == 0 and (
        (version == 0 and not tables) or (version > 0 and {"tenants", "deliveries"} <= tables)))
    if not ours:
        raise StoreError(f"{path}: not a dispatchsim database (it belongs to another application: "
                         + (f"application id {app:#x}" if app else f"tables {', '.join(sorted(tables)[:5])}")
                         + "); use another --db")
    if version > latest:
        raise StoreError(f"{path}: database schema v{version} is newer than this dispatchsim (schema v{latest});"
                         " upgrade dispatchsim to use it")
    return version


def check_integrity(conn: sqlite3.Connection, path: str | Path) -> None:
    """``PRAGMA quick_check`` (about 0.2 s per 100 MB): damage anywhere in the file is refused at
    start, not found by a request hours later."""
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from None
    if problems != ["ok"]:
        detail = " ".join("; ".join(problems).split())[:200]
        raise StoreError(f"{path}: damaged database ({detail}); restore it from a backup")


def mark_ours(conn: sqlite3.Connection) -> None:
    """Stamp the file as a dispatchsim database (inside the migration's transaction)."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def check_writable(conn: sqlite3.Connection, path: str | Path) -> None:
    """Take and drop the write lock: a read-only file, directory or mount fails here, not on the
    first request."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorcode & 0xFF in (8, 14):  # READONLY, CANTOPEN
            raise StoreError(f"{path}: cannot write to the database ({exc}); check the permissions of the "
                             "file and its directory") from None
        raise damaged(path, exc) from None


def storage_error(exc: BaseException) -> StorageUnavailable | None:
    """A :class:`StorageUnavailable` when ``exc`` means "storage cannot take writes now" (disk
    full, busy, read-only, I/O error), else None (a bug: let it surface)."""
    if isinstance(exc, StorageUnavailable):
        return exc
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        reason = _UNAVAILABLE.get(code & 0xFF) if code is not None else None
        if reason is not None:
            return StorageUnavailable(f"storage unavailable: {reason}; nothing was stored, retry later")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return StorageUnavailable(f"storage unavailable: {os.strerror(exc.errno)}; nothing was stored, retry later")
    return None


class OwnerLock:
    """One owner per database: an exclusive ``flock`` on ``DB.lock`` next to the database, holding
    the owner's pid. The operating system drops the lock when the owner dies (even by kill -9), so
    a lock that can be taken proves that whoever wrote the leases in the file is gone."""

    def __init__(self, db: str | Path) -> None:
        self.db = str(db)
        #: next to the file itself: a symbolic link to the database is the same database, not a second one
        self.path = Path(f"{os.path.realpath(db)}.lock")
        self._fd: int | None = None
        #: pid of the previous owner, when it left one (it stopped or died)
        self.previous_pid: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid into it, without waiting.

        Raises DatabaseInUse (naming the holder's pid) when another process owns the database, and
        StoreError when the lock file cannot be created. ``previous_pid`` keeps the last owner's pid.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise DatabaseInUse(f"{self.db}: in use by another dispatchsim serve or engine ({who}); stop it or "
                                "use another --db (one process owns a SQLite database)") from None
        self.previous_pid = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (clearing the pid); calling it twice is harmless."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(raw) if raw.isdigit() else None
