"""What a probe found: one :class:`CheckResult` per check, with the exchanges that justify it.

Renderers (human table, JSON, JUnit XML) live here too, so the CLI only picks one. Nothing in a
report holds a credential: evidence is redacted when it is made (see ``probe.http.redactor_for``).
"""
from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any
from xml.etree import ElementTree as ET

from dispatchsim.engine.printable import printable, xml_text

from .repro import REPORT_PLACEHOLDER


class Status(str, Enum):
    """The verdict of one probe check; only FAIL makes the probe exit non-zero."""

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
    """One HTTP exchange (or an attempt at one), redacted: the whole request, the response, the timing."""

    label: str
    method: str
    url: str
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str | None = None  #: the whole body as sent (UTF-8, redacted)
    request_size: int = 0
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_excerpt: str | None = None  #: the first KiB of the response body
    outcome: str = ""  #: SUCCESS, HTTP_ERROR, TIMEOUT, CONNECT_ERROR, PROTOCOL_ERROR
    error: str | None = None
    started: float = 0.0  #: seconds since the probe started
    latency: float = 0.0
    curl: str | None = None  #: one shell line that repeats the request (secrets from the environment)

    def answer(self) -> str:
        """``HTTP 200``, ``HTTP 308 redirect to …`` or the error: what the sender would have seen."""
        if self.status is None:
            return self.error or self.outcome.lower()
        if 300 <= self.status < 400:
            where = next((v for k, v in self.response_headers.items() if k.lower() == "location"), None)
            return f"HTTP {self.status} redirect{f' to {where}' if where else ''} (senders never follow redirects)"
        return f"HTTP {self.status}"

    def describe(self) -> str:
        """One line for the text report: request, answer, latency and when it was sent."""
        return (f"{self.method} {self.label}: {self.answer()} in {self.latency * 1000:.0f} ms "
                f"(at +{self.started:.3f}s, {self.request_size} bytes sent)")


@dataclass(slots=True)
class CheckResult:
    """The verdict of one check, with the redacted HTTP exchanges that justify it.

    ``metrics`` holds the check's measurements (latencies in seconds); ``duration`` is in seconds.
    """

    id: str
    title: str
    status: Status
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    correct: str = ""  #: what a correct receiver does
    findings: list[str] = field(default_factory=list)  #: every fault found, one line each
    verified: list[str] = field(default_factory=list)  #: the channels that observed its processing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data for the report (the status as its string value)."""
        out = asdict(self)
        out["status"] = self.status.value
        return out

    def detail(self, limit: int | None = None) -> list[str]:
        """The lines a team acts on: faults, telling exchanges with response and curl, the correct way."""
        shown = self.evidence if limit is None else _telling(self.evidence, limit)
        lines = [f"fault: {f}" for f in self.findings]
        for n, e in enumerate(shown):
            lines.append(e.describe())
            if e.response_excerpt:
                lines.append(f"  response: {_one_line(e.response_excerpt)}")
            if e.curl and self.status is Status.FAIL and (limit is None or n == 0):
                lines.append(f"  reproduce: {e.curl}")
        if len(shown) < len(self.evidence):
            lines.append(f"… {len(self.evidence) - len(shown)} more exchanges (--verbose, or all of them in --json)")
        if self.status is Status.FAIL and self.correct:
            lines.append(f"a correct receiver {self.correct}")
        return lines


