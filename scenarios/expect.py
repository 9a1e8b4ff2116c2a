"""Expectations: each one turns into a Check with the expected and the observed value."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from dispatchsim.engine.clock import fmt_offset, parse_iso


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    expected: str
    observed: str
    line: int | None = None


def _t(value: str | None) -> float | None:
    return parse_iso(value) if value else None


def evaluate(r: Any) -> list[Check]:
    exp = r.scenario.expect
    lines = r.scenario.expect_lines
    checks: list[Check] = []

    def add(name: str, ok: bool, expected: Any, observed: Any) -> None:
        checks.append(Check(name, bool(ok), str(expected), str(observed), lines.get(name.split(".")[0])))

    counts = r.counts
    if not r.idle:
        checks.append(Check("finished", False, f"idle within duration {fmt_offset(r.scenario.duration)}",
                            f"work left at {fmt_offset(r.elapsed)}: {counts}", None))
    if exp.get("all_delivered"):
        add("all_delivered", counts["DISPATCHED"] == len(r.deliveries) and r.deliveries,
            f"all {len(r.deliveries)} deliveries DISPATCHED", _fmt_counts(counts))
    if "counts" in exp:
        for status, n in exp["counts"].items():
            add(f"counts.{status}", counts[status] == n, n, counts[status])
    if exp.get("order") == "strict":
        violations = order_violations(r)
        add("order", not violations, "every queue acknowledged in creation order",
            "in order" if not violations else "; ".join(violations[:3]))
    if "max_duplicates" in exp:
        dups = duplicates(r)
        add("max_duplicates", dups <= exp["max_duplicates"],
            f"<= {exp['max_duplicates']} deliveries acknowledged more than once (extra acknowledgements)",
            f"{dups} extra acknowledgements")
    if "duplicates" in exp:
        for kind in ("received", "acknowledged"):
            if kind in exp["duplicates"]:
                got = duplicates(r, acknowledged=kind == "acknowledged")
                add(f"duplicates.{kind}", got == exp["duplicates"][kind],
                    f"{exp['duplicates'][kind]} extra {kind} copies", f"{got} extra {kind} copies")
    if "attempts_per_delivery" in exp:
        spec = exp["attempts_per_delivery"]
        ds = r.deliveries
        if "delivery" in spec:
            ds = [d for d in ds if d["id"] == spec["delivery"]]
        values = [d["attempts"] for d in ds]
        label = f"delivery {spec['delivery']}" if "delivery" in spec else "every delivery"
        if "exactly" in spec:
            add("attempts_per_delivery", values and all(v == spec["exactly"] for v in values),
                f"{label}: exactly {spec['exactly']}", _range(values))
        if "max" in spec:
            add("attempts_per_delivery", all(v <= spec["max"] for v in values), f"{label}: at most {spec['max']}",
                _range(values))
        if "min" in spec:
            add("attempts_per_delivery", values and all(v >= spec["min"] for v in values),
                f"{label}: at least {spec['min']}", _range(values))
    if "retry_delays" in exp:
        spec = exp["retry_delays"]
        got = retry_delays(r, spec["delivery"])
        want = spec["delays"]
        add("retry_delays", [round(g, 3) for g in got[:len(want)]] == [round(w, 3) for w in want],
            f"delivery {spec['delivery']}: {', '.join(fmt_offset(w)[1:] for w in want)}",
            ", ".join(fmt_offset(g)[1:] for g in got) or "no retries")
    if "delivered_by" in exp:
        limit = r.t0 + exp["delivered_by"]
        late = [d["id"] for d in r.deliveries if d["status"] != "DISPATCHED" or _t(d["dispatched_at"]) > limit + 1e-6]
        last = max((_t(d["dispatched_at"]) for d in r.deliveries if d["dispatched_at"]), default=None)
        add("delivered_by", not late, f"all DISPATCHED by {fmt_offset(exp['delivered_by'])}",
            f"last at {fmt_offset(last - r.t0)}" if last and not late else f"late or missing: {late[:10]}")
    if "failed" in exp:
        spec = exp["failed"]
        failed = [d["id"] for d in r.deliveries if d["status"] == "FAILED"]
        if "count" in spec:
            add("failed", len(failed) == spec["count"], f"{spec['count']} FAILED",
                f"{len(failed)} FAILED {failed[:10]}")
        if "deliveries" in spec:
            add("failed", failed == sorted(spec["deliveries"]), f"FAILED {spec['deliveries']}", f"FAILED {failed}")
        if "reason" in spec:
            reasons = sorted({d["failed_reason"] for d in r.deliveries if d["status"] == "FAILED"})
            add("failed.reason", reasons == [spec["reason"]],
                f"every FAILED delivery failed with {spec['reason']}", f"reasons: {reasons or 'none'}")
    if "mapping_shape" in exp:
        checks.extend(_mapping_shape(r, exp["mapping_shape"], lines.get("mapping_shape")))
    if exp.get("no_secrets_in_logs"):
        text = r.events_jsonl() + r.recorder.jsonl() + "".join(str(a.get("error")) for a in r.attempts)
        leaked = [s[:3] + "…" for s in r.secrets if s and s in text]
        add("no_secrets_in_logs", not leaked and r.secrets, f"none of {len(r.secrets)} secrets in events, "
            "attempts or the provider record", "none found" if not leaked else f"found: {leaked}")
    if "activation_refused" in exp:
        add("activation_refused", sorted(r.refused) == sorted(exp["activation_refused"]),
            f"refused: {sorted(exp['activation_refused'])}",
            "; ".join(f"{k}: {v.split('failed: ', 1)[-1]}" for k, v in sorted(r.refused.items())) or "none refused")
    for c in r.scenario.configurations:  # a configuration's own `activation: refused` is an expectation too
        refused = c.id in r.refused
        if c.activation == "refused" or refused:
            checks.append(Check(f"activation.{c.id}", (c.activation == "refused") == refused,
                                f"activation {c.activation}", f"refused: {r.refused[c.id].split('failed: ', 1)[-1]}"
                                if refused else "activated", c.line))
    if "notifications" in exp:
        for kind, n in exp["notifications"].items():
            got = sum(1 for x in r.notifications if x["kind"] == kind)
            add(f"notifications.{kind}", got == n, n, got)
    if "inactive" in exp:
        add("inactive", sorted(r.inactive) == sorted(exp["inactive"]), f"inactive at the end: {sorted(exp['inactive'])}",
            f"inactive: {sorted(r.inactive)}")
    if "events_received" in exp:
        for prov, n in exp["events_received"].items():
            got = sum(len(x.json) for x in r.recorder.records if x.endpoint == prov and x.method == "POST"
                      and x.acknowledged and isinstance(x.json, list))
            add(f"events_received.{prov}", got == n, f"{n} message events acknowledged in batches",
                f"{got} acknowledged")
    if "received" in exp:
        for prov, n in exp["received"].items():
            got = len([x for x in r.recorder.records if x.endpoint == prov and x.method == "POST"])
            add(f"received.{prov}", got == n, f"{n} POSTs", f"{got} POSTs")
    return checks


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no deliveries"


def _range(values: list[int]) -> str:
    if not values:
        return "no deliveries"
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}..{max(values)}"


def unordered_configs(scenario: Any) -> set[str]:
    """Configurations with ``ordering: none``: they promise no order, so order checks skip them."""
    out = set()
    for c in scenario.configurations:
        o = c.fields.get("ordering")
        if o == "none" or (isinstance(o, dict) and o.get("mode") == "none"):
            out.add(c.id)
    return out


def order_violations(r: Any) -> list[str]:
    """Per ordered queue, the first acknowledgement of each delivery must come in creation order.

    Deliveries that went through a force retry are left out: by design they arrive late.
    """
    unordered = unordered_configs(r.scenario)
    by_wid = {d["webhook_id"]: d for d in r.deliveries if d["config_id"] not in unordered}
    seen: set[str] = set()
    last: dict[str, int] = {}
    out: list[str] = []
    for rec in sorted(r.recorder.records, key=lambda x: x.seq):
        wid = rec.headers.get("webhook-id")
        if not rec.acknowledged or wid not in by_wid or wid in seen:
            continue
        seen.add(wid)
        d = by_wid[wid]
        if d["id"] in r.force_retried:
            continue
        q = d["queue"]
        if d["id"] < last.get(q, 0):
            out.append(f"queue {q}: delivery {d['id']} acknowledged after {last[q]}")
        last[q] = max(last.get(q, 0), d["id"])
    return out


def duplicates(r: Any, *, acknowledged: bool = True) -> int:
    """Extra copies of one delivery (same webhook-id) beyond the first: acknowledged ones (the sender
    saw a 2xx), or with ``acknowledged=False`` every reception that reached the receiver's handler."""
    counts: dict[str, int] = defaultdict(int)
    for rec in r.recorder.records:
        if rec.method == "POST" and rec.delivery_key and (rec.acknowledged or not acknowledged):
            counts[rec.delivery_key] += 1
    return sum(n - 1 for n in counts.values() if n > 1)


