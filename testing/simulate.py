"""Run one generated example — configuration(s), endpoint behaviour, activities, crashes — as a
scenario on the virtual clock and read it back as a :class:`History`.

The example is written as a scenario file first and run by the same runner as ``dispatchsim run``,
so what a property test checks is exactly what a user can re-run by hand: a failing example's
:attr:`History.scenario_yaml` is printed with the broken invariant.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from dispatchsim.engine.clock import fmt_offset
from dispatchsim.scenarios import parse_scenario, run_scenario

from .history import History
from .strategies import ActivityAt, Crash

#: room after the last planned event for retries to finish (the svix schedule alone spans 27.5 h)
DRAIN = 3 * 86400


def duration_text(seconds: float) -> str | float:
    """Whole seconds as a scenario duration (``1h02m03s``); fractions stay numbers."""
    if float(seconds).is_integer():
        return fmt_offset(seconds)[1:]
    return float(seconds)


def scenario_yaml(data: Mapping[str, Any]) -> str:
    """A scenario as YAML, in the key order it was built (the order people write them in)."""
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def example_scenario(*, configuration: Mapping[str, Any] | None = None,
                     configurations: Mapping[str, Mapping[str, Any]] | None = None,
                     endpoint: Any = None, endpoints: Mapping[str, Any] | None = None,
                     activities: Iterable[ActivityAt] = (), crashes: Iterable[Crash] = (),
                     seed: int = 0, drain: float = DRAIN, name: str = "generated example") -> dict[str, Any]:
    """The scenario file (as a dict) for one example.

    Give one ``configuration`` (fields: retry, ordering, timeouts, circuit_breaker, auto_disable …)
    and one ``endpoint`` behaviour, or several as ``configurations`` {id: fields} and ``endpoints``
    {name: behaviour}; a configuration goes to the endpoint of the same name, else to the first one.
    """
    endpoints = dict(endpoints) if endpoints else {"endpoint": endpoint if endpoint is not None else {"status": 200}}
    if configurations is None:
        configurations = {next(iter(endpoints)): dict(configuration or {})}
    activities = sorted(activities, key=lambda a: a.at)
    crashes = sorted(crashes, key=lambda c: c.at)
    tenants = sorted({a.tenant for a in activities} | {"acme"})
    timeline: list[dict[str, Any]] = []
    for a in activities:
        create: dict[str, Any] = {"tenant": a.tenant, "channel": a.channel}
        if a.fields:
            create["activity"] = dict(a.fields)
        timeline.append({"at": duration_text(a.at), "create": create})
    for c in crashes:
        timeline.append({"at": duration_text(c.at), "crash": {"restart_after": duration_text(c.restart_after)}})
    timeline.sort(key=lambda e: _seconds(e["at"]))
    last = max([a.at for a in activities] + [c.at + c.restart_after for c in crashes] + [0])
    first = next(iter(endpoints))
    return {
        "name": name, "seed": seed, "duration": duration_text(last + drain),
        "providers": {n: {"behaviour": b} for n, b in endpoints.items()},
        "tenants": tenants,
        "configurations": [{"id": cid, "tenant": "acme", "provider": cid if cid in endpoints else first,
                            **dict(fields)} for cid, fields in configurations.items()],
        "timeline": timeline,
    }


def _seconds(value: str | float) -> float:
    from dispatchsim.providers.durations import parse_duration

    return parse_duration(value)


def simulate(**example: Any) -> History:
    """Run one example (see :func:`example_scenario` for the arguments) and return its history.

    Each call is a fresh engine, SQLite file and set of simulated endpoints on a fresh virtual-time
    loop: hours of outage take milliseconds. Call it from a plain (not ``async``) test, e.g. under
    ``@given``.
    """
    data = example_scenario(**example)
    text = scenario_yaml(data)
    scenario = parse_scenario(text, source="<example>")
    result = run_scenario(scenario)
    expected = _expected_deliveries(data, scenario)
    return History.from_run(result, expected_deliveries=expected, scenario_yaml=text)


def _expected_deliveries(data: Mapping[str, Any], scenario: Any) -> int:
    """Activities x active configurations of the same tenant and channel (MESSAGE is not dispatched)."""
    active = [(c.tenant, c.channel) for c in scenario.configurations if c.active]
    n = 0
    for ev in data["timeline"]:
        create = ev.get("create")
        if create is None or (create.get("activity") or {}).get("type", "TASK") != "TASK":
            continue
        n += sum(1 for t, ch in active if t == create["tenant"] and ch == create["channel"])
    return n


__all__ = ["DRAIN", "duration_text", "example_scenario", "scenario_yaml", "simulate"]
