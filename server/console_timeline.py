"""A delivery's retry timeline as inline SVG, drawn to scale: x is time since the delivery was created.

Each attempt is a dot (green: 2xx, red: anything else) at its start; the waits between attempts
are the gaps, so the backoff doubling is visible as it happened; a scheduled next attempt is a
hollow dot. Every mark carries ``data-offset`` (seconds since creation) so a test can check the scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

from dispatchsim.engine import parse_iso

WIDTH, HEIGHT, PAD = 720, 70, 24


@dataclass(frozen=True, slots=True)
class Mark:
    """One point on the timeline: seconds since creation, what happened, and its tooltip."""

    offset: float
    kind: str  #: "ok" | "fail" | "next" | "replay"
    label: str


def marks(created_at: str, attempts: list[dict[str, object]], next_attempt_at: str | None) -> list[Mark]:
    """The timeline's points from the API views of a delivery and its attempts (ISO-8601 times)."""
    t0 = parse_iso(created_at)
    out = []
    for a in attempts:
        if not a.get("started_at"):
            continue
        ok = a.get("outcome") == "SUCCESS"
        code = a.get("status_code")
        kind = "replay" if a.get("replay") else ("ok" if ok else "fail")
        label = f"#{a['number']} {a['started_at']} {a.get('outcome') or 'in flight'}" + (f" {code}" if code else "")
        out.append(Mark(parse_iso(str(a["started_at"])) - t0, kind, label))
    if next_attempt_at:
        out.append(Mark(parse_iso(next_attempt_at) - t0, "next", f"next attempt {next_attempt_at}"))
    return out


def fmt_span(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def svg(points: list[Mark]) -> str:
    """The SVG markup (escaped, ready to inline)."""
    span = max((m.offset for m in points), default=0.0) or 1.0
    inner = WIDTH - 2 * PAD
    y = HEIGHT // 2

    def x(offset: float) -> float:
        return round(PAD + max(offset, 0.0) / span * inner, 2)

    parts = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
             f' viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="retry timeline"'
             f' data-span="{span:.3f}" data-x0="{PAD}" data-width="{inner}">',
             f'<line x1="{PAD}" y1="{y}" x2="{WIDTH - PAD}" y2="{y}" class="axis"/>',
             f'<text x="{PAD}" y="{HEIGHT - 6}" class="tick">created</text>',
             f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" class="tick" text-anchor="end">+{fmt_span(span)}</text>']
    for m in points:
        fill = ' fill-opacity="0"' if m.kind == "next" else ""
        parts.append(f'<circle class="mark {m.kind}" cx="{x(m.offset)}" cy="{y}" r="6"'
                     f' data-offset="{m.offset:.3f}"{fill}>'
                     f'<title>{escape(m.label)} (+{fmt_span(m.offset)})</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
