"""A run's event log, one JSON line per event, kept in a temporary file instead of in memory.

A long simulation logs two events per attempt: 20,000 lines for 10,000 activities, 200,000 for
100,000. Held as a list of strings they were a growing share of a run's memory; here they are
written as they happen and read back (streamed) by the reports and the expectations.
"""
from __future__ import annotations

import os
import tempfile
import weakref
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import BinaryIO

#: bytes read at a time when the log is streamed back
_CHUNK = 1 << 20


class EventLog:
    """Append-only JSON lines in an unnamed temporary file (deleted when closed or collected).

    Reading never moves the writing position (``os.pread``), so the log can be read while a run
    still appends to it.
    """

    def __init__(self) -> None:
        self._file: BinaryIO = tempfile.TemporaryFile(prefix="dispatchsim-events-")  # noqa: SIM115 - lives with the log
        #: a result is often dropped without being closed: the file then goes with it, quietly
        self._closer = weakref.finalize(self, self._file.close)
        self._count = 0
        self._size = 0

    def append(self, line: str) -> None:
        """Add one event, already serialised (``line`` holds no newline)."""
        data = line.encode("utf-8") + b"\n"
        self._file.write(data)
        self._size += len(data)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[str]:
        """The lines in order, without their newlines."""
        self._file.flush()
        fd, offset, size, rest = self._file.fileno(), 0, self._size, b""
        while offset < size:
            chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                yield raw.decode("utf-8")
        if rest:
            yield rest.decode("utf-8")

    def head(self, n: int) -> list[str]:
        """The first ``n`` lines."""
        return list(islice(self, n))

    def tail(self, n: int) -> list[str]:
        """The last ``n`` lines."""
        return list(deque(self, maxlen=n)) if n > 0 else []

    def jsonl(self) -> str:
        """The whole log as JSON Lines text (each line newline-terminated)."""
        self._file.flush()
        return os.pread(self._file.fileno(), self._size, 0).decode("utf-8") if self._size else ""

    def write_to(self, path: str | os.PathLike[str]) -> None:
        """Copy the log to ``path`` without holding it in memory."""
        self._file.flush()
        with open(path, "wb") as out:
            fd, offset = self._file.fileno(), 0
            while offset < self._size:
                chunk = os.pread(fd, min(_CHUNK, self._size - offset), offset)
                out.write(chunk)
                offset += len(chunk)

    def close(self) -> None:
        """Delete the file; the log is empty afterwards."""
        self._closer()
        self._count = self._size = 0
