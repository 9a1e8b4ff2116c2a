"""``run_probe``: the checks, in order, against one URL — bounded in requests and time.

Every wait goes through the injected clock (``clock.sleep``) and every duration is loop time, so
on the virtual clock a whole probe takes milliseconds; with ``RealClock`` it is real HTTP in real
time. The duplicate check is verified last, so waiting for results callbacks overlaps the rest.
"""
from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from dispatchsim.engine.clock import Clock, RealClock, is_clock, iso
from dispatchsim.engine.config import Auth
from dispatchsim.engine.sender import Outcome, OutcomeKind, encode_body
from dispatchsim.engine.signing import sign
from dispatchsim.mapping.activity import NULLABLE

from .checks import CHECKS, select
from .http import (ProbeSender, Wire, abort_mid_body, evidences_by_status, outcome_ok, redactor_for, responded,
                   slow_chunks)
from .listener import ResultsListener
from .payloads import Outgoing, Payloads
from .report import CheckResult, Evidence, ProbeReport, Status
from .repro import environment
from .settings import ProbeError, ProbeSettings, RemoteNotConfirmed, check_target
from .verify import Finding, Tracked, Verifier

#: Rejections a receiver may answer for a bad credential or signature.
REJECTED = (401, 403)


@dataclass
class _Run:
    results: list[CheckResult] = field(default_factory=list)
    baseline: str = "2xx"  #: what the verification GET got: "2xx", "other" (an HTTP answer) or "none"


Step = Callable[[], Awaitable[tuple[Status, str, dict[str, Any]]]]


async def run_probe(url: str, *, clock: Clock | None = None, results_listener: ResultsListener | None = None,
                    **settings: Any) -> ProbeReport:
    """Probe ``url`` and return the report (``report.exit_code`` is 1 when any check failed).

    ``settings`` are :class:`ProbeSettings` fields: ``auth`` (an engine auth dict such as
    ``{"type": "bearer", "token": "…"}``), ``secret``, ``timeout``, ``ordered``, ``burst``, ``rate``,
    ``concurrency``, ``max_body``, ``slow_body``, ``callback_wait``, ``settle``, ``status_url``,
    ``max_time``, ``check_time``, ``only``, ``skip``, ``payloads``, ``seed``, ``allow_remote``.
    A non-loopback ``url`` raises :class:`RemoteNotConfirmed` unless ``allow_remote=True``; its rate,
    concurrency and burst sizes are then capped. ``results_listener``: a started
    :class:`ResultsListener` the endpoint sends results callbacks to. Every acknowledged delivery is
    verified through the listener and the status URL, whichever are given (both when both are).
    """
    if clock is not None and not is_clock(clock):
        raise ProbeError(f"clock: must be a clock (RealClock(), or VirtualClock() in a virtual loop) or None, got "
                         f"{type(clock).__name__}")
    if results_listener is not None and not isinstance(results_listener, ResultsListener):
        raise ProbeError(f"results_listener: must be a started ResultsListener or None, got "
                         f"{type(results_listener).__name__}")
    opts = ProbeSettings.build(**settings)
    select(opts.only, opts.skip)
    loopback = check_target(url)
    if not loopback and not opts.allow_remote:
        raise RemoteNotConfirmed(
            f"{redactor_for(opts.auth, opts.secret).url(url)} is not a loopback address: the probe sends "
            f"real traffic there. Confirm with --yes (library: allow_remote=True).")
    opts, notes = opts.capped(loopback)
    probe = _Probe(url, opts, clock or RealClock(), results_listener)
    report = await probe.run()
    report.settings["notes"] = notes
    return report


