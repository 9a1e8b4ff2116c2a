"""Reports of a scenario run: human summary, JSON, JUnit XML, event log, SVG retry timeline
(the HTML page is in ``html_report``)."""
from __future__ import annotations

import json
from array import array
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from dispatchsim.engine.clock import fmt_offset

from .runner import RunResult


def provider_table(r: RunResult) -> list[dict[str, Any]]:
    """Per provider: POSTs received and acknowledged, outcomes, latency percentiles (one pass over
    the records, keeping counts and one float per request)."""
    requests: Counter[str] = Counter()
    acknowledged: Counter[str] = Counter()
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    durations: dict[str, array[float]] = defaultdict(lambda: array("d"))
    for rec in r.recorder.records:
        if rec.method == "POST":
            name = rec.endpoint
            requests[name] += 1
            acknowledged[name] += rec.acknowledged
            outcomes[name][rec.outcome()] += 1
            durations[name].append(rec.duration or 0.0)
    rows = []
    for name in sorted(set(requests) | set(r.endpoint_names.values())):
        lat = sorted(durations.get(name, ()))
        rows.append({
            "provider": name, "requests": requests[name], "acknowledged": acknowledged[name],
            "outcomes": dict(sorted(outcomes.get(name, Counter()).items())),
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


def svg_timeline(r: RunResult, *, max_queues: int = 40) -> str:
    """Retry timeline (``--plot``): one row per queue, successes and failures in their own lanes,
    ticks at round simulated times, aggregated into time bins when attempts are many."""
    from .html_report import attempt_marks
    from .plots import attempt_timeline

    span = fmt_offset(max(r.elapsed, 1.0))[1:]
    return attempt_timeline(f"{r.scenario.name}: attempts per queue over {span} simulated", attempt_marks(r),
                            r.elapsed, max_rows=max_queues) + "\n"


def write_json(results: list[RunResult], path: str | Path) -> None:
    data = [to_json(r) for r in results]
    Path(path).write_text(json.dumps(data if len(data) != 1 else data[0], indent=2, ensure_ascii=False) + "\n",
                          encoding="utf-8")
