"""``--html FILE``: one self-contained HTML page for a run of one or more scenarios.

Inline CSS, inline SVG, a few lines of inline script for the event-log search; nothing is loaded
from anywhere, so the file can be mailed or attached to a CI run. Every chart is drawn from the
run's facts (attempts, deliveries, the event log, what the simulated providers received), and its
size does not grow with the number of attempts (see :func:`scenarios.plots.attempt_timeline`).
Those facts are streamed, one pass per chart, keeping counts, bins and a few bytes per delivery
(:class:`_Names`); :func:`write_html` writes the page as it is made.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from heapq import merge
from itertools import chain, repeat
from typing import Any
from xml.sax.saxutils import escape

from dispatchsim.engine.clock import fmt_offset, parse_iso
from dispatchsim.engine.config import build_snapshot
from dispatchsim.engine.policy import RetryPolicy

from .plots import Mark, Series, attempt_timeline, bar_chart, fmt_seconds, step_chart
from .runner import RunResult

#: the event log embedded per scenario; beyond this the first and last halves are kept
MAX_EVENTS = 50_000
#: points per step line (each is the maximum of its time bin, so a short spike stays visible)
STEP_POINTS = 400
PERCENTILES = (50, 90, 99)

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:12px 24px}
header a{color:#b3e5fc;margin-right:14px}
main{padding:0 24px 40px}
section.scenario{background:#fff;border:1px solid #ddd;border-radius:6px;margin:20px 0;padding:4px 20px 20px}
h2{margin:14px 0 4px} h3{margin:22px 0 6px;font-size:15px}
.pass{color:#2e7d32;font-weight:600} .fail{color:#c62828;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{border-bottom:1px solid #eee;padding:3px 10px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555;font-size:13px} .desc{max-width:900px;font-size:14px}
svg.plot{display:block;margin:6px 0;max-width:100%;height:auto}
.charts{display:flex;flex-wrap:wrap;gap:10px}
input.search{width:420px;padding:4px 8px;font-size:13px}
pre.log{font-size:12px;max-height:420px;overflow:auto;background:#f5f5f5;padding:8px;margin:6px 0}
.note{color:#666;font-size:12px}
"""

_SCRIPT = """
document.querySelectorAll('div.eventlog').forEach(function (box) {
  var lines = JSON.parse(document.getElementById(box.dataset.source).textContent);
  var input = box.querySelector('input'), out = box.querySelector('pre'), count = box.querySelector('.count');
  var limit = 500;
  function show() {
    var terms = input.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = [], matched = 0;
    for (var i = 0; i < lines.length; i++) {
      var low = lines[i].toLowerCase(), ok = true;
      for (var k = 0; k < terms.length && ok; k++) ok = low.indexOf(terms[k]) >= 0;
      if (ok) { matched++; if (shown.length < limit) shown.push(lines[i]); }
    }
    out.textContent = shown.join('\\n');
    count.textContent = matched + ' of ' + lines.length + ' events match' +
      (matched > limit ? ' (first ' + limit + ' shown)' : '');
  }
  input.addEventListener('input', show);
  show();
});
"""


def html_report(results: list[RunResult]) -> str:
    """The whole page: an index, then one section per scenario."""
    return "".join(html_parts(results))


def write_html(results: list[RunResult], path: str | os.PathLike[str]) -> None:
    """The page of :func:`html_report`, written as it is made: a long run's embedded event log is
    tens of megabytes, and the page is never held whole."""
    with open(path, "w", encoding="utf-8") as out:
        for part in html_parts(results):
            out.write(part)


def html_parts(results: list[RunResult]) -> Iterator[str]:
    """The page in pieces, in order (joined, they are :func:`html_report`)."""
    passed = sum(r.ok for r in results)
    links = "".join(f'<a href="#s{i}">{escape(r.scenario.name)}</a>' for i, r in enumerate(results))
    title = results[0].scenario.name if len(results) == 1 else f"{len(results)} scenarios"
    yield (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width, initial-scale=1">'
           f"<title>dispatchsim: {escape(title)}</title><style>{_CSS}</style></head><body>"
           f"<header><strong>dispatchsim run</strong> — {passed}/{len(results)} scenarios passed<br>{links}</header>"
           f"<main>")
    for i, r in enumerate(results):
        if i:
            yield "\n"
        yield from _section(i, r)
    yield f"</main><script>{_SCRIPT}</script></body></html>\n"


