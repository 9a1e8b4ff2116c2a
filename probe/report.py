"""What a probe found: one :class:`CheckResult` per check, with the exchanges that justify it.

Renderers (human table, JSON, JUnit XML) live here too, so the CLI only picks one. Nothing in a
report holds a credential: evidence is redacted when it is made (see ``probe.http.Redactor``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any
from xml.etree import ElementTree as ET


class Status(str, Enum):
    #: The endpoint behaved as a careful receiver should.
    PASS = "pass"
    #: Questionable or unverifiable; does not fail the probe.
    WARN = "warn"
    #: A sender doing this in production would have a problem; the probe exits 1.
    FAIL = "fail"
    #: Not applicable (no ``--auth``/``--secret``) or not run (time budget spent).
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class Evidence:
    """One HTTP exchange (or an attempt at one), redacted."""

    label: str
    method: str
    url: str
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str | None = None  #: excerpt
    request_size: int = 0
    status: int | None = None
    response_excerpt: str | None = None
    outcome: str = ""  #: SUCCESS, HTTP_ERROR, TIMEOUT, CONNECT_ERROR, PROTOCOL_ERROR
    error: str | None = None
    started: float = 0.0  #: seconds since the probe started
    latency: float = 0.0

    def describe(self) -> str:
        got = f"HTTP {self.status}" if self.status is not None else (self.error or self.outcome.lower())
        return f"{self.method} {self.label}: {got} in {self.latency * 1000:.0f} ms"


@dataclass(slots=True)
class CheckResult:
    id: str
    title: str
    status: Status
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out


@dataclass(slots=True)
class ProbeReport:
    url: str  #: redacted
    checks: list[CheckResult]
    started_at: str
    duration: float
    requests_sent: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status is Status.FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def check(self, check_id: str) -> CheckResult:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(f"no check {check_id!r}; known: {', '.join(c.id for c in self.checks)}")

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for c in self.checks:
            out[c.status.value] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url, "started_at": self.started_at, "duration": round(self.duration, 3),
            "requests_sent": self.requests_sent, "ok": self.ok, "counts": self.counts(),
            "settings": self.settings, "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=False)

    def to_junit(self) -> str:
        counts = self.counts()
        suite = ET.Element("testsuite", name="dispatchsim.probe", tests=str(len(self.checks)),
                           failures=str(counts["fail"]), skipped=str(counts["skip"]), errors="0",
                           time=f"{self.duration:.3f}", timestamp=self.started_at)
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="url", value=self.url)
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="probe", name=c.id, time=f"{c.duration:.3f}")
            detail = "\n".join([c.summary, *(e.describe() for e in c.evidence)])
            if c.status is Status.FAIL:
                ET.SubElement(case, "failure", message=c.summary).text = detail
            elif c.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=c.summary)
            else:
                ET.SubElement(case, "system-out").text = f"{c.status.value}: {detail}"
        ET.indent(suite)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"

    def table(self, *, verbose: bool = False) -> str:
        """The human report: one line per check, evidence under failures and warnings."""
        width = max(len(c.id) for c in self.checks) if self.checks else 10
        lines = [f"dispatchsim probe {self.url}"]
        for c in self.checks:
            lines.append(f"  {c.status.value.upper():4}  {c.id:<{width}}  {c.summary}")
            if verbose or c.status in (Status.FAIL, Status.WARN):
                shown = c.evidence if verbose else _telling(c.evidence, 3)
                for e in shown:
                    lines.append(f"  {'':4}  {'':<{width}}    {e.describe()}")
                    if e.response_excerpt and c.status is Status.FAIL:
                        lines.append(f"  {'':4}  {'':<{width}}      response: {_one_line(e.response_excerpt)}")
                if len(shown) < len(c.evidence):
                    lines.append(f"  {'':4}  {'':<{width}}    … {len(c.evidence) - len(shown)} more exchanges "
                                 f"(--verbose or --json for all)")
        n = self.counts()
        verdict = "FAILED" if not self.ok else "ok"
        lines.append(f"{verdict}: {n['pass']} passed, {n['warn']} warnings, {n['fail']} failed, "
                     f"{n['skip']} skipped; {self.requests_sent} requests in {self.duration:.1f}s")
        return "\n".join(lines)


def _telling(evidence: list[Evidence], n: int) -> list[Evidence]:
    """The first ``n`` exchanges that did not get a 2xx, else the first ``n``."""
    bad = [e for e in evidence if e.status is None or not 200 <= e.status < 300]
    return (bad or evidence)[:n]


def _one_line(text: str, cap: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= cap else flat[:cap] + "…"
