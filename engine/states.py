"""Delivery statuses (the seed's names) and the one table of allowed transitions."""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    #: Created or force-retried; waits for its first (next) attempt.
    READY = "READY"
    #: Sent successfully: the endpoint answered 2xx.
    DISPATCHED = "DISPATCHED"
    #: A temporary failure; the next attempt is scheduled at ``next_attempt_at``.
    RETRYING = "RETRYING"
    #: Retries exhausted (or unfixable); needs manual intervention (force retry).
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value


ACTIVE = frozenset({Status.READY, Status.RETRYING})
TERMINAL = frozenset({Status.DISPATCHED})

#: (from, to) -> the event that may cause it. Nothing else is allowed.
TRANSITIONS: dict[tuple[Status, Status], str] = {
    (Status.READY, Status.DISPATCHED): "attempt succeeded",
    (Status.READY, Status.RETRYING): "attempt failed, retry scheduled",
    (Status.READY, Status.FAILED): "attempt failed, budget exhausted or unfixable",
    (Status.RETRYING, Status.DISPATCHED): "attempt succeeded",
    (Status.RETRYING, Status.RETRYING): "attempt failed, retry scheduled",
    (Status.RETRYING, Status.FAILED): "attempt failed, budget exhausted or unfixable",
    (Status.FAILED, Status.READY): "force retry (manual)",
}


def allowed(src: Status, dst: Status) -> bool:
    return (src, dst) in TRANSITIONS


def sources_of(dst: Status) -> tuple[str, ...]:
    """Statuses from which ``dst`` may be reached — used in conditional UPDATEs."""
    return tuple(sorted(s.value for (s, d) in TRANSITIONS if d == dst))