def _section(i: int, r: RunResult) -> Iterator[str]:
    s = r.scenario
    verdict = '<span class="pass">PASS</span>' if r.ok else '<span class="fail">FAIL</span>'
    counts = ", ".join(f"{k} {v:,}" for k, v in r.counts.items())
    parts = [f'<section class="scenario" id="s{i}"><h2>{verdict} {escape(s.name)}</h2>',
             f'<div class="meta">{escape(s.source)} · seed {s.seed} · {s.clock} clock · simulated '
             f'{escape(fmt_offset(r.elapsed)[1:])} · deliveries: {counts} · {len(r.attempts):,} attempts</div>']
    if s.description:
        parts.append(f'<p class="desc">{escape(" ".join(s.description.split()))}</p>')
    config_of = _configs(r)  # one read of the deliveries for the three plots that need it
    parts += [_expectations(r), _key_events(r), "<h3>Attempts per queue</h3>", _timeline(r),
              "<h3>Backlog and in flight per configuration</h3>", _backlog(r, config_of),
              "<h3>Latency per provider</h3>", _latency(r, config_of),
              "<h3>Retry schedule: configured and used</h3>", _schedules(r, config_of), "<h3>Event log</h3>"]
    yield "\n".join(parts) + "\n"
    yield from _event_log(i, r)
    yield "\n</section>"


