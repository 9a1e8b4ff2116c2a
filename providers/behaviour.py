"""What an endpoint does with a request: a small tree of frozen nodes, and a plan that walks it.

Leaves say how to answer (:class:`Respond`) or how to fail at the transport level
(:class:`Fault`). Inner nodes choose a leaf per request: by probability (:class:`Mix`),
by request number (:class:`Sequence`) or by clock window (:class:`Windows`).
All randomness comes from the endpoint's seeded ``random.Random``, drawn in arrival
order, so one seed and one request order give one record.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Union

#: Transport-level faults a request can meet once it has been accepted.
REQUEST_FAULTS = (
    "hang",                # accept, read the request, never answer
    "headers_then_stall",  # send status line and headers, then nothing
    "slow_body",           # send the body a few bytes at a time
    "truncated",           # declare Content-Length, send less, close
    "garbage",             # answer with bytes that are not HTTP, close
    "reset",               # abort the connection with a TCP RST
    "close",               # close the connection without answering
)
#: Port-level fault: the endpoint stops listening (connections are refused).
REFUSE = "refuse"
FAULTS = REQUEST_FAULTS + (REFUSE,)


@dataclass(frozen=True, kw_only=True)
class Latency:
    """A per-request delay distribution, in seconds (never negative)."""

    kind: str  #: fixed | uniform | normal | lognormal
    a: float = 0.0  #: fixed value, uniform low, normal mean, lognormal median
    b: float = 0.0  #: uniform high, normal stddev, lognormal sigma

    def draw(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "normal":
            return max(0.0, rng.normalvariate(self.a, self.b))
        if self.kind == "lognormal":
            return rng.lognormvariate(math.log(self.a), self.b) if self.a > 0 else 0.0
        raise AssertionError(self.kind)


@dataclass(frozen=True, kw_only=True)
class Respond:
    """Answer with an HTTP response."""

    status: int = 200
    body: bytes | None = None  #: None: a short JSON body chosen from the status
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    latency: Latency | None = None
    retry_after: str | None = None  #: header value: integer seconds, or a literal HTTP-date
    retry_after_date: float | None = None  #: seconds from now, sent as an HTTP-date
    location: str | None = None  #: for 3xx; default ``/moved``


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Fail below HTTP: see :data:`FAULTS`."""

    kind: str
    status: int = 200  #: status line for headers_then_stall, slow_body, truncated
    body: bytes = b'{"ok":true}'
    headers: tuple[tuple[str, str], ...] = ()
    latency: Latency | None = None
    chunk: int = 1  #: slow_body: bytes per write
    interval: float = 1.0  #: slow_body: seconds between writes
    send: int | None = None  #: truncated: bytes actually sent (default: half the body)
    data: bytes | None = None  #: garbage: bytes to send (default: 64 seeded random bytes)


@dataclass(frozen=True, kw_only=True)
class Mix:
    """Pick one choice per request with the given probabilities (they sum to 1)."""

    choices: tuple[tuple[float, "Behaviour"], ...]


@dataclass(frozen=True, kw_only=True)
class Sequence:
    """Step through behaviours by request number; the last step repeats unless ``cycle``."""

    steps: tuple[tuple[int, "Behaviour"], ...]
    cycle: bool = False


@dataclass(frozen=True, kw_only=True)
class Window:
    start: float  #: seconds after t0, inclusive
    end: float | None  #: seconds after t0, exclusive; None: forever
    behaviour: "Behaviour"

    def contains(self, offset: float) -> bool:
        return self.start <= offset and (self.end is None or offset < self.end)


@dataclass(frozen=True, kw_only=True)
class Windows:
    """The first window containing the request's clock offset decides; otherwise ``otherwise``."""

    windows: tuple[Window, ...]
    otherwise: "Behaviour"


Behaviour = Union[Respond, Fault, Mix, Sequence, Windows]
Leaf = Union[Respond, Fault]

OK = Respond(status=200)


@dataclass(frozen=True)
class Decision:
    """What one request gets: a leaf and the latency drawn for it."""

    leaf: Leaf
    latency: float


class Plan:
    """A behaviour plus the state needed to walk it (sequence counters, the endpoint's rng)."""

    def __init__(self, behaviour: Behaviour, rng: random.Random) -> None:
        self.behaviour = behaviour
        self.rng = rng
        self._counts: dict[int, int] = {}

    def decide(self, offset: float) -> Decision:
        leaf = self._walk(self.behaviour, offset)
        latency = leaf.latency.draw(self.rng) if leaf.latency is not None else 0.0
        return Decision(leaf, latency)

    def _walk(self, node: Behaviour, offset: float) -> Leaf:
        if isinstance(node, (Respond, Fault)):
            return node
        if isinstance(node, Mix):
            x = self.rng.random()
            acc = 0.0
            for p, choice in node.choices:
                acc += p
                if x < acc:
                    return self._walk(choice, offset)
            return self._walk(node.choices[-1][1], offset)
        if isinstance(node, Sequence):
            n = self._counts.get(id(node), 0)
            self._counts[id(node)] = n + 1
            total = sum(times for times, _ in node.steps)
            if node.cycle:
                n %= total
            for times, step in node.steps:
                if n < times:
                    return self._walk(step, offset)
                n -= times
            return self._walk(node.steps[-1][1], offset)
        if isinstance(node, Windows):
            for window in node.windows:
                if window.contains(offset):
                    return self._walk(window.behaviour, offset)
            return self._walk(node.otherwise, offset)
        raise AssertionError(node)


def refusing(behaviour: Behaviour, offset: float) -> bool:
    """Whether the endpoint should refuse connections at ``offset`` seconds after t0."""
    if isinstance(behaviour, Fault):
        return behaviour.kind == REFUSE
    if isinstance(behaviour, Windows):
        for window in behaviour.windows:
            if window.contains(offset):
                return refusing(window.behaviour, offset)
        return refusing(behaviour.otherwise, offset)
    return False


def next_change(behaviour: Behaviour, offset: float) -> float | None:
    """The next window boundary after ``offset`` (when the listening state may change)."""
    if not isinstance(behaviour, Windows):
        return None
    edges = [w.start for w in behaviour.windows] + [w.end for w in behaviour.windows if w.end is not None]
    later = [e for e in edges if e > offset]
    return min(later) if later else None


def has_refuse(behaviour: Behaviour) -> bool:
    """Whether the listening state can ever change (only then does an endpoint watch the clock)."""
    if isinstance(behaviour, Fault):
        return behaviour.kind == REFUSE
    if isinstance(behaviour, Windows):
        return any(has_refuse(w.behaviour) for w in behaviour.windows) or has_refuse(behaviour.otherwise)
    return False
