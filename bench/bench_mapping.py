"""Compiled-mapping applications per second vs a hand-written reshaping function.

Run: ``.venv/bin/python bench/bench_mapping.py [--seconds 2]``. One core, the seed payload,
a realistic 12-field mapping (renames, nesting, a value map, formatting, dates, a join, a const).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dispatchsim.mapping import SEED_PAYLOAD, compile_mapping  # noqa: E402

SPEC = {  # the CRM example of docs/mapping.md, sent as a one-item batch
    "fields": {
        "externalId": "id",
        "channel": {"from": "channel", "map": {"SALESMAN": "sales"}, "map_default": "other"},
        "task": {
            "title": {"from": "commerceName", "fn": {"format": "{reason.label}: {value}"}},
            "dueAt": {"from": "scheduledAt", "fn": "epoch_seconds"},
            "dueDate": {"from": "scheduledAt", "fn": [{"to_timezone": "Europe/Madrid"}, "date_only"]},
            "status": {"from": "lifecycleStatus", "fn": "lower"},
        },
        "customer.id": {"from": "commerceExternalId", "required": True},
        "customer.name": "commerceName",
        "assignee": {"from": "activityDetails.assignedOperator.externalId", "required": True},
        "route": "activityDetails.assignedRoute.code",
        "reason": {"from": "[reason.code, reason.label]", "fn": {"join": " / "}},
        "source": {"const": "reten"},
    },
    "wrap": "array",
}

_MADRID = ZoneInfo("Europe/Madrid")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def by_hand(p: dict) -> list:
    """The same reshaping written directly in Python: the baseline."""
    scheduled = datetime.fromisoformat(p["scheduledAt"])
    operator = (p.get("activityDetails") or {}).get("assignedOperator") or {}
    route = (p.get("activityDetails") or {}).get("assignedRoute") or {}
    if p.get("commerceExternalId") is None or operator.get("externalId") is None:
        raise ValueError("required value missing")
    status = p.get("lifecycleStatus")
    reason = p.get("reason") or {}
    return [{
        "externalId": p.get("id"),
        "channel": {"SALESMAN": "sales"}.get(p.get("channel"), "other"),
        "task": {
            "title": f"{reason['label']}: {p['commerceName']}",
            "dueAt": int(scheduled.timestamp()),
            "dueDate": scheduled.astimezone(_MADRID).date().isoformat(),
            "status": status.lower() if status is not None else None,
        },
        "customer": {"id": p["commerceExternalId"], "name": p.get("commerceName")},
        "assignee": operator["externalId"],
        "route": route.get("code"),
        "reason": " / ".join(x for x in (reason.get("code"), reason.get("label")) if x is not None),
        "source": "reten",
    }]


def rate(fn, payload, seconds: float) -> float:
    """Applications per second: the best of several timed batches."""
    batch = 2000
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(batch):
            fn(payload)
        best = max(best, batch / (time.perf_counter() - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    args = parser.parse_args()
    compiled = compile_mapping(SPEC)
    assert compiled.apply(SEED_PAYLOAD) == by_hand(SEED_PAYLOAD), "the baseline must do the same reshaping"
    json.dumps(compiled.apply(SEED_PAYLOAD))
    start = time.perf_counter()
    for _ in range(1000):
        compile_mapping(SPEC)
    compile_ms = (time.perf_counter() - start) / 1000 * 1000  # per compile, in ms
    mapped = rate(compiled.apply, SEED_PAYLOAD, args.seconds)
    hand = rate(by_hand, SEED_PAYLOAD, args.seconds)
    print(f"mapping {compiled.digest}: {len(compiled.spec['fields'])} fields, compile {compile_ms:.2f} ms")
    print(f"compiled mapping : {mapped:>10,.0f} applications/s  ({1e6 / mapped:.1f} µs each)")
    print(f"hand-written     : {hand:>10,.0f} applications/s  ({1e6 / hand:.1f} µs each)")
    print(f"ratio            : {hand / mapped:.2f}x slower than hand-written "
          f"(target >= 20,000/s: {'met' if mapped >= 20_000 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
