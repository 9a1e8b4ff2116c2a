"""One meaning for every combination of retry fields (docs/retries.md), as a property.

For random policies (presets, overrides, schedules, budgets, max_age, jitter, Retry-After, permanent
statuses) and an endpoint that always fails, the attempts a delivery receives — counted and timed by
a real receiver on 127.0.0.1, on the virtual clock — equal what the table on docs/retries.md says.
The expected times come from ``expected_attempts`` below, written from that page and not from
``RetryPolicy``; a policy the page calls meaningless must be refused by the engine instead.
"""
from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatchsim.engine import ConfigError, Engine, run_virtual

from support import Receiver

EXAMPLES = int(os.environ.get("DISPATCHSIM_RETRY_TABLE_EXAMPLES", "60"))
MAX_COMPARED = 60            #: attempts compared per example (never-give-up policies are cut here)
HORIZON = 40 * 86400.0       #: and at this much simulated time

#: the presets as docs/retries.md states them
PRESETS = {
    "reten": dict(base=60.0, factor=2.0, cap=3600.0, schedule=None, max_attempts=10, ceiling=None),
    "reteno": dict(base=60.0, factor=2.0, cap=3600.0, schedule=None, max_attempts=None, ceiling=None),
    "svix": dict(base=60.0, factor=2.0, cap=3600.0, schedule=[5, 300, 1800, 7200, 18000, 36000, 36000],
                 max_attempts=None, ceiling=36000.0),
    "convoy_linear": dict(base=10.0, factor=1.0, cap=10.0, schedule=None, max_attempts=10, ceiling=None),
    "convoy_exponential": dict(base=10.0, factor=2.0, cap=7200.0, schedule=None, max_attempts=10, ceiling=None),
}


def resolve(fields: dict) -> dict | None:
    """The effective values of a policy, or None when the page says it is refused."""
    v = {**PRESETS[fields.get("preset", "reten")], "repeat_last": False, "max_age": None, "jitter": "none",
         "permanent_statuses": []}
    if fields.get("schedule") is not None and "max_attempts" not in fields:
        v["max_attempts"] = None
    start = dict(v)
    for key, value in fields.items():
        if key == "preset":
            continue
        v["ceiling" if key == "retry_after_ceiling" else key] = value
    schedule = v["schedule"]
    if schedule is not None and any(k in fields and fields[k] != start[k] for k in ("base", "factor", "cap")):
        return None                                   # rule 1: two sources of delays
    if v["repeat_last"] and schedule is None:
        return None                                   # rule 1: repeat_last needs a schedule
    if v["repeat_last"] and schedule[-1] == 0 and v["max_attempts"] is None:
        return None                                   # rule 2: at once, without end
    if schedule is None and v["cap"] < v["base"]:
        return None
    return v


def expected_attempts(v: dict, *, status: int, retry_after: float | None) -> list[float]:
    """Offsets of every attempt after creation, by the rules of docs/retries.md (jitter none)."""
    times = [0.0]
    if status in v["permanent_statuses"]:
        return times                                  # rule 5
    limits = [v["max_attempts"] or math.inf]
    if v["schedule"] is not None and not v["repeat_last"]:
        limits.append(len(v["schedule"]) + 1)
    budget = min(limits)                              # rule 2
    n = 1
    while n < budget and len(times) < MAX_COMPARED:
        if v["schedule"] is not None:
            d = float(v["schedule"][min(n, len(v["schedule"])) - 1])
        else:
            d = min(v["cap"], v["base"] * v["factor"] ** (n - 1))
        if retry_after is not None and status in (429, 503) and retry_after > d:   # rule 4
            ceiling = v["ceiling"] if v["ceiling"] is not None else v["cap"]
            d = max(d, min(retry_after, ceiling))
        t = times[-1] + d
        if v["max_age"] is not None and t > v["max_age"]:                          # rule 3
            break
        if t > HORIZON:
            break
        times.append(t)
        n += 1
    return times


policies = st.fixed_dictionaries({}, optional={
    "preset": st.sampled_from(sorted(PRESETS)),
    "base": st.sampled_from([1.0, 5.0, 60.0, 600.0]),
    "factor": st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    "cap": st.sampled_from([60.0, 3600.0, 7200.0]),
    "schedule": st.none() | st.lists(st.sampled_from([0.0, 5.0, 60.0, 300.0, 3600.0]), min_size=1, max_size=5),
    "repeat_last": st.booleans(),
    "max_attempts": st.none() | st.integers(1, 12),
    "max_age": st.none() | st.sampled_from([30.0, 600.0, 7200.0, 86400.0]),
    "retry_after_ceiling": st.none() | st.sampled_from([0.0, 120.0, 7200.0]),
    "permanent_statuses": st.sampled_from([[], [403], [410, 503]]),
})
answers = st.sampled_from([(500, None), (503, None), (503, 30.0), (503, 900.0), (429, 100000.0), (403, None)])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=policies, answer=answers)
def test_attempts_follow_the_table_exactly(fields, answer):
    status, retry_after = answer
    effective = resolve(fields)
    expected = None if effective is None else expected_attempts(effective, status=status, retry_after=retry_after)

    async def main():
        eng = await Engine.open(":memory:", virtual=True, seed=1)
        try:
            await eng.add_tenant("acme")
            await eng.add_provider("crm")
            async with Receiver(eng.clock.now) as r:
                headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
                r.respond = lambda hit, k: (status, headers, 0.0)
                if expected is None:
                    with pytest.raises(ConfigError):
                        await eng.add_config("acme", "crm", "SALESMAN", endpoint_url=r.url, retry=fields)
                    return
                await eng.add_config("acme", "crm", "SALESMAN", endpoint_url=r.url, retry=fields, activate=True)
                t0 = eng.clock.now()
                await eng.create_activity("acme", {"channel": "SALESMAN"})
                summary = await eng.run_until_idle(max_time=expected[-1] + 0.5)
                seen = [hit.at - t0 for hit in r.posts()][:MAX_COMPARED]
                assert len(seen) == len(expected), (seen, expected)
                assert all(abs(a - b) < 1e-3 for a, b in zip(seen, expected)), (seen, expected)
                finite = len(expected) < MAX_COMPARED and expected[-1] < HORIZON and summary.idle
                if finite and not effective_never_gives_up(effective, status):
                    delivery = (await eng.deliveries())[0]
                    assert delivery.status == "FAILED"
                    assert delivery.attempts == len(expected)
        finally:
            await eng.close()

    run_virtual(main())


def effective_never_gives_up(v: dict, status: int) -> bool:
    return (status not in v["permanent_statuses"] and v["max_attempts"] is None and v["max_age"] is None
            and (v["schedule"] is None or v["repeat_last"]))


@pytest.mark.parametrize("fields, offsets", [
    ({}, [0, 60, 180, 420, 900, 1860, 3780, 7380, 10980, 14580]),                # reten: 10 tries
    ({"preset": "svix"}, [0, 5, 305, 2105, 9305, 27305, 63305, 99305]),             # svix: 8 tries
    ({"schedule": [5, 60]}, [0, 5, 65]),                                            # schedule + 1
    ({"schedule": [5, 60], "repeat_last": True, "max_attempts": 5}, [0, 5, 65, 125, 185]),
    ({"preset": "reteno", "max_age": 1000}, [0, 60, 180, 420, 900]),                # next would be at 1860
])
def test_documented_examples(fields, offsets):
    v = resolve(fields)
    assert v is not None
    assert expected_attempts(v, status=500, retry_after=None) == offsets