@dataclass(slots=True)
class ProbeReport:
    """Everything one probe run found: a verdict per check and how the run was made.

    Secrets never appear in it: ``url``, the settings and every piece of evidence are redacted.
    """

    url: str  #: redacted
    checks: list[CheckResult]
    started_at: str
    duration: float
    requests_sent: int
    settings: dict[str, Any] = field(default_factory=dict)
    #: how processing was observed, the checks it could not verify and how to enable it
    verification: dict[str, Any] = field(default_factory=dict)
    environment: list[str] = field(default_factory=list)  #: variables the curl lines read
    report_path: str = "probe.json"  #: where the JSON report is (curl lines read large bodies from it)

    @property
    def failed(self) -> list[CheckResult]:
        """The checks that failed."""
        return [c for c in self.checks if c.status is Status.FAIL]

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings and skips do not count)."""
        return not self.failed

    @property
    def exit_code(self) -> int:
        """The process exit code for this report: 0 when ok, 1 when a check failed."""
        return 0 if self.ok else 1

    def check(self, check_id: str) -> CheckResult:
        """The result of the check with this id; KeyError (listing the known ids) otherwise."""
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(f"no check {check_id!r}; known: {', '.join(c.id for c in self.checks)}")

    def counts(self) -> dict[str, int]:
        """Number of checks per status; every status is present, zero included."""
        out = {s.value: 0 for s in Status}
        for c in self.checks:
            out[c.status.value] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: the run, its counts and every check (the form of ``--json``)."""
        return {
            "url": self.url, "started_at": self.started_at, "duration": round(self.duration, 3),
            "requests_sent": self.requests_sent, "ok": self.ok, "counts": self.counts(),
            "settings": self.settings, "verification": self.verification, "environment": self.environment,
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self) -> str:
        """The report as indented JSON text, for ``--json``."""
        return self._placed(json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=False))

    def to_junit(self) -> str:
        """The report as JUnit XML, one test case per check, for CI systems that show test results."""
        counts = self.counts()
        suite = ET.Element("testsuite", name="dispatchsim.probe", tests=str(len(self.checks)),
                           failures=str(counts["fail"]), skipped=str(counts["skip"]), errors="0",
                           time=f"{self.duration:.3f}", timestamp=self.started_at)
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="url", value=self.url)
        for name in ("channels", "unverified"):
            if self.verification.get(name):
                ET.SubElement(props, "property", name=f"verification.{name}",
                              value=", ".join(self.verification[name]))
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="probe", name=c.id, time=f"{c.duration:.3f}")
            detail = "\n".join([c.summary, *c.detail()])
            if c.status is Status.FAIL:
                ET.SubElement(case, "failure", message=c.summary).text = detail
            elif c.status is Status.SKIP:
                ET.SubElement(case, "skipped", message=c.summary)
            else:
                ET.SubElement(case, "system-out").text = f"{c.status.value}: {detail}"
        ET.indent(suite)
        # a receiver's answer quoted in a summary or a finding may hold characters XML 1.0 forbids
        # (NUL, ESC, ...): ElementTree writes them as they are, so they are escaped to keep the file parseable
        for node in suite.iter():
            node.attrib.update((k, xml_text(v)) for k, v in node.attrib.items())
            if node.text:
                node.text = xml_text(node.text)
        return self._placed('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n")

    def table(self, *, verbose: bool = False) -> str:
        """The human report: one line per check; under failures and warnings, what to act on."""
        width = max(len(c.id) for c in self.checks) if self.checks else 10
        pad = " " * (4 + 2 + width + 4)
        lines = [f"dispatchsim probe {self.url}"]
        for c in self.checks:
            lines.append(f"  {c.status.value.upper():4}  {c.id:<{width}}  {c.summary}")
            if verbose or c.status in (Status.FAIL, Status.WARN):
                lines.extend(pad + line for line in c.detail(None if verbose else 3))
        n = self.counts()
        unverified = self.verification.get("unverified") or []
        if unverified:
            lines.append(f"not verified (processing not observed): {', '.join(unverified)}")
            lines.append(f"  {self.verification.get('how', '')}")
        if self.failed and self.environment:
            lines.append(f"reproduce: set {', '.join(self.environment)} in the environment first")
        verdict = "FAILED" if not self.ok else "ok"
        lines.append(f"{verdict}: {n['pass']} passed, {n['warn']} warnings, {n['fail']} failed, "
                     f"{n['skip']} skipped; {self.requests_sent} requests in {self.duration:.1f}s")
        # summaries and findings quote what the receiver answered: no escape sequence reaches the terminal
        return self._placed("\n".join(printable(line) for line in lines))

    def _placed(self, text: str) -> str:
        return text.replace(REPORT_PLACEHOLDER, shlex.quote(self.report_path))


def _telling(evidence: list[Evidence], n: int) -> list[Evidence]:
    """The first ``n`` exchanges that did not get a 2xx, else the first ``n``."""
    bad = [e for e in evidence if e.status is None or not 200 <= e.status < 300]
    return (bad or evidence)[:n]


def _one_line(text: str, cap: int = 160) -> str:
    """A response excerpt on one line, its control and invisible characters shown escaped (``\\x1b``)."""
    flat = " ".join(text.split())
    return printable(flat if len(flat) <= cap else flat[:cap] + "…")
