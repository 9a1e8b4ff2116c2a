"""SVG drawing for reports: time axes with round ticks, attempt timelines that aggregate when dense,
step-line and bar charts. Plain strings, no plotting library: the output is inlined in an HTML
report or written as a standalone ``.svg``, and must not reach the network.

Every chart carries ``class="plot"`` and ``data-series="N"``; each series is one element with
``class="series"`` and ``data-name``, so a test (or a reader's script) can count what is drawn.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

#: one colour per attempt outcome (the engine's OutcomeKind values plus the two the store adds)
OUTCOME_COLOURS = {"SUCCESS": "#2e7d32", "HTTP_ERROR": "#c62828", "TIMEOUT": "#ef6c00",
                   "CONNECT_ERROR": "#6a1b9a", "PROTOCOL_ERROR": "#ad1457", "MAPPING_ERROR": "#37474f",
                   "INTERRUPTED": "#9e9e9e"}
SERIES_COLOURS = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037", "#455a64")

#: round tick steps in seconds: 1 s … 1 day
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
#: above this many attempts a timeline draws one mark per time bin and outcome, not per attempt
DENSE = 600


def nice_step(span: float, target: int = 6) -> float:
    """The smallest round step (1 s, 2 s, 5 s … 1 h, 2 h, 3 h, 6 h, 12 h, 1 day, then whole days) that
    gives at most ``target`` intervals over ``span`` seconds."""
    for step in _STEPS:
        if span / step <= target:
            return float(step)
    return 86400.0 * math.ceil(span / 86400 / target)


def time_ticks(span: float, target: int = 6) -> list[float]:
    """Tick offsets at round times from 0 to ``span`` (inclusive when it falls on a tick)."""
    step = nice_step(span, target)
    return [i * step for i in range(int(span / step + 1e-9) + 1)]


def fmt_tick(seconds: float) -> str:
    """A tick label: ``0``, ``30s``, ``5m``, ``1h``, ``1h30m``, ``2d``."""
    s = int(round(seconds))
    if s == 0:
        return "0"
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    parts = [f"{d}d" if d else "", f"{h}h" if h else "", f"{m}m" if m else "", f"{sec}s" if sec else ""]
    return "".join(parts)


def fmt_seconds(value: float) -> str:
    """A latency or delay for a table: ``850 ms``, ``1.20 s``, ``2m``, ``1h``."""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    return fmt_tick(value)


@dataclass(frozen=True)
class Frame:
    """Plot area inside an SVG: ``left``/``top`` offsets, ``width``/``height`` of the data area."""

    left: float
    top: float
    width: float
    height: float

    def x(self, t: float, span: float) -> float:
        return self.left + (t / span if span else 0.0) * self.width


def _open(width: float, height: float, title: str, series: int, kind: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {kind}" data-series="{series}" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            'font-family="sans-serif" font-size="11">',
            '<rect width="100%" height="100%" fill="white"/>',
            f'<text x="10" y="18" font-size="13">{escape(title)}</text>']


def _time_axis(f: Frame, span: float) -> list[str]:
    out = []
    bottom = f.top + f.height
    for t in time_ticks(span):
        x = f.x(t, span)
        out.append(f'<line x1="{x:.1f}" y1="{f.top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" stroke="#e0e0e0"/>'
                   f'<text x="{x:.1f}" y="{bottom + 14:.1f}" text-anchor="middle">{fmt_tick(t)}</text>')
    return out


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for name, colour in items:
        out.append(f'<rect x="{x:.0f}" y="{y - 9:.0f}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14:.0f}" y="{y:.0f}">{escape(name)}</text>')
        x += 26 + 6.5 * len(name)
    return out


@dataclass(frozen=True)
class Mark:
    """One attempt on a timeline."""

    row: str  #: the queue
    at: float  #: seconds since the run's start
    outcome: str
    label: str  #: tooltip text


def attempt_timeline(title: str, marks: Iterable[Mark], span: float, *, max_rows: int = 40,
                     dense: int = DENSE, bins: int = 180) -> str:
    """One row per queue, two lanes per row: successes above, every other outcome below, so a
    success is never hidden under a failure at the same time. Up to ``dense`` attempts each is a
    dot with a tooltip; beyond that each (time bin, outcome) of a row is one bar whose opacity
    grows with its count, so the size of the SVG does not grow with the number of attempts.

    ``marks`` is read once: a long run's are streamed, and only the first ``dense`` are kept (as
    marks) until there are more; from then on a row keeps a count per time bin and outcome."""
    span = max(span, 1.0)
    by_row: dict[str, list[Mark]] = defaultdict(list)
    binned: dict[str, Counter[tuple[int, str]]] = defaultdict(Counter)
    outcomes: set[str] = set()
    total = 0

    def bin_of(m: Mark) -> tuple[int, str]:
        return min(bins - 1, int(m.at / span * bins)), m.outcome

    for m in marks:
        total += 1
        outcomes.add(m.outcome)
        if total <= dense:
            by_row[m.row].append(m)
            continue
        if total == dense + 1:  # dense from now on: the marks kept so far become counts
            for row, kept in by_row.items():
                binned[row].update(bin_of(k) for k in kept)
                kept.clear()
        binned[m.row][bin_of(m)] += 1
        if m.row not in by_row:
            by_row[m.row] = []
    rows = sorted(by_row)[:max_rows]
    lane, left, width = 9.0, 200.0, 760.0
    row_h = 2 * lane + 6
    f = Frame(left=left, top=34.0, width=width, height=row_h * max(1, len(rows)))
    seen = sorted(outcomes, key=lambda o: list(OUTCOME_COLOURS).index(o) if o in OUTCOME_COLOURS else 99)
    aggregated = total > dense
    out = _open(left + width + 30, f.top + f.height + 60, title, len(seen), "timeline")
    out += _time_axis(f, span)
    series: dict[str, list[str]] = {o: [] for o in seen}
    bin_w = width / bins
    for i, name in enumerate(rows):
        y0 = f.top + i * row_h + 3
        out.append(f'<text x="{left - 8:.0f}" y="{y0 + lane + 4:.1f}" text-anchor="end">{escape(name[-32:])}</text>')
        if i:
            out.append(f'<line x1="{left}" y1="{y0 - 3:.1f}" x2="{left + width}" y2="{y0 - 3:.1f}" stroke="#f2f2f2"/>')
        if not aggregated:
            for m in by_row[name]:
                y = y0 + lane / 2 if m.outcome == "SUCCESS" else y0 + lane * 1.5
                series[m.outcome].append(f'<circle cx="{f.x(m.at, span):.1f}" cy="{y:.1f}" r="3.2">'
                                         f'<title>{escape(m.label)}</title></circle>')
            continue
        counts = binned[name]
        failing_per_bin: dict[int, list[str]] = defaultdict(list)
        for (b, o) in sorted(counts):
            if o != "SUCCESS":
                failing_per_bin[b].append(o)
        top_n = max(counts.values())
        for (b, o), n in sorted(counts.items()):
            if o == "SUCCESS":
                y, h = y0, lane
            else:
                kinds = failing_per_bin[b]
                h = lane / len(kinds)
                y = y0 + lane + kinds.index(o) * h
            opacity = 0.35 + 0.65 * math.log1p(n) / math.log1p(top_n)
            label = f"{name}: {n} × {o} between {fmt_tick(b * span / bins)} and {fmt_tick((b + 1) * span / bins)}"
            series[o].append(f'<rect x="{left + b * bin_w:.1f}" y="{y:.1f}" width="{max(bin_w, 1.5):.1f}" '
                             f'height="{h:.1f}" fill-opacity="{opacity:.2f}"><title>{escape(label)}</title></rect>')
    for o in seen:
        out.append(f'<g class="series" data-name="{o}" fill="{OUTCOME_COLOURS.get(o, "#000")}">')
        out += series[o]
        out.append("</g>")
    legend_y = f.top + f.height + 40
    out += _legend([(o, OUTCOME_COLOURS.get(o, "#000")) for o in seen], 10, legend_y)
    notes = []
    if aggregated:
        notes.append(f"{total:,} attempts in {bins} time bins (darker = more)")
    if len(by_row) > max_rows:
        notes.append(f"first {max_rows} of {len(by_row)} queues")
    if notes:
        out.append(f'<text x="{left + width:.0f}" y="{legend_y:.0f}" text-anchor="end" fill="#555">'
                   f'{escape("; ".join(notes))}</text>')
    out.append("</svg>")
    return "\n".join(out)


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  #: (seconds since start, value), a step function


def step_chart(title: str, series: Sequence[Series], span: float, *, y_label: str = "") -> str:
    """Values over simulated time as step lines (one ``<path>`` per series)."""
    span = max(span, 1.0)
    left, width, height = 60.0, 700.0, 150.0
    f = Frame(left=left, top=34.0, width=width, height=height)
    top_value = max((v for s in series for _, v in s.points), default=0.0)
    y_max = _nice_ceiling(top_value)
    out = _open(left + width + 30, f.top + height + 56, title, len(series), "steps")
    out += _time_axis(f, span)
    for v in (0.0, y_max / 2, y_max):
        y = f.top + height - (v / y_max) * height
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#f0f0f0"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    if y_label:
        out.append(f'<text x="{left}" y="{f.top - 6:.0f}" fill="#555">{escape(y_label)}</text>')
    for k, s in enumerate(series):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        d, last_y = [], None
        for t, v in s.points:
            x, y = f.x(min(max(t, 0.0), span), span), f.top + height - (v / y_max) * height
            if last_y is None:
                d.append(f"M{x:.1f},{y:.1f}")
            else:
                d.append(f"H{x:.1f}V{y:.1f}")
            last_y = y
        if d:
            d.append(f"H{left + width:.1f}")
        out.append(f'<path class="series" data-name={quoteattr(s.name)} d="{"".join(d)}" fill="none" '
                   f'stroke="{colour}" stroke-width="1.6"><title>{escape(s.name)}</title></path>')
    out += _legend([(s.name, SERIES_COLOURS[k % len(SERIES_COLOURS)]) for k, s in enumerate(series)], 10,
                   f.top + height + 44)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *,
              unit: str = "s", lines: Sequence[str] = ()) -> str:
    """Grouped bars: one ``<g class="series">`` per series, one bar per group. Series named in
    ``lines`` are drawn as a connected line of points instead (e.g. a configured schedule)."""
    left, height = 60.0, 150.0
    group_w = max(40.0, min(120.0, 700.0 / max(1, len(groups))))
    width = group_w * max(1, len(groups))
    f = Frame(left=left, top=34.0, width=width, height=height)
    top_value = max((v for _, vs in series for v in vs if v is not None), default=0.0)
    y_max = _nice_ceiling(top_value, seconds=unit == "s")
    out = _open(left + width + 30, f.top + height + 60, title, len(series), "bars")
    for v in (0.0, y_max / 2, y_max):
        y = f.top + height - (v / y_max) * height
        label = fmt_seconds(v) if unit == "s" else f"{v:g}"
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#f0f0f0"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for i, g in enumerate(groups):
        out.append(f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{f.top + height + 14:.1f}" '
                   f'text-anchor="middle">{escape(g[:18])}</text>')
    bars = [s for s in series if s[0] not in lines]
    bar_w = (group_w * 0.8) / max(1, len(bars))
    for k, (name, values) in enumerate(series):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        parts = []
        if name in lines:
            pts = [(left + (i + 0.5) * group_w, f.top + height - (v / y_max) * height)
                   for i, v in enumerate(values) if v is not None]
            if pts:
                parts.append('<polyline points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                             + f'" fill="none" stroke="{colour}" stroke-width="1.6"/>')
                parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"/>' for x, y in pts]
        else:
            j = bars.index((name, values))
            for i, v in enumerate(values):
                if v is None:
                    continue
                h = (v / y_max) * height
                shown = fmt_seconds(v) if unit == "s" else f"{v:g}"
                x = left + i * group_w + group_w * 0.1 + j * bar_w
                parts.append(f'<rect x="{x:.1f}" y="{f.top + height - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                             f'<title>{escape(f"{groups[i]}: {name} {shown}")}'
                             '</title></rect>')
        out.append(f'<g class="series" data-name={quoteattr(name)} fill="{colour}">' + "".join(parts) + "</g>")
    out += _legend([(n, SERIES_COLOURS[k % len(SERIES_COLOURS)]) for k, (n, _) in enumerate(series)], 10,
                   f.top + height + 46)
    out.append("</svg>")
    return "\n".join(out)


def _nice_ceiling(value: float, *, seconds: bool = False) -> float:
    """A round top for a value axis: a round time (1 m, 5 m, 1 h …) for durations of a minute or
    more, else the next 1, 2 or 5 × 10^k at or above ``value``."""
    if value <= 0:
        return 1.0
    if seconds and value >= 60:
        return nice_step(value, 1)
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if m * exp >= value * (1 - 1e-9):
            return float(m * exp)
    return float(10 * exp)
