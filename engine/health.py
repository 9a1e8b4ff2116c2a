"""Endpoint health per configuration: circuit breaker and auto-disable.

Pure decisions over the attempt outcomes the dispatcher reports; the store persists the state
(``endpoint_health``) so a restarted engine knows an open circuit and a running failure streak.
The sliding window of the breaker is rebuilt from the attempts table on first use.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .policy import MAX_AGE, MAX_ATTEMPTS, MAX_DELAY, bad_number, check_numbers
from .states import Circuit


@dataclass(frozen=True, kw_only=True)
class CircuitBreaker:
    """Open when, within ``window`` seconds, at least ``min_requests`` attempts were made and the
    share that failed is >= ``failure_rate``. While open nothing is sent (and nothing is counted
    against a delivery's budget); after ``cooldown`` one probe goes out (half-open): success closes
    the circuit, failure opens it again."""

    window: float = 60.0
    failure_rate: float = 0.5
    min_requests: int = 10
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        if bad_number(self.window, 0, MAX_DELAY, lo_open=True) or bad_number(self.cooldown, 0, MAX_DELAY, lo_open=True):
            raise ConfigError(f"window and cooldown must be > 0 and <= {MAX_DELAY:g} seconds", field="circuit_breaker")
        if bad_number(self.failure_rate, 0, 1, lo_open=True):
            raise ConfigError("failure_rate must be in (0, 1]", field="circuit_breaker")
        if bad_number(self.min_requests, 1, MAX_ATTEMPTS, integer=True):
            raise ConfigError(f"min_requests must be a whole number from 1 to {MAX_ATTEMPTS}", field="circuit_breaker")


@dataclass(frozen=True, kw_only=True)
class AutoDisable:
    """Deactivate the configuration after ``after_failures`` consecutive failed attempts or ``after``
    seconds of continuous failure (whichever comes first); pending deliveries wait for re-enable.
    ``notify_url`` receives a signed operator webhook (``notify_secret``)."""

    after_failures: int | None = None
    after: float | None = None
    notify_url: str | None = None
    notify_secret: str | None = None

    def __post_init__(self) -> None:
        if self.after_failures is None and self.after is None:
            raise ConfigError("set after_failures (consecutive failed attempts) and/or after (seconds)",
                              field="auto_disable")
        if self.after_failures is not None and bad_number(self.after_failures, 1, MAX_ATTEMPTS, integer=True):
            raise ConfigError(f"after_failures must be a whole number from 1 to {MAX_ATTEMPTS}", field="auto_disable")
        if self.after is not None and bad_number(self.after, 0, MAX_AGE, lo_open=True):
            raise ConfigError(f"after must be > 0 and <= {MAX_AGE:g} seconds", field="auto_disable")
        # the whole URL check is build_snapshot's (what users enter): a stored snapshot loads as written
        if self.notify_url is not None and (not isinstance(self.notify_url, str)
                                            or not self.notify_url.startswith(("http://", "https://"))):
            raise ConfigError("notify_url must be an http(s) URL", field="auto_disable.notify_url")
        if self.notify_secret is not None and (not isinstance(self.notify_secret, str) or not self.notify_secret):
            raise ConfigError("notify_secret must be a non-empty string", field="auto_disable")


def _parse(cls: type, data: Any, name: str) -> Any:
    if data is None or isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping", field=name)
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})", field=name)
    check_numbers(name, cls, data)
    return cls(**data)


def circuit_breaker_from(data: Any) -> CircuitBreaker | None:
    """Check a ``circuit_breaker`` object (None: no breaker); ConfigError naming the field otherwise."""
    return _parse(CircuitBreaker, data, "circuit_breaker")


def auto_disable_from(data: Any) -> AutoDisable | None:
    """Check an ``auto_disable`` object (None: never auto-disable); ConfigError naming the field otherwise."""
    return _parse(AutoDisable, data, "auto_disable")


def to_dict(value: Any) -> dict[str, Any] | None:
    return None if value is None else asdict(value)


@dataclass
class EndpointState:
    circuit: Circuit = Circuit.CLOSED
    circuit_until: float | None = None
    probing: bool = False  #: half-open: this worker's probe request is in flight
    consecutive_failures: int = 0
    failing_since: float | None = None
    window: deque[tuple[float, bool]] = field(default_factory=deque)
    loaded_window: bool = False


@dataclass(frozen=True)
class Change:
    """Something the dispatcher must log / store / act on."""

    kind: str  #: circuit.opened | circuit.half_open | circuit.closed | config.auto_disabled
    config_id: str
    message: str
    fields: dict[str, Any]
    #: a circuit's move: the state it leaves, which the store must still hold for the move to happen
    #: (with several workers the first to store a trip or a probe's end makes it; see ``move_circuit``)
    source: Circuit | None = None


def record(state: EndpointState, ok: bool, now: float, cb: CircuitBreaker | None,
           ad: AutoDisable | None, config_id: str) -> list[Change]:
    """Account one finished attempt; return the state changes it causes. The failure streak
    (``consecutive_failures``, ``failing_since``) is counted in the store first, atomically, so the
    failures of several workers add up: ``state`` holds the streak this outcome left there."""
    changes: list[Change] = []
    if cb is not None:
        if state.circuit is Circuit.HALF_OPEN:
            state.probing = False
            state.window.clear()
            if ok:
                state.circuit, state.circuit_until = Circuit.CLOSED, None
                changes.append(Change("circuit.closed", config_id, "probe succeeded; circuit closed", {},
                                      Circuit.HALF_OPEN))
            else:
                state.circuit, state.circuit_until = Circuit.OPEN, now + cb.cooldown
                changes.append(Change("circuit.opened", config_id, "probe failed; circuit open again",
                                      {"until": state.circuit_until}, Circuit.HALF_OPEN))
        else:
            state.window.append((now, ok))
            while state.window and state.window[0][0] < now - cb.window:
                state.window.popleft()
            total = len(state.window)
            failed = sum(1 for _, good in state.window if not good)
            # only a failure can open the circuit: a success never makes the endpoint look worse
            if (not ok and state.circuit is Circuit.CLOSED and total >= cb.min_requests
                    and failed / total >= cb.failure_rate):
                state.circuit, state.circuit_until = Circuit.OPEN, now + cb.cooldown
                state.window.clear()
                changes.append(Change("circuit.opened", config_id,
                                      f"{failed} of {total} attempts failed within {cb.window:g}s; circuit open "
                                      f"for {cb.cooldown:g}s", {"until": state.circuit_until,
                                                                "failed": failed, "total": total}, Circuit.CLOSED))
    if ad is not None and not ok:
        by_count = ad.after_failures is not None and state.consecutive_failures >= ad.after_failures
        by_time = ad.after is not None and state.failing_since is not None and now - state.failing_since >= ad.after
        if by_count or by_time:
            why = (f"{state.consecutive_failures} consecutive failed attempts" if by_count else
                   f"failing continuously for {now - state.failing_since:g}s")
            changes.append(Change("config.auto_disabled", config_id, f"auto-disabled: {why}",
                                  {"consecutive_failures": state.consecutive_failures}))
    return changes


def tick(state: EndpointState, now: float, config_id: str) -> list[Change]:
    """Time passing: an open circuit whose cool-down ended becomes half-open."""
    if state.circuit is Circuit.OPEN and state.circuit_until is not None and now >= state.circuit_until:
        state.circuit, state.probing = Circuit.HALF_OPEN, False
        return [Change("circuit.half_open", config_id, "cool-down over; one probe request allowed", {})]
    return []