def retry_delays(r: Any, delivery_id: int) -> list[float]:
    """Wait between the end of each failed attempt and the start of the next (the backoff)."""
    attempts = [a for a in r.attempts if a["delivery_id"] == delivery_id and a["outcome"] != "INTERRUPTED"]
    out = []
    for prev, nxt in zip(attempts, attempts[1:]):
        out.append(parse_iso(nxt["started_at"]) - parse_iso(prev["finished_at"]))
    return out


def _mapping_shape(r: Any, spec: dict[str, Any], line: int | None) -> list[Check]:
    bodies = [x.json for x in r.recorder.records if x.endpoint == spec["provider"] and x.method == "POST"]
    name = f"mapping_shape.{spec['provider']}"
    if not bodies:
        return [Check(name, False, "at least one POST received", "none received", line)]
    out = []
    if "array" in spec:
        ok = all(isinstance(b, list) for b in bodies) == bool(spec["array"])
        out.append(Check(name + ".array", ok, f"array: {spec['array']}", f"first body is {type(bodies[0]).__name__}",
                         line))
    items = [b[0] if isinstance(b, list) and b else b for b in bodies]
    for path in spec.get("has", []):
        missing = sum(1 for b in items if not _has(b, path))
        out.append(Check(f"{name}.has.{path}", missing == 0, f"every body has {path}",
                         f"missing in {missing} of {len(items)}", line))
    for path in spec.get("lacks", []):
        present = sum(1 for b in items if _has(b, path))
        out.append(Check(f"{name}.lacks.{path}", present == 0, f"no body has {path}",
                         f"present in {present} of {len(items)}", line))
    if "equals" in spec:
        out.append(Check(name + ".equals", bodies[0] == spec["equals"], str(spec["equals"]), str(bodies[0]), line))
    return out


def _has(obj: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False
        obj = obj[part]
    return True


__all__ = ["Check", "evaluate", "order_violations", "duplicates", "retry_delays"]