def _expectations(r: RunResult) -> str:
    rows = ["<h3>Expectations</h3>"]
    if not r.checks:
        return rows[0] + '<p class="note">none stated</p>'
    rows.append('<table class="expectations"><tr><th></th><th>expectation</th><th>expected</th><th>observed</th>'
                "<th>line</th></tr>")
    for c in r.checks:
        mark = '<td class="pass">PASS</td>' if c.ok else '<td class="fail">FAIL</td>'
        rows.append(f"<tr>{mark}<td>{escape(c.name)}</td><td>{escape(str(c.expected))}</td>"
                    f"<td>{escape(str(c.observed))}</td><td>{c.line or ''}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _key_events(r: RunResult) -> str:
    if not r.key_events:
        return ""
    rows = "".join(f'<tr><td class="num">{escape(fmt_offset(t))}</td><td>{escape(text)}</td></tr>'
                   for t, text in r.key_events)
    table = f'<table class="story">{rows}</table>'
    if len(r.key_events) <= 30:
        return f"<h3>What happened</h3>{table}"
    return (f"<h3>What happened</h3><details><summary>{len(r.key_events):,} key events "
            f"(from {escape(r.key_events[0][1])})</summary>{table}</details>")


class _Names:
    """Each delivery's queue (or configuration, or provider) as a small number into a list of names:
    a few bytes per delivery instead of a dictionary entry, so a report of 100,000 deliveries does
    not hold a dictionary of them."""

    def __init__(self, r: RunResult, key: Callable[[dict[str, Any]], str]) -> None:
        self.names: list[str] = []
        numbers: dict[str, int] = {}
        self._of = array("l")  #: delivery id -> number, -1 for none (ids are small integers from 1)
        for d in r.deliveries:
            name = key(d)
            n = numbers.get(name)
            if n is None:
                n = numbers[name] = len(self.names)
                self.names.append(name)
            did = d["id"]
            if did >= len(self._of):
                self._of.extend(repeat(-1, did + 1 - len(self._of)))
            self._of[did] = n

    def get(self, delivery_id: Any) -> str | None:
        """The name of a delivery's queue (…), None for an unknown delivery."""
        if not isinstance(delivery_id, int) or not 0 <= delivery_id < len(self._of) or self._of[delivery_id] < 0:
            return None
        return self.names[self._of[delivery_id]]


def _configs(r: RunResult) -> _Names:
    return _Names(r, lambda d: d["config_id"])


def attempt_marks(r: RunResult) -> Iterator[Mark]:
    """Every attempt of the run as a mark on its queue's row, read one at a time."""
    queue_of = _Names(r, lambda d: d["queue"])
    for a in r.attempts:
        q = queue_of.get(a["delivery_id"])
        if q is None:
            continue
        at = parse_iso(a["started_at"]) - r.t0
        code = f" {a['status_code']}" if a["status_code"] else ""
        yield Mark(row=q, at=at, outcome=a["outcome"] or "IN_FLIGHT",
                   label=f"delivery {a['delivery_id']} attempt {a['number']}: {a['outcome']}{code} "
                         f"at {fmt_offset(at)}")


def _timeline(r: RunResult) -> str:
    marks = attempt_marks(r)
    first = next(marks, None)
    if first is None:
        return '<p class="note">no attempts</p>'
    return attempt_timeline(f"{r.scenario.name}: attempts per queue", chain([first], marks), r.elapsed, max_rows=60)


class _Changes:
    """+1/-1 changes of a running total (a backlog, attempts in flight), kept as two arrays of times."""

    def __init__(self) -> None:
        self.up = array("d")
        self.down = array("d")

    def add(self, t: float, step: int) -> None:
        (self.up if step > 0 else self.down).append(t)

    def in_order(self) -> Iterator[tuple[float, int]]:
        """The changes by time, a rise before a fall at the same time."""
        return merge(((t, 1) for t in sorted(self.up)), ((t, -1) for t in sorted(self.down)),
                     key=lambda c: (c[0], -c[1]))


def _backlog(r: RunResult, config_of: _Names) -> str:
    """Backlog (deliveries created and not yet DISPATCHED or FAILED) from the event log; in flight
    (attempts started and not finished) from the attempts."""
    changes: dict[str, dict[str, _Changes]] = defaultdict(lambda: {"backlog": _Changes(), "in flight": _Changes()})
    for line in r.events:
        if '"delivery.' not in line:
            continue
        ev = json.loads(line)
        name = ev.get("event")
        step = {"delivery.created": 1, "delivery.force_retry": 1, "delivery.dispatched": -1,
                "delivery.failed": -1}.get(name)
        cid = ev.get("config_id") or config_of.get(ev.get("delivery_id"))
        if step is None or cid is None:
            continue
        changes[cid]["backlog"].add(parse_iso(ev["ts"]) - r.t0, step)
    for a in r.attempts:
        cid = config_of.get(a["delivery_id"])
        if cid is None:
            continue
        changes[cid]["in flight"].add(parse_iso(a["started_at"]) - r.t0, 1)
        if a["finished_at"]:
            changes[cid]["in flight"].add(parse_iso(a["finished_at"]) - r.t0, -1)
    if not changes:
        return '<p class="note">no deliveries</p>'
    charts = []
    for cid in sorted(changes):
        series = [Series(name, _binned_steps(changes[cid][name].in_order(), r.elapsed))
                  for name in ("backlog", "in flight")]
        charts.append(step_chart(f"configuration {cid}", series, r.elapsed, y_label="deliveries"))
    return '<div class="charts">' + "\n".join(charts) + "</div>"


def _binned_steps(deltas: Iterable[tuple[float, int]], span: float) -> list[tuple[float, float]]:
    """A running total of +1/-1 changes (in time order, a rise before a fall at the same time) as at
    most ``STEP_POINTS`` points: each the highest value reached in its time bin, so drawing 100,000
    changes costs a few hundred path segments."""
    span = max(span, 1.0)
    width = span / STEP_POINTS
    level, points = 0, [(0.0, 0.0)]
    bin_start, bin_max = 0.0, 0
    for t, d in deltas:
        b = min(STEP_POINTS - 1, int(t / width)) * width
        if b != bin_start:
            points.append((bin_start, float(bin_max)))
            if level != bin_max:
                points.append((bin_start + width, float(level)))
            bin_start, bin_max = b, level
        level += d
        bin_max = max(bin_max, level)
    points.append((bin_start, float(bin_max)))
    points.append((bin_start + width, float(level)))
    return points


def _percentile(sorted_values: list[float], p: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def _latency(r: RunResult, config_of: _Names) -> str:
    """Latency of the attempts as the sender saw them, per provider (all outcomes with a response)."""
    lat: dict[str, array[float]] = defaultdict(lambda: array("d"))
    for a in r.attempts:
        if a["latency"] is not None and (cid := config_of.get(a["delivery_id"])) is not None:
            lat[r.endpoint_names.get(cid, cid)].append(a["latency"])
    if not lat:
        return '<p class="note">no attempts with a measured latency</p>'
    providers = sorted(lat)
    rows = ['<table class="latency"><tr><th>provider</th><th class="num">attempts</th>'
            + "".join(f'<th class="num">p{p}</th>' for p in PERCENTILES) + '<th class="num">max</th></tr>']
    values: dict[int, list[float | None]] = {p: [] for p in PERCENTILES}
    for name in providers:
        v = sorted(lat[name])
        for p in PERCENTILES:
            values[p].append(_percentile(v, p))
        rows.append(f"<tr><td>{escape(name)}</td><td class='num'>{len(v):,}</td>"
                    + "".join(f"<td class='num'>{fmt_seconds(_percentile(v, p))}</td>" for p in PERCENTILES)
                    + f"<td class='num'>{fmt_seconds(v[-1])}</td></tr>")
    rows.append("</table>")
    chart = bar_chart("attempt latency percentiles", providers, [(f"p{p}", values[p]) for p in PERCENTILES])
    return "\n".join(rows) + chart


def _configured(r: RunResult) -> dict[str, RetryPolicy]:
    out = {}
    for c in r.scenario.configurations:
        snap, _ = build_snapshot({**c.fields, "endpoint_url": "http://127.0.0.1:1/configured"})
        out[c.id] = snap.retry
    return out


def _schedules(r: RunResult, config_of: _Names) -> str:
    """Per configuration, the wait after failed attempt n: as configured (without jitter and
    Retry-After), and as used (median, min and max over the deliveries that waited)."""
    # per delivery id, read in id order: its attempts so far, and when the last one finished (NaN: not)
    tries, finished = array("l"), array("d")
    used: dict[str, dict[int, array[float]]] = defaultdict(lambda: defaultdict(lambda: array("d")))
    for a in r.attempts:
        if a["outcome"] == "INTERRUPTED" or a.get("replay"):
            continue
        did = a["delivery_id"]
        if did >= len(tries):
            tries.extend(repeat(0, did + 1 - len(tries)))
            finished.extend(repeat(math.nan, did + 1 - len(finished)))
        n, cid = tries[did], config_of.get(did)
        if n and not math.isnan(finished[did]) and cid is not None:
            used[cid][n].append(parse_iso(a["started_at"]) - finished[did])
        tries[did] = n + 1
        finished[did] = parse_iso(a["finished_at"]) if a["finished_at"] else math.nan
    configured = _configured(r)
    out = []
    for cid in sorted(used):
        policy = configured.get(cid)
        n_max = max(used[cid])
        groups = [f"after {n}" for n in range(1, n_max + 1)]
        plain = replace(policy, jitter="none") if policy is not None else None
        conf = [plain.delay_for(n) if plain is not None and (plain.budget is None or n < plain.budget) else None
                for n in range(1, n_max + 1)]
        med = [statistics.median(used[cid][n]) if used[cid].get(n) else None for n in range(1, n_max + 1)]
        hi = [max(used[cid][n]) if used[cid].get(n) else None for n in range(1, n_max + 1)]
        rows = ['<table class="schedule"><tr><th>after failed attempt</th><th class="num">configured</th>'
                '<th class="num">used (median)</th><th class="num">min</th><th class="num">max</th>'
                '<th class="num">deliveries</th></tr>']
        for n in range(1, n_max + 1):
            got = used[cid].get(n, [])
            rows.append(f"<tr><td>{n}</td><td class='num'>{fmt_seconds(conf[n - 1]) if conf[n - 1] is not None else '-'}"
                        f"</td><td class='num'>{fmt_seconds(med[n - 1]) if got else '-'}</td>"
                        f"<td class='num'>{fmt_seconds(min(got)) if got else '-'}</td>"
                        f"<td class='num'>{fmt_seconds(max(got)) if got else '-'}</td><td class='num'>{len(got):,}</td></tr>")
        rows.append("</table>")
        chart = bar_chart(f"configuration {cid}: wait after each failed attempt", groups,
                          [("configured", conf), ("used (median)", med), ("used (max)", hi)], lines=("configured",))
        out.append(f"<h4>{escape(cid)}</h4>" + "\n".join(rows) + chart)
    if not out:
        return '<p class="note">no delivery was retried</p>'
    return "\n".join(out)


def _event_log(i: int, r: RunResult) -> Iterator[str]:
    """The embedded event log (at most :data:`MAX_EVENTS` lines), as a JSON array of strings written
    a line at a time: the same text as ``json.dumps`` of the list, without the list."""
    note = ""
    if len(r.events) > MAX_EVENTS:
        half = MAX_EVENTS // 2
        note = (f'<p class="note">{len(r.events):,} events: the first and last {half:,} are embedded '
                "(<code>--events FILE</code> writes all of them)</p>")
        lines: Iterable[str] = chain(r.events.head(half), r.events.tail(half))
    else:
        lines = r.events
    yield (f'{note}<div class="eventlog" data-source="events{i}"><input class="search" type="search" '
           'placeholder="filter: words that must all appear, e.g. delivery.retrying crm-sales" '
           'aria-label="filter the event log"> <span class="count note"></span><pre class="log"></pre></div>'
           f'<script type="application/json" id="events{i}">[')
    for n, line in enumerate(lines):
        text = json.dumps(line, ensure_ascii=False).replace("</", "<\\/")
        yield f", {text}" if n else text
    yield "]</script>"
