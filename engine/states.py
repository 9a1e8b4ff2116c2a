"""Delivery statuses (the seed's names), circuit states, and the one table of allowed transitions.

The table is the rule, not a description of it: the store builds the condition of every status
change (``UPDATE … WHERE status IN (…)``) from :func:`sources_of`, so a transition missing here is
refused by the database whatever the Python code asks for.
"""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Where a delivery (of an activity or of a batch of message events) stands."""

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


class Circuit(str, Enum):
    """Circuit-breaker state of one endpoint (a configuration)."""

    #: Attempts flow; their outcomes fill the sliding window.
    CLOSED = "closed"
    #: Too many failures: nothing is sent until the cool-down ends.
    OPEN = "open"
    #: Cool-down over: exactly one probe attempt may go; it closes or re-opens the circuit.
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


#: Statuses that are still to be sent (claimable when due).
ACTIVE = frozenset({Status.READY, Status.RETRYING})
#: Statuses nothing leaves.
TERMINAL = frozenset({Status.DISPATCHED})
#: Every status in the order a delivery meets them (for counts and reports).
LIFECYCLE = (Status.READY, Status.RETRYING, Status.DISPATCHED, Status.FAILED)

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


def sources_of(dst: Status) -> tuple[Status, ...]:
    """Statuses from which ``dst`` may be reached, read from the table at each call (the store's
    conditional UPDATEs are built from it)."""
    return tuple(sorted((s for (s, d) in TRANSITIONS if d == dst), key=lambda s: s.value))