class _Probe:
    def __init__(self, url: str, opts: ProbeSettings, clock: Clock, listener: ResultsListener | None) -> None:
        self.url = url
        self.opts = opts
        self.clock = clock
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.redactor = redactor_for(opts.auth, opts.secret)
        self.wire = Wire(url, auth=opts.auth, secret=opts.secret, now=clock.now, connect=opts.connect_timeout,
                         total=opts.timeout, redactor=self.redactor, t0=self.t0)
        self.payloads = Payloads(opts.seed, clock.now, opts.mapping, opts.payloads)
        self.sender = ProbeSender(now=clock.now, limit=max(opts.concurrency, 1), redactor=self.redactor)
        self.verifier = Verifier(listener, opts.status_url)
        self.state = _Run()

    def _unreachable(self) -> bool:
        """The verification GET and the first POST both got no HTTP response at all."""
        first = {c.id: c for c in self.state.results[:2]}
        return (set(first) == {"verify_get", "seed_post"}
                and all(c.evidence and not any(responded(e) for e in c.evidence) for c in first.values()))

    def elapsed(self) -> float:
        return self.loop.time() - self.t0

    def _steps(self) -> dict[str, Step]:
        p = self.payloads
        return {
            "verify_get": self.verify_get, "seed_post": self.seed_post,
            "auth_missing": self.auth_missing, "auth_wrong": self.auth_wrong,
            "signature_missing": self.signature_missing, "signature_tampered": self.signature_tampered,
            "signature_stale": self.signature_stale, "header_case": self.header_case,
            "malformed_json": self.malformed_json,
            "duplicate": self.duplicate_send, "duplicate_overlap": self.duplicate_overlap,
            "burst_ordered": self.burst_ordered, "burst_concurrent": self.burst_concurrent,
            "edge_unicode": lambda: self.edge(p.unicode, "unicode names"),
            "edge_nulls": lambda: self.edge(p.nulls, f"{len(NULLABLE)} optional fields null"),
            "edge_unknown_fields": lambda: self.edge(p.unknown_fields, "2 unknown fields"),
            "edge_max_size": lambda: self.edge(lambda: p.max_size(self.opts.max_body), f"{self.opts.max_body} bytes"),
            "slow_body": self.slow_body, "connection_reuse": lambda: self.connections(reuse=True),
            "connection_new": lambda: self.connections(reuse=False), "abort_mid_body": self.abort,
        }

    async def run(self) -> ProbeReport:
        started_at = iso(self.clock.now())
        steps = self._steps()
        await self.sender.start()
        try:
            for check_id in select(self.opts.only, self.opts.skip):
                if self._unreachable():
                    self.state.results.append(self._result(check_id, Status.SKIP,
                                                           "not run: the endpoint is unreachable"))
                    continue
                await self._run_check(check_id, steps[check_id])
            verification = await self._verify()
        finally:
            await self.sender.close()
        return ProbeReport(url=self.redactor.url(self.url), checks=self.state.results, started_at=started_at,
                           duration=round(self.elapsed(), 6), requests_sent=self.wire.sent,
                           settings=self.opts.public(), verification=verification,
                           environment=environment(self.opts.auth, self.opts.secret))

    def _result(self, check_id: str, status: Status, summary: str, evidence: list[Evidence] | None = None,
                metrics: dict[str, Any] | None = None) -> CheckResult:
        spec = CHECKS[check_id]
        return CheckResult(check_id, spec.title, status, summary, evidence or [], metrics or {}, correct=spec.correct)

    async def _run_check(self, check_id: str, step: Step) -> None:
        evidence: list[Evidence] = []
        self.wire.evidence, self.wire.check = evidence, check_id
        start = self.elapsed()
        remaining = self.opts.max_time - start
        if remaining <= 0:
            result = self._result(check_id, Status.SKIP, f"not run: the {self.opts.max_time:g}s time budget is spent")
        else:
            own = remaining >= self.opts.check_time
            try:
                async with asyncio.timeout(min(remaining, self.opts.check_time)):
                    status, summary, metrics = await step()
            except TimeoutError:
                if own:
                    status, summary, metrics = (Status.FAIL, f"hangs: not finished within the check's "
                                                             f"{self.opts.check_time:g}s deadline "
                                                             f"({len(evidence)} exchanges done)", {})
                else:
                    status, summary, metrics = (Status.WARN, f"not finished within the {self.opts.max_time:g}s "
                                                             f"time budget", {})
            result = self._result(check_id, status, summary, evidence, metrics)
        result.duration = round(self.elapsed() - start, 6)
        self.state.results.append(result)

    # ---- helpers

    async def deliver(self, label: str, out: Outgoing, *, expect: str = "processed", queue: str | None = None,
                      webhook_id: str | None = None, **header_kw: Any) -> Evidence:
        """POST one delivery and track it for verification: ``expect`` "processed" (once, when
        acknowledged), "rejected" (never processed when rejected) or "" (not tracked)."""
        body = encode_body(out.body)
        headers = self.wire.headers(body, webhook_id or self.payloads.webhook_id(), **header_kw)
        ev = await self.wire.post(self.sender, label, body, headers)
        self.track(ev, out, label=label, expect=expect, queue=queue)
        return ev

    def track(self, ev: Evidence, out: Outgoing, *, label: str, expect: str = "processed",
              queue: str | None = None) -> None:
        if out.activity_id is None:
            return
        if expect == "processed" and (outcome_ok(ev) or ev.outcome == OutcomeKind.TIMEOUT.value):
            # a timed-out delivery may or may not have been processed, but never twice
            self.verifier.track(self.wire.check, out.activity_id, label=label, times=1, answer=ev.answer(),
                                queue=queue, exact=outcome_ok(ev))
        elif expect == "rejected" and ev.status is not None and 400 <= ev.status < 500:
            self.verifier.track(self.wire.check, out.activity_id, label=label, times=0, answer=ev.answer())

    async def _still_up(self, after: str) -> tuple[bool, Evidence]:
        """Re-check with the GET: 2xx again if it was 2xx, else any HTTP answer; an endpoint whose GET
        never answered is re-checked with a seed POST instead."""
        if self.state.baseline == "none":
            ev = await self.deliver(f"re-check after {after} (the GET never answers)", self.payloads.seed())
            return outcome_ok(ev), ev
        ev = await self.wire.get(self.sender, f"re-check after {after}")
        return (outcome_ok(ev) if self.state.baseline == "2xx" else responded(ev)), ev

    # ---- checks: each returns (status, summary, metrics)

    async def verify_get(self) -> tuple[Status, str, dict[str, Any]]:
        ev = await self.wire.get(self.sender, "verification")
        self.state.baseline = "2xx" if outcome_ok(ev) else "other" if responded(ev) else "none"
        if outcome_ok(ev):
            return Status.PASS, f"HTTP {ev.status} in {_ms(ev.latency)}", {}
        return Status.FAIL, (f"got {ev.answer()}: activation of a dispatch configuration would be refused"), {}

    async def seed_post(self) -> tuple[Status, str, dict[str, Any]]:
        """Each starting payload once; one that times out is re-sent once, as a sender does."""
        bad = []
        for i in range(self.payloads.bases):
            out = self.payloads.seed()
            label = "seed payload" if not self.opts.payloads else f"team payload {i + 1}"
            wid = self.payloads.webhook_id()
            ev = await self.deliver(label, out, webhook_id=wid)
            if ev.outcome == OutcomeKind.TIMEOUT.value:
                again = await self.deliver(f"{label} re-sent after the timeout (same webhook-id), as a sender does",
                                           out, webhook_id=wid)
                bad.append(f"no answer within the sender's {self.opts.timeout:g}s timeout (the re-send got "
                           f"{'no answer either' if again.outcome == ev.outcome else again.answer()}): the sender "
                           f"counts it failed and retries, so a duplicate follows")
            elif not outcome_ok(ev):
                bad.append(f"got {ev.answer()}: the sender would retry this delivery")
        if bad:
            return Status.FAIL, "; ".join(dict.fromkeys(bad)), {}
        return Status.PASS, f"HTTP 2xx in {_ms(self.wire.evidence[-1].latency)} (timeout {self.opts.timeout:g}s)", {}

    async def auth_missing(self) -> tuple[Status, str, dict[str, Any]]:
        if self.opts.auth.type == "none":
            return Status.SKIP, "no --auth given: nothing to leave out", {}
        ev = await self.deliver("without credentials", self.payloads.seed(), expect="rejected", auth=Auth())
        return _rejection(ev, "without credentials")

    async def auth_wrong(self) -> tuple[Status, str, dict[str, Any]]:
        auth = self.opts.auth
        if auth.type == "none":
            return Status.SKIP, "no --auth given: nothing to get wrong", {}
        wrong = {"api_key": {"value": "probe-wrong-key"}, "bearer": {"token": "probe-wrong-token"},
                 "basic": {"password": "probe-wrong-password"}}[auth.type]
        ev = await self.deliver("with wrong credentials", self.payloads.seed(), expect="rejected",
                                auth=replace(auth, **wrong))
        return _rejection(ev, "with wrong credentials")

    async def signature_missing(self) -> tuple[Status, str, dict[str, Any]]:
        if not self.opts.secret:
            return Status.SKIP, "no --secret given: signatures not checked", {}
        out = self.payloads.seed()
        body = encode_body(out.body)
        headers = self.wire.headers(body, self.payloads.webhook_id())
        headers.pop("webhook-signature")
        ev = await self.wire.post(self.sender, "no webhook-signature header", body, headers)
        self.track(ev, out, label="no webhook-signature header", expect="rejected")
        return _rejection(ev, "without a webhook-signature header")

    async def signature_tampered(self) -> tuple[Status, str, dict[str, Any]]:
        if not self.opts.secret:
            return Status.SKIP, "no --secret given: signatures not checked", {}
        out = self.payloads.seed()
        body = encode_body(out.body)
        wid, ts = self.payloads.webhook_id(), int(self.clock.now())
        good = sign(self.opts.secret, wid, ts, body)
        mac = bytearray(good[3:].encode())
        mac[0] = ord("A") if mac[0] != ord("A") else ord("B")
        ev = await self.wire.post(self.sender, "tampered signature", body,
                                  self.wire.headers(body, wid, timestamp=ts, signature="v1," + mac.decode()))
        self.track(ev, out, label="tampered signature", expect="rejected")
        return _rejection(ev, "with a tampered signature")

    async def signature_stale(self) -> tuple[Status, str, dict[str, Any]]:
        if not self.opts.secret:
            return Status.SKIP, "no --secret given: timestamps not checked", {}
        ev = await self.deliver("stale timestamp (1 h old, correctly signed)", self.payloads.seed(),
                                expect="rejected", timestamp=int(self.clock.now()) - 3600)
        return _rejection(ev, "with a 1-hour-old timestamp")

    async def header_case(self) -> tuple[Status, str, dict[str, Any]]:
        out = self.payloads.seed()
        body = encode_body(out.body)
        headers = {k.upper(): v for k, v in self.wire.headers(body, self.payloads.webhook_id()).items()}
        label = f"header names upper-cased ({', '.join(k for k in headers if k != 'CONTENT-TYPE')})"
        ev = await self.wire.post(self.sender, label, body, headers)
        self.track(ev, out, label=label)
        if outcome_ok(ev):
            return Status.PASS, f"HTTP {ev.status} with upper-case header names", {}
        return Status.FAIL, (f"header names treated case-sensitively: the same delivery with upper-case header "
                             f"names got {ev.answer()}"), {}

    async def malformed_json(self) -> tuple[Status, str, dict[str, Any]]:
        body = encode_body(self.payloads.seed().body)[:-9]
        ev = await self.wire.post(self.sender, "body cut short (not JSON), correctly signed", body,
                                  self.wire.headers(body, self.payloads.webhook_id()))
        if ev.status is not None and 400 <= ev.status < 500:
            return Status.PASS, f"rejected a body that is not JSON: {ev.answer()}", {}
        if outcome_ok(ev):
            return Status.FAIL, (f"2xx on malformed JSON ({ev.answer()}): the sender counts it delivered while "
                                 f"nothing could be read from it"), {}
        if ev.status is not None:
            return Status.WARN, f"answered {ev.answer()} to a body that is not JSON; 400 expected", {}
        return Status.FAIL, f"a body that is not JSON got {ev.answer()}", {}

    async def duplicate_send(self) -> tuple[Status, str, dict[str, Any]]:
        out = self.payloads.seed()
        wid = self.payloads.webhook_id()
        first = await self.deliver("delivery", out, webhook_id=wid)
        if not outcome_ok(first):
            return Status.FAIL, f"first delivery got {first.answer()}", {}
        again = await self.deliver("same delivery re-sent (same webhook-id and id)", out, webhook_id=wid)
        metrics = {"activity_id": out.activity_id}
        if not outcome_ok(again):
            return Status.FAIL, (f"re-sent delivery got {again.answer()}: a sender re-sends after a timeout and "
                                 f"retries until it gets a 2xx"), metrics
        return Status.PASS, "re-send acknowledged", metrics

    async def duplicate_overlap(self) -> tuple[Status, str, dict[str, Any]]:
        """The copy starts while the first is still in flight: what a retry after a timeout looks like
        to a receiver that is still working on the first copy."""
        out = self.payloads.seed()
        wid = self.payloads.webhook_id()
        first = asyncio.ensure_future(self.deliver("delivery", out, webhook_id=wid))
        await self.clock.sleep(0.01)
        overlapped = not first.done()
        try:
            again = await self.deliver("same delivery re-sent while the first is in flight", out, webhook_id=wid)
        finally:
            first_ev = await first
        metrics = {"activity_id": out.activity_id, "overlapped": overlapped}
        answers = (first_ev, again)
        if all(outcome_ok(e) for e in answers):
            note = "" if overlapped else " (the first copy was answered before the re-send started)"
            return Status.PASS, f"both copies acknowledged{note}", metrics
        if any(outcome_ok(e) for e in answers) and all(outcome_ok(e) or e.status in (409, 425, 429, 503)
                                                       for e in answers):
            return Status.WARN, (f"one copy answered {_counts(list(answers))}: the sender retries it later; 2xx "
                                 f"for a copy already taken is simpler"), metrics
        return Status.FAIL, f"overlapping copies got {_counts(list(answers))}", metrics

    async def burst_ordered(self) -> tuple[Status, str, dict[str, Any]]:
        queue = "COM-PROBE-ORDERED"
        evs = []
        for i in range(self.opts.ordered):
            evs.append(await self.deliver(f"ordered {i + 1}/{self.opts.ordered}", self.payloads.varied(commerce=queue),
                                          queue=queue))
        return _burst_verdict(evs, f"{self.opts.ordered} in sequence")

    async def burst_concurrent(self) -> tuple[Status, str, dict[str, Any]]:
        n, rate = self.opts.burst, self.opts.rate
        gate = asyncio.Semaphore(self.opts.concurrency)
        start = self.loop.time()

        async def one(i: int) -> Evidence:
            await self.clock.sleep(start + i / rate - self.loop.time())
            async with gate:
                return await self.deliver(f"burst {i + 1}/{n}", self.payloads.varied())

        evs = await asyncio.gather(*(one(i) for i in range(n)))
        return _burst_verdict(list(evs), f"{n} at {rate:g}/s, ≤{self.opts.concurrency} in flight")

    async def edge(self, variant: Callable[[], Outgoing], what: str) -> tuple[Status, str, dict[str, Any]]:
        bad = []
        for i in range(self.payloads.bases):
            ev = await self.deliver(what if self.payloads.bases == 1 else f"{what} (team payload {i + 1})", variant())
            if not outcome_ok(ev):
                bad.append(ev)
        if not bad:
            return Status.PASS, f"{what}: HTTP 2xx", {}
        if all(e.outcome == OutcomeKind.TIMEOUT.value for e in bad):
            return Status.FAIL, (f"{what}: no answer within the sender's {self.opts.timeout:g}s timeout; the "
                                 f"sender retries it until it fails"), {}
        return Status.FAIL, f"{what}: got {_counts(bad)}; a valid delivery would be retried until it fails", {}

    async def slow_body(self) -> tuple[Status, str, dict[str, Any]]:
        out = self.payloads.seed()
        body = encode_body(out.body)
        parts = 8
        interval = self.opts.slow_body / (parts - 1)
        headers = {**self.wire.headers(body, self.payloads.webhook_id()), "Content-Length": str(len(body))}
        label = f"body in {parts} pieces over {self.opts.slow_body:g}s"
        ev = await self.wire.post(self.sender, label, body, headers,
                                  data=slow_chunks(body, parts, interval, self.clock.sleep),
                                  total=self.opts.timeout + self.opts.slow_body)
        self.track(ev, out, label=label)
        up, check = await self._still_up("slow body")
        if not up:
            return Status.FAIL, f"endpoint down after a slow body: re-check got {check.answer()}", {}
        if not outcome_ok(ev):
            return Status.FAIL, f"slow body got {ev.answer()} (endpoint still up)", {}
        return Status.PASS, f"HTTP {ev.status} after {self.opts.slow_body:g}s of body; still up", {}

    async def connections(self, *, reuse: bool) -> tuple[Status, str, dict[str, Any]]:
        sender = ProbeSender(now=self.clock.now, limit=1, force_close=not reuse, redactor=self.redactor)
        await sender.start()
        evs = []
        try:
            for i in range(3):
                out = self.payloads.seed()
                body = encode_body(out.body)
                label = f"{'kept-alive' if reuse else 'new'} connection, request {i + 1}/3"
                ev = await self.wire.post(sender, label, body, self.wire.headers(body, self.payloads.webhook_id()))
                self.track(ev, out, label=label)
                evs.append(ev)
        finally:
            await sender.close()
        metrics = {"connections_opened": sender.connections_created, "connections_reused": sender.connections_reused}
        up, check = await self._still_up("connection test")
        ok = sum(outcome_ok(e) for e in evs)
        if not up:
            return Status.FAIL, f"endpoint down afterwards: re-check got {check.answer()}", metrics
        if ok < len(evs):
            return Status.FAIL, f"{ok}/{len(evs)} acknowledged: {_counts(evs)}", metrics
        how = (f"{sender.connections_created} connection(s), {sender.connections_reused} reuse(s)" if reuse
               else f"{sender.connections_created} connections")
        note = "; the endpoint closed idle connections" if reuse and sender.connections_reused == 0 else ""
        return Status.PASS, f"3/3 acknowledged on {how}{note}; still up", metrics

    async def abort(self) -> tuple[Status, str, dict[str, Any]]:
        body = encode_body(self.payloads.max_size(min(self.opts.max_body, 16 * 1024)).body)
        headers = self.wire.headers(body, self.payloads.webhook_id())
        started = self.elapsed()
        self.wire.sent += 1
        pause = min(0.5, self.opts.timeout / 2)
        sent, error = await abort_mid_body(self.url, headers, body, sent_fraction=0.5, pause=pause,
                                           connect=self.opts.connect_timeout, sleep=self.clock.sleep)
        ev = self.wire.record(f"aborted after {sent} of {len(body)} body bytes", "POST", headers, body[:sent],
                              _aborted(error, self.elapsed() - started), started, repro=False)
        await self.clock.sleep(pause)
        up, check = await self._still_up("aborted request")
        if error is not None and sent == 0:
            return Status.FAIL, f"could not connect: {ev.error}", {}
        if not up:
            return Status.FAIL, f"endpoint down after an aborted request: re-check got {check.answer()}", {}
        return Status.PASS, f"aborted after {sent} of {len(body)} bytes; still up", {}

    # ---- verification of processing, for every check at once

    async def _verify(self) -> dict[str, Any]:
        """Wait for processing, then turn every fault into a FAIL of the check that sent the delivery."""
        v = self.verifier
        results = {c.id: c for c in self.state.results}
        self._error_bodies(results)
        info: dict[str, Any] = {"channels": v.channels, "unverified": [], "notes": []}
        judged = [c for c in self.state.results if CHECKS[c.id].delivers and c.status is not Status.SKIP]
        if not v.channels:
            unverified = [c.id for c in judged if any(t.check == c.id and t.times for t in v.tracked)]
            for cid in ("duplicate", "duplicate_overlap"):
                c = results.get(cid)
                if c is not None and c.status is Status.PASS:
                    c.status = Status.WARN
                    c.summary += "; cannot verify it was processed once (no results callback or status URL)"
            info["unverified"] = unverified
            info["how"] = HOW_TO_VERIFY
            return info
        wait_from = self.loop.time()
        budget = max(0.0, self.opts.max_time - self.elapsed())
        deadline = wait_from + min(self.opts.callback_wait, budget)
        scratch: list[Evidence] = []

        async def status(t: Tracked, keep: bool) -> Evidence:
            self.wire.evidence = results[t.check].evidence if keep else scratch
            self.wire.check = t.check
            url = (self.opts.status_url or "").replace("{id}", t.activity_id)
            return await self.wire.get(self.sender, f"status URL for {t.label}", url=url)

        await self.sender.start()
        await v.wait(deadline=deadline, settle=min(self.opts.settle, budget), poll=min(0.25, self.opts.callback_wait),
                     sleep=self.clock.sleep, status=status)
        findings, notes = v.findings(round(self.loop.time() - wait_from, 1))
        info["notes"] = notes
        for c in judged:
            c.verified = list(v.channels)
        for cid in ("duplicate", "duplicate_overlap"):
            c = results.get(cid)
            aid = c.metrics.get("activity_id") if c is not None else None
            if aid is not None and v.listener is not None:
                c.metrics["callbacks"] = v.listener.count(aid)
            if aid is not None and v.status_url is not None:
                c.metrics["processed"] = next((t.status_counts for t in v.tracked if t.activity_id == aid), None)
        by_check: dict[str, list[Finding]] = {}
        for f in findings:
            by_check.setdefault(f.check, []).append(f)
        for cid, found in by_check.items():
            c = results[cid]
            c.findings.extend(f"{f.fault}: {f.text}" for f in found)
            first = found[0]
            more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
            c.summary = (f"{first.fault.value.upper()}: {first.text}{more}" if c.status is not Status.FAIL
                         else f"{c.summary}; {first.fault}{more}")
            c.status = Status.FAIL
        for c in judged:
            if c.status is Status.PASS and c.id in ("duplicate", "duplicate_overlap"):
                c.summary += f"; processed once ({', '.join(v.channels)})"
        return info

    def _error_bodies(self, results: dict[str, CheckResult]) -> None:
        """A 2xx whose body says the request failed: the sender believes it and never retries."""
        for c in results.values():
            if not CHECKS[c.id].delivers:
                continue
            for e in c.evidence:
                said = _error_said(e) if e.method == "POST" and outcome_ok(e) else None
                if said is not None:
                    c.findings.append(f"acknowledged with an error body: {e.label} got {e.answer()} {said}")
            if c.findings and c.status is not Status.FAIL:
                c.status = Status.FAIL
                c.summary = f"2xx WITH AN ERROR BODY: {c.findings[0].split(': ', 1)[1]}"


