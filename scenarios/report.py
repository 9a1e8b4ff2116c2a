"""Reports of a scenario run: human summary, JSON, JUnit XML, event log, SVG retry timeline."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from dispatchsim.engine.clock import fmt_offset, parse_iso

from .runner import RunResult


def provider_table(r: RunResult) -> list[dict[str, Any]]:
    rows = []
    by_endpoint: dict[str, list[Any]] = defaultdict(list)
    for rec in r.recorder.records:
        if rec.method == "POST":
            by_endpoint[rec.endpoint].append(rec)
    for name in sorted(set(by_endpoint) | set(r.endpoint_names.values())):
        recs = by_endpoint.get(name, [])
        outcomes = Counter(rec.outcome() for rec in recs)
        lat = sorted(rec.duration or 0.0 for rec in recs)
        rows.append({
            "provider": name, "requests": len(recs), "acknowledged": sum(1 for x in recs if x.acknowledged),
            "outcomes": dict(sorted(outcomes.items())),
            "latency_p50": lat[len(lat) // 2] if lat else None,
            "latency_p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        })
    return rows


def human(r: RunResult) -> str:
    s = r.scenario
    out = [f"scenario {s.name}  ({s.source})  seed {s.seed}, {s.clock} clock"]
    if s.description:
        out.append(f"  {s.description.strip()}")
    out.append("timeline")
    key = r.key_events
    shown = key if len(key) <= 30 else key[:20] + [(key[20][0], f"... {len(key) - 28} more ...")] + key[-8:]
    for t, text in shown:
        out.append(f"  {fmt_offset(t):>10}  {text}")
    out.append("providers")
    out.append(f"  {'provider':<16} {'requests':>8} {'acked':>6} {'p50 s':>8} {'p99 s':>8}  outcomes")
    for row in provider_table(r):
        p50 = "-" if row["latency_p50"] is None else f"{row['latency_p50']:.3f}"
        p99 = "-" if row["latency_p99"] is None else f"{row['latency_p99']:.3f}"
        outcomes = ", ".join(f"{k} x{v}" for k, v in row["outcomes"].items()) or "-"
        out.append(f"  {row['provider']:<16} {row['requests']:>8} {row['acknowledged']:>6} {p50:>8} {p99:>8}  {outcomes}")
    counts = ", ".join(f"{k} {v}" for k, v in r.counts.items())
    out.append(f"deliveries: {counts}; {len(r.attempts)} attempts; simulated {fmt_offset(r.elapsed)[1:]} "
               f"in {r.wall:.2f} s wall")
    out.append("expectations")
    if not r.checks:
        out.append("  (none)")
    for c in r.checks:
        mark = "PASS" if c.ok else "FAIL"
        where = f"  (line {c.line})" if c.line and not c.ok else ""
        out.append(f"  {mark}  {c.name:<24} expected {c.expected}; observed {c.observed}{where}")
    passed = sum(c.ok for c in r.checks)
    out.append(f"result: {'PASS' if r.ok else 'FAIL'} ({passed}/{len(r.checks)} expectations)")
    return "\n".join(out) + "\n"


def to_json(r: RunResult) -> dict[str, Any]:
    """The JSON report: byte-identical for the same scenario and seed (no wall-clock times in it)."""
    s = r.scenario
    return {
        "name": s.name, "source": s.source, "seed": s.seed, "clock": s.clock, "ok": r.ok,
        "simulated_seconds": round(r.elapsed, 6), "idle": r.idle,
        "counts": r.counts, "attempts": len(r.attempts),
        "checks": [{"name": c.name, "ok": c.ok, "expected": c.expected, "observed": c.observed, "line": c.line}
                   for c in r.checks],
        "timeline": [{"at": round(t, 6), "offset": fmt_offset(t), "event": text} for t, text in r.key_events],
        "providers": provider_table(r),
    }


def junit(results: list[RunResult]) -> str:
    """One <testsuite> per scenario, one <testcase> per expectation."""
    tests = sum(len(r.checks) for r in results)
    failures = sum(1 for r in results for c in r.checks if not c.ok)
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites name="dispatchsim" tests="{tests}" failures="{failures}">']
    for r in results:
        f = sum(1 for c in r.checks if not c.ok)
        parts.append(f'  <testsuite name={quoteattr(r.scenario.name)} tests="{len(r.checks)}" failures="{f}" '
                     f'time="{r.wall:.3f}" file={quoteattr(r.scenario.source)}>')
        for c in r.checks:
            parts.append(f'    <testcase classname={quoteattr("scenario." + r.scenario.name)} name={quoteattr(c.name)}'
                         f' file={quoteattr(r.scenario.source)}' + (f' line="{c.line}"' if c.line else "") + ">")
            if not c.ok:
                msg = f"expected {c.expected}; observed {c.observed}"
                parts.append(f'      <failure message={quoteattr(msg)}>{escape(msg)}</failure>')
            parts.append("    </testcase>")
        parts.append("  </testsuite>")
    parts.append("</testsuites>")
    return "\n".join(parts) + "\n"


_COLOURS = {"SUCCESS": "#2e7d32", "HTTP_ERROR": "#c62828", "TIMEOUT": "#ef6c00", "CONNECT_ERROR": "#6a1b9a",
            "PROTOCOL_ERROR": "#ad1457", "MAPPING_ERROR": "#37474f", "INTERRUPTED": "#9e9e9e"}


def svg_timeline(r: RunResult, *, max_queues: int = 40) -> str:
    """Retry timeline: one row per delivery queue, a dot per attempt coloured by outcome, a line per
    delivery from its creation to its last attempt. Time axis in simulated time."""
    by_id = {d["id"]: d for d in r.deliveries}
    queues: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in r.attempts:
        d = by_id.get(a["delivery_id"])
        if d is not None:
            queues[d["queue"]].append(a)
    names = sorted(queues)[:max_queues]
    span = max(r.elapsed, 1.0)
    left, width, row_h, top = 190, 740, 22, 44
    rows_h = row_h * max(1, len(names))
    height = top + rows_h + 70

    def x(t: float) -> float:
        return left + (t - r.t0) / span * width

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{height}" '
           'font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14">{escape(r.scenario.name)}: attempts per queue over '
           f'{escape(fmt_offset(span)[1:])} simulated</text>']
    axis_y = top + rows_h + 6
    for i in range(6):
        t = r.t0 + span * i / 5
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 8}" x2="{x(t):.1f}" y2="{axis_y}" stroke="#ddd"/>')
        out.append(f'<text x="{x(t):.1f}" y="{axis_y + 14}" text-anchor="middle">'
                   f'{escape(fmt_offset(t - r.t0))}</text>')
    for row, q in enumerate(names):
        y = top + row * row_h + row_h / 2
        out.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{escape(q[-30:])}</text>')
        per_delivery: dict[int, list[float]] = defaultdict(list)
        for a in queues[q]:
            per_delivery[a["delivery_id"]].append(parse_iso(a["started_at"]))
        for did, times in per_delivery.items():
            if len(times) > 1:
                out.append(f'<line x1="{x(min(times)):.1f}" y1="{y:.1f}" x2="{x(max(times)):.1f}" y2="{y:.1f}" '
                           'stroke="#90a4ae" stroke-width="1"/>')
        for a in queues[q]:
            colour = _COLOURS.get(a["outcome"] or "", "#000")
            t = parse_iso(a["started_at"])
            label = f"delivery {a['delivery_id']} attempt {a['number']}: {a['outcome']} {a['status_code'] or ''}"
            out.append(f'<circle cx="{x(t):.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"><title>{escape(label)}'
                       f' at {escape(fmt_offset(t - r.t0))}</title></circle>')
    lx, ly = 10, axis_y + 40
    seen = {a["outcome"] for a in r.attempts}
    for name, colour in _COLOURS.items():
        if name not in seen:
            continue
        out.append(f'<circle cx="{lx + 4}" cy="{ly - 4}" r="4" fill="{colour}"/>'
                   f'<text x="{lx + 12}" y="{ly}">{name}</text>')
        lx += 24 + 7 * len(name)
    if len(queues) > max_queues:
        out.append(f'<text x="{lx + 10}" y="{ly}">(first {max_queues} of {len(queues)} queues)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_json(results: list[RunResult], path: str | Path) -> None:
    data = [to_json(r) for r in results]
    Path(path).write_text(json.dumps(data if len(data) != 1 else data[0], indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")
