"""Hypothesis strategies for dispatch configurations, endpoint behaviour over time, activity streams
and crashes — in the vocabulary of scenario files, so any example can be written out as one.

Every strategy shrinks toward the simplest case: no outage rather than one, shorter outages,
fewer activities arriving together at the start, a preset rather than a hand-made policy, no
jitter, no circuit breaker, no crash. Times are whole seconds after the run's start.

    from dispatchsim.testing import strategies as ds

    @given(endpoint=ds.flapping_endpoints(), activities=ds.activity_streams(max_activities=8))
    def test_...(endpoint, activities): ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from dispatchsim.engine.policy import PRESETS

#: presets in the order a failing example shrinks toward (the first is the "simplest")
PRESET_NAMES: tuple[str, ...] = ("reten", "reteno", "svix", "convoy_linear", "convoy_exponential")
HOUR = 3600


@dataclass(frozen=True, kw_only=True)
class ActivityAt:
    """One activity created ``at`` seconds after the start, for ``tenant``, with payload ``fields``."""

    at: int
    tenant: str = "acme"
    channel: str = "SALESMAN"
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Crash:
    """The engine dies ``at`` seconds after the start (in-flight tries are lost) and is back
    ``restart_after`` seconds later on the same database."""

    at: int
    restart_after: int = 0


# -- policies -----------------------------------------------------------------------------------

def retry_presets() -> st.SearchStrategy[str]:
    """A named preset (``reten``, ``reteno``, ``svix``, ``convoy_*``); shrinks toward ``reten``."""
    assert set(PRESET_NAMES) == set(PRESETS), "a new preset needs a place in PRESET_NAMES"
    return st.sampled_from(PRESET_NAMES)


@st.composite
def _exponential(draw: st.DrawFn, finite: bool | None) -> dict[str, Any]:
    base = draw(st.sampled_from([60, 1, 10, 300]))
    policy: dict[str, Any] = {"base": base, "factor": draw(st.sampled_from([2, 1, 3])),
                              "cap": draw(st.sampled_from([3600, base, 7200]))}
    gives_up = draw(st.booleans()) if finite is None else finite
    policy["max_attempts"] = draw(st.integers(1, 10)) if gives_up else None
    return policy


@st.composite
def _schedule(draw: st.DrawFn, finite: bool | None) -> dict[str, Any]:
    delays = draw(st.lists(st.sampled_from([60, 5, 300, 1800, 7200, 0]), min_size=1, max_size=6))
    policy: dict[str, Any] = {"schedule": delays}
    if finite is False or (finite is None and draw(st.booleans())):
        policy["repeat_last"] = True
        policy["max_attempts"] = None if finite is False else draw(st.none() | st.integers(1, 10))
        if policy["max_attempts"] is None and delays[-1] == 0:
            delays[-1] = 5  # a zero delay repeated without a budget is refused (it would retry at once, for ever)
    return policy


@st.composite
def retry_policies(draw: st.DrawFn, *, finite: bool | None = None, jitter: bool = True,
                   permanent: bool = True) -> str | dict[str, Any]:
    """A retry policy as a configuration's ``retry:`` takes it: a preset, a preset with overrides,
    an exponential backoff or an explicit schedule. ``finite=True`` only policies that end in
    FAILED, ``False`` only ones that never give up. Shrinks toward the ``reten`` preset, no jitter,
    no permanent statuses."""
    kind = draw(st.sampled_from(["preset", "override", "exponential", "schedule"]))
    if kind == "preset":
        name = draw(retry_presets().filter(lambda n: finite is None or (PRESETS[n].budget is not None) == finite))
        return name
    if kind == "override":
        name = draw(retry_presets())
        policy: dict[str, Any] = {"preset": name}
        if finite is True or (finite is None and draw(st.booleans())):
            policy["max_attempts"] = draw(st.integers(1, 12))
        elif finite is False:
            policy["max_attempts"] = None
            if PRESETS[name].schedule is not None:
                policy["repeat_last"] = True
    elif kind == "exponential":
        policy = draw(_exponential(finite))
    else:
        policy = draw(_schedule(finite))
    if jitter:
        mode = draw(st.sampled_from(["none", "full", "equal"]))
        if mode != "none":
            policy["jitter"] = mode
            policy["seed"] = draw(st.integers(0, 1000))
    if permanent and draw(st.integers(0, 3)) == 3:
        policy["permanent_statuses"] = draw(st.lists(st.sampled_from([410, 400, 404, 422]), min_size=1,
                                                     max_size=2, unique=True))
    return policy


@st.composite
def ordering_policies(draw: st.DrawFn, *, modes: tuple[str, ...] = ("ordered", "partitioned", "none"),
                      partition_key: str = "commerceExternalId") -> dict[str, Any]:
    """An ``ordering:`` value; shrinks toward ``ordered`` with ``on_exhausted: skip``."""
    mode = draw(st.sampled_from(modes))
    policy: dict[str, Any] = {"mode": mode, "on_exhausted": draw(st.sampled_from(["skip", "block"]))}
    if mode == "partitioned":
        policy["partition_key"] = partition_key
    if mode == "none":
        policy["concurrency"] = draw(st.sampled_from([10, 1, 4]))
    return policy


def circuit_breakers() -> st.SearchStrategy[dict[str, Any] | None]:
    """A ``circuit_breaker:`` value or none at all (what it shrinks to)."""
    return st.none() | st.fixed_dictionaries({
        "window": st.sampled_from([60, 600]), "failure_rate": st.sampled_from([0.5, 1.0]),
        "min_requests": st.integers(1, 5), "cooldown": st.sampled_from([60, 30, 300, 3600])})


def auto_disables() -> st.SearchStrategy[dict[str, Any] | None]:
    """An ``auto_disable:`` value or none at all (what it shrinks to)."""
    return st.none() | st.fixed_dictionaries({"after_failures": st.integers(1, 20)})


@st.composite
def configurations(draw: st.DrawFn, *, retry: st.SearchStrategy[Any] | None = None,
                   ordering: st.SearchStrategy[Any] | None = None, health: bool = True) -> dict[str, Any]:
    """Configuration fields for ``Engine.add_config`` (or a scenario's configuration): retry,
    ordering, timeouts and — with ``health`` — circuit breaker and auto-disable settings."""
    fields: dict[str, Any] = {"retry": draw(retry if retry is not None else retry_policies()),
                              "ordering": draw(ordering if ordering is not None else ordering_policies()),
                              "timeouts": {"connect": 5, "total": draw(st.sampled_from([30, 5, 60]))}}
    if health:
        breaker = draw(circuit_breakers())
        if breaker is not None:
            fields["circuit_breaker"] = breaker
        disable = draw(auto_disables())
        if disable is not None:
            fields["auto_disable"] = disable
    return fields


# -- endpoint behaviour over time ------------------------------------------------------------

def failures(*, faults: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """How a failing endpoint answers: 5xx, 429 or 503 with ``Retry-After``, a slow answer past the
    sender's timeout, or (with ``faults``) a transport fault. Shrinks toward a plain 503."""
    answers = [st.just({"status": 503}), st.sampled_from([{"status": 500}, {"status": 502}, {"status": 404}]),
               st.builds(lambda s, ra: {"status": s, "retry_after": ra}, st.sampled_from([429, 503]),
                         st.sampled_from([30, 1, 600, 7200])),
               st.just({"status": 200, "latency": 120})]
    if faults:
        answers.append(st.sampled_from([{"fault": "reset"}, {"fault": "refuse"}, {"fault": "close"},
                                        {"fault": "hang"}, {"fault": "garbage"}]))
    return st.one_of(*answers)


@st.composite
def outage_windows(draw: st.DrawFn, *, horizon: int = 6 * HOUR, max_windows: int = 4, min_windows: int = 0,
                   min_length: int = 1) -> tuple[tuple[int, int], ...]:
    """Disjoint ``(start, end)`` outages, in seconds, all over by ``horizon``. Shrinks toward no
    outage (or ``min_windows``), then fewer, earlier and shorter ones."""
    count = draw(st.integers(min_windows, max(min_windows, max_windows)))
    out: list[tuple[int, int]] = []
    t = 0
    for _ in range(count):
        if t + min_length > horizon:
            break
        start = t + draw(st.integers(0, max(0, (horizon - t - min_length) // 2)))
        length = draw(st.integers(min_length, max(min_length, horizon - start)))
        out.append((start, min(horizon, start + length)))
        t = out[-1][1] + 1
    return tuple(out)


@st.composite
def endpoint_behaviours(draw: st.DrawFn, *, horizon: int = 6 * HOUR, max_windows: int = 4,
                        faults: bool = True, latency: bool = True, min_windows: int = 0) -> dict[str, Any]:
    """An endpoint's ``behaviour:`` over time: healthy except in outage windows, each failing in its
    own way. Shrinks toward an always-healthy endpoint that answers 200 at once."""
    windows = draw(outage_windows(horizon=horizon, max_windows=max_windows, min_windows=min_windows))
    healthy: dict[str, Any] = {"status": 200}
    if latency:
        delay = draw(st.sampled_from([0, 0, 1, 2]))  # below the shortest timeout: healthy means answered
        if delay:
            healthy["latency"] = delay
    if not windows:
        return healthy
    entries = [{"from": a, "to": b, **draw(failures(faults=faults))} for a, b in windows]
    return {"windows": entries, "else": healthy}


def flapping_endpoints(*, horizon: int = 6 * HOUR, max_flaps: int = 4, faults: bool = True) -> st.SearchStrategy[
        dict[str, Any]]:
    """An endpoint that goes down at least once and comes back: one to ``max_flaps`` outages."""
    return endpoint_behaviours(horizon=horizon, max_windows=max_flaps, faults=faults, min_windows=1)


def down_between(windows: tuple[tuple[int, int], ...], failure: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``behaviour:`` of an endpoint that fails (503 unless ``failure`` says otherwise) in the
    given windows and answers 200 otherwise."""
    if not windows:
        return {"status": 200}
    return {"windows": [{"from": a, "to": b, **(failure or {"status": 503})} for a, b in windows],
            "else": {"status": 200}}


# -- activities and crashes ---------------------------------------------------------------------

@st.composite
def activity_streams(draw: st.DrawFn, *, max_activities: int = 10, min_activities: int = 1,
                     horizon: int = 2 * HOUR, tenants: tuple[str, ...] = ("acme",),
                     channels: tuple[str, ...] = ("SALESMAN",), partitions: tuple[str, ...] = ("C1", "C2", "C3"),
                     messages: bool = False) -> tuple[ActivityAt, ...]:
    """Activities over time: bursts (several at one moment) and gaps (a rate), spread over tenants,
    channels and ``commerceExternalId`` values; with ``messages`` some are MESSAGE activities, which
    are stored but not dispatched. Shrinks toward one TASK activity at the start."""
    n = draw(st.integers(min_activities, max_activities))
    out: list[ActivityAt] = []
    t = 0
    for _ in range(n):
        t += draw(st.sampled_from([0, 1, 60, 600]) | st.integers(0, max(0, horizon // max(n, 1))))
        t = min(t, horizon)
        fields: dict[str, Any] = {"commerceExternalId": draw(st.sampled_from(partitions))}
        if messages and draw(st.integers(0, 4)) == 4:
            fields["type"] = "MESSAGE"
        out.append(ActivityAt(at=t, tenant=draw(st.sampled_from(tenants)), channel=draw(st.sampled_from(channels)),
                              fields=fields))
    return tuple(out)


@st.composite
def crash_points(draw: st.DrawFn, *, horizon: int = 6 * HOUR, max_crashes: int = 2) -> tuple[Crash, ...]:
    """Moments the engine dies and how long it stays down; shrinks toward no crash."""
    n = draw(st.integers(0, max_crashes))
    times = sorted(draw(st.lists(st.integers(0, horizon), min_size=n, max_size=n, unique=True)))
    return tuple(Crash(at=t, restart_after=draw(st.sampled_from([0, 60, 300, 3600]))) for t in times)


__all__ = ["ActivityAt", "Crash", "PRESET_NAMES", "activity_streams", "auto_disables", "circuit_breakers",
           "configurations", "crash_points", "down_between", "endpoint_behaviours", "failures",
           "flapping_endpoints", "ordering_policies", "outage_windows", "retry_policies", "retry_presets"]