HOW_TO_VERIFY = ("processing is observed through the results callback (--results, then point the endpoint's "
                 "results call at the printed URL; or --results-url URL) or a status URL (--status-url "
                 "'https://…/{id}' answering {\"processed\": n}); give either or both")


# ---- verdicts

def _rejection(ev: Evidence, what: str) -> tuple[Status, str, dict[str, Any]]:
    if ev.status in REJECTED:
        return Status.PASS, f"rejected {what}: HTTP {ev.status}", {}
    if outcome_ok(ev):
        return Status.FAIL, f"ACCEPTED {what}: HTTP {ev.status}", {}
    if ev.status is not None and 400 <= ev.status < 500:
        return Status.WARN, f"rejected {what} with HTTP {ev.status}; 401 or 403 expected", {}
    return Status.FAIL, f"{what}: got {ev.answer()} instead of 401/403", {}


def _burst_verdict(evs: list[Evidence], what: str) -> tuple[Status, str, dict[str, Any]]:
    lat = sorted(e.latency for e in evs)
    ok = sum(outcome_ok(e) for e in evs)
    metrics: dict[str, Any] = {
        "sent": len(evs), "acknowledged": ok, "errors": {k: v for k, v in evidences_by_status(evs).items()
                                                         if not k.startswith("HTTP 2")},
        "latency_ms": {f"p{p}": round(_percentile(lat, p) * 1000, 1) for p in (50, 95, 99)}
        | {"max": round(lat[-1] * 1000, 1) if lat else 0.0},
    }
    pct = metrics["latency_ms"]
    summary = f"{ok}/{len(evs)} acknowledged ({what}); p50 {pct['p50']:g} ms, p95 {pct['p95']:g} ms"
    if ok == len(evs):
        return Status.PASS, summary, metrics
    summary += f"; errors: {', '.join(f'{k} ×{v}' for k, v in metrics['errors'].items())}"
    backpressure = all(e.status in (429, 503) for e in evs if not outcome_ok(e))
    return (Status.WARN if backpressure else Status.FAIL), summary, metrics


def _percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _error_said(ev: Evidence) -> str | None:
    """The error a 2xx response body reports (``{"ok": false}``, ``{"status": "error"}``, ``{"error": …}``,
    ``{"errors": [...]}``), or None when the body does not say so."""
    try:
        data = json.loads(ev.response_excerpt or "")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    said = [f'"{k}": {json.dumps(data[k], ensure_ascii=False)}' for k in ("ok", "success") if data.get(k) is False]
    if str(data.get("status", "")).lower() in ("error", "fail", "failed", "failure", "rejected"):
        said.append(f'"status": {json.dumps(data["status"], ensure_ascii=False)}')
    for key in ("error", "errors"):
        if data.get(key):
            said.append(f'"{key}": {json.dumps(data[key], ensure_ascii=False)[:120]}')
    return f"({', '.join(said)})" if said else None


def _counts(evs: list[Evidence]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in evidences_by_status(evs).items())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _aborted(error: str | None, latency: float) -> Outcome:
    return Outcome(kind=OutcomeKind.CONNECT_ERROR, latency=round(latency, 6),
                   error=error or "aborted by the probe (connection reset mid-body)")
