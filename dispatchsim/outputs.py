"""Output files of a command (reports, event logs, recordings, a counterexample): checked before a long
run, written after it, and a write that fails is one line, not a traceback.

A run can take minutes; finding only at its end that ``--out`` names a directory or a missing folder
loses its result, so the paths are checked (and missing parent folders created) before anything runs.
An output that is written only sometimes (``explore --out``: a counterexample, when one is found) is
checked without creating anything; its folder is made when it is written (:func:`write_text_file`).
A write can still fail later (a full disk, ``/dev/full``): :func:`write_output` turns that into one line
naming the option, and the command writes its other outputs and exits non-zero.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def check_output_file(flag: str, value: str | None, *, create: bool = True) -> str | None:
    """Why ``value`` cannot be written as a file (``--json report.json``), or None; creates a missing
    folder, or with ``create=False`` only checks that it could be created (its nearest existing folder
    is one this process may write in)."""
    if value is None:
        return None
    try:
        return _file_problem(flag, value, Path(value), create=create)
    except OSError as exc:  # a name the system refuses (too long, ...): pathlib's checks raise, not answer
        return f"{flag} {value}: {exc.strerror or exc}"


def _file_problem(flag: str, value: str, path: Path, *, create: bool) -> str | None:
    if path.is_dir():
        return f"{flag} {value}: is a directory, expected a file"
    if not create:
        existing = next(p for p in path.absolute().parents if p.exists())
        if not existing.is_dir():
            return f"{flag} {value}: cannot create its folder ({os.strerror(errno.ENOTDIR)})"
        if existing != path.absolute().parent and not os.access(existing, os.W_OK | os.X_OK):
            return f"{flag} {value}: cannot create its folder ({os.strerror(errno.EACCES)})"
        if existing == path.absolute().parent and (problem := _try_create(existing)):
            return f"{flag} {value}: cannot write ({problem})"
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{flag} {value}: cannot create its folder ({exc.strerror})"
    if problem := _try_write(path):
        return f"{flag} {value}: cannot write ({problem})"
    return None


def _try_write(path: Path) -> str | None:
    """Why this file cannot be written, found by trying (None: it can): permission bits say nothing to root,
    nor about a read-only mount or a file system such as /sys or /proc that refuses new files. An existing
    file is opened for appending (its content unchanged); a new one is created and removed at once. Not a
    regular file (``/dev/null``, a pipe): left alone, opening a pipe would wait for a reader."""
    try:
        if path.exists():
            if path.is_file():
                with open(path, "ab"):
                    pass
            return None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        path.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _try_create(folder: Path) -> str | None:
    """Why no file can be created in ``folder``, found by creating (and removing) an empty one; None: it can."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".dispatchsim-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def write_text_file(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, creating its missing folders first (see :func:`check_output_file`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def check_output_dir(flag: str, value: str | None) -> str | None:
    """Why ``value`` cannot be a folder of outputs (``--record DIR``), or None; creates it."""
    if value is None:
        return None
    try:
        Path(value).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{flag} {value}: cannot create this folder ({exc.strerror})"
    if problem := _try_create(Path(value)):
        return f"{flag} {value}: cannot write in this folder ({problem})"
    return None


def write_output(flag: str, value: str, write: Callable[[], object]) -> str | None:
    """Run ``write``; a failure of the file system is returned as one line naming ``flag`` (None: written)."""
    try:
        write()
    except OSError as exc:
        return f"{flag} {value}: cannot write ({exc.strerror or exc})"
    return None
