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

from dispatchsim.engine.clock import Clock, RealClock, iso
from dispatchsim.engine.config import Auth
from dispatchsim.engine.sender import Outcome, OutcomeKind, encode_body
from dispatchsim.engine.signing import sign
from dispatchsim.mapping.activity import NULLABLE

from .http import (ProbeSender, Redactor, Wire, abort_mid_body, evidences_by_status, outcome_ok, responded,
                   slow_chunks)
from .listener import ResultsListener
from .payloads import Payloads
from .report import CheckResult, Evidence, ProbeReport, Status
from .settings import ProbeSettings, RemoteNotConfirmed, check_target

#: Check ids in the order they run.
CHECKS: dict[str, str] = {
    "verify_get": "verification GET answered 2xx",
    "seed_post": "seed-shape activity acknowledged (2xx) within the timeout",
    "auth_missing": "request without credentials rejected (401/403)",
    "auth_wrong": "request with wrong credentials rejected (401/403)",
    "signature_tampered": "tampered webhook-signature rejected",
    "signature_stale": "stale webhook-timestamp rejected",
    "duplicate": "re-sent delivery acknowledged and processed once",
    "burst_ordered": "ordered burst (one queue, in sequence) acknowledged",
    "burst_concurrent": "concurrent burst at a capped rate acknowledged",
    "edge_unicode": "unicode names accepted",
    "edge_nulls": "nulls in optional fields accepted",
    "edge_unknown_fields": "unknown extra fields tolerated",
    "edge_max_size": "max-size payload accepted",
    "slow_body": "body sent slowly: acknowledged, endpoint still up",
    "connection_reuse": "requests on one kept-alive connection acknowledged",
    "connection_new": "a new connection per request acknowledged",
    "abort_mid_body": "request aborted mid-body: endpoint still up",
}

#: Rejections a receiver may answer for a bad credential or signature.
REJECTED = (401, 403)


@dataclass
class _Dup:
    activity_id: str = ""
    resent_at: float = 0.0  #: loop time
    acknowledged: bool = False


@dataclass
class _Run:
    results: list[CheckResult] = field(default_factory=list)
    baseline: str = "2xx"  #: what the verification GET got: "2xx", "other" (an HTTP answer) or "none"
    dup: _Dup = field(default_factory=_Dup)


async def run_probe(url: str, *, clock: Clock | None = None, results_listener: ResultsListener | None = None,
                    **settings: Any) -> ProbeReport:
    """Probe ``url`` and return the report (``report.exit_code`` is 1 when any check failed).

    ``settings`` are :class:`ProbeSettings` fields: ``auth`` (an engine auth dict such as
    ``{"type": "bearer", "token": "…"}``), ``secret``, ``timeout``, ``ordered``, ``burst``, ``rate``,
    ``concurrency``, ``max_body``, ``slow_body``, ``callback_wait``, ``status_url``, ``max_time``,
    ``seed``, ``allow_remote``. A non-loopback ``url`` raises :class:`RemoteNotConfirmed` unless
    ``allow_remote=True``; its rate, concurrency and burst sizes are then capped.
    ``results_listener``: a started :class:`ResultsListener` the endpoint sends results callbacks to.
    """
    opts = ProbeSettings.build(**settings)
    loopback = check_target(url)
    if not loopback and not opts.allow_remote:
        raise RemoteNotConfirmed(
            f"{Redactor(opts.auth, opts.secret).url(url)} is not a loopback address: the probe sends "
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
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.redactor = Redactor(opts.auth, opts.secret)
        self.wire = Wire(url, auth=opts.auth, secret=opts.secret, now=clock.now, connect=opts.connect_timeout,
                         total=opts.timeout, redactor=self.redactor, t0=self.t0)
        self.payloads = Payloads(opts.seed, clock.now, opts.mapping)
        self.sender = ProbeSender(now=clock.now, limit=max(opts.concurrency, 1))
        self.state = _Run()

    def _unreachable(self) -> bool:
        """The verification GET and the first POST both got no HTTP response at all."""
        first = self.state.results[:2]
        return len(first) == 2 and all(c.evidence and not any(responded(e) for e in c.evidence) for c in first)

    def elapsed(self) -> float:
        return self.loop.time() - self.t0

    async def run(self) -> ProbeReport:
        started_at = iso(self.clock.now())
        steps: list[tuple[str, Callable[[], Awaitable[tuple[Status, str, dict[str, Any]]]]]] = [
            ("verify_get", self.verify_get), ("seed_post", self.seed_post),
            ("auth_missing", self.auth_missing), ("auth_wrong", self.auth_wrong),
            ("signature_tampered", self.signature_tampered), ("signature_stale", self.signature_stale),
            ("duplicate", self.duplicate_send),
            ("burst_ordered", self.burst_ordered), ("burst_concurrent", self.burst_concurrent),
            ("edge_unicode", lambda: self.edge(self.payloads.unicode(), "unicode names")),
            ("edge_nulls", lambda: self.edge(self.payloads.nulls(), f"{len(NULLABLE)} optional fields null")),
            ("edge_unknown_fields", lambda: self.edge(self.payloads.unknown_fields(), "3 unknown fields")),
            ("edge_max_size", lambda: self.edge(self.payloads.max_size(self.opts.max_body),
                                                f"{self.opts.max_body} bytes")),
            ("slow_body", self.slow_body), ("connection_reuse", lambda: self.connections(reuse=True)),
            ("connection_new", lambda: self.connections(reuse=False)), ("abort_mid_body", self.abort),
        ]
        await self.sender.start()
        try:
            for check_id, step in steps:
                if self._unreachable():
                    self.state.results.append(CheckResult(check_id, CHECKS[check_id], Status.SKIP,
                                                          "not run: the endpoint is unreachable"))
                    continue
                await self._run_check(check_id, step)
            dup = self.state.results[[c.id for c in self.state.results].index("duplicate")]
            if dup.status is Status.PASS and self.state.dup.acknowledged:
                await self._verify_duplicate(dup)
        finally:
            await self.sender.close()
        return ProbeReport(url=self.redactor.url(self.url), checks=self.state.results, started_at=started_at,
                           duration=round(self.elapsed(), 6), requests_sent=self.wire.sent,
                           settings=self.opts.public())

    async def _run_check(self, check_id: str, step: Callable[[], Awaitable[tuple[Status, str, dict[str, Any]]]]
                         ) -> None:
        title = CHECKS[check_id]
        evidence: list[Evidence] = []
        self.wire.evidence = evidence
        start = self.elapsed()
        remaining = self.opts.max_time - start
        if remaining <= 0:
            result = CheckResult(check_id, title, Status.SKIP, f"not run: the {self.opts.max_time:g}s time "
                                                               f"budget is spent")
        else:
            try:
                async with asyncio.timeout(remaining):
                    status, summary, metrics = await step()
            except TimeoutError:
                status, summary, metrics = (Status.WARN, f"not finished within the {self.opts.max_time:g}s "
                                                         f"time budget", {})
            result = CheckResult(check_id, title, status, summary, evidence, metrics)
        result.duration = round(self.elapsed() - start, 6)
        self.state.results.append(result)

    # ---- helpers

    async def _post(self, label: str, payload: dict[str, Any], **header_kw: Any) -> Evidence:
        body = encode_body(payload)
        return await self.wire.post(self.sender, label, body,
                                    self.wire.headers(body, self.payloads.webhook_id(), **header_kw))

    async def _still_up(self, after: str) -> tuple[bool, Evidence]:
        """Re-check with the GET: 2xx again if it was 2xx, else any HTTP answer; an endpoint whose GET
        never answered is re-checked with a seed POST instead."""
        if self.state.baseline == "none":
            ev = await self._post(f"re-check after {after} (the GET never answers)", self.payloads.seed())
            return outcome_ok(ev), ev
        ev = await self.wire.get(self.sender, f"re-check after {after}")
        return (outcome_ok(ev) if self.state.baseline == "2xx" else responded(ev)), ev

    # ---- checks: each returns (status, summary, metrics)

    async def verify_get(self) -> tuple[Status, str, dict[str, Any]]:
        ev = await self.wire.get(self.sender, "verification")
        self.state.baseline = "2xx" if outcome_ok(ev) else "other" if responded(ev) else "none"
        if outcome_ok(ev):
            return Status.PASS, f"HTTP {ev.status} in {_ms(ev.latency)}", {}
        return Status.FAIL, (f"got {_got(ev)}: activation of a dispatch configuration would be refused"), {}

    async def seed_post(self) -> tuple[Status, str, dict[str, Any]]:
        ev = await self._post("seed payload", self.payloads.seed())
        if outcome_ok(ev):
            return Status.PASS, f"HTTP {ev.status} in {_ms(ev.latency)} (timeout {self.opts.timeout:g}s)", {}
        return Status.FAIL, f"got {_got(ev)}: the sender would retry this delivery", {}

    async def auth_missing(self) -> tuple[Status, str, dict[str, Any]]:
        if self.opts.auth.type == "none":
            return Status.SKIP, "no --auth given: nothing to leave out", {}
        ev = await self._post("without credentials", self.payloads.seed(), auth=Auth())
        return _rejection(ev, "without credentials")

    async def auth_wrong(self) -> tuple[Status, str, dict[str, Any]]:
        auth = self.opts.auth
        if auth.type == "none":
            return Status.SKIP, "no --auth given: nothing to get wrong", {}
        wrong = {"api_key": {"value": "probe-wrong-key"}, "bearer": {"token": "probe-wrong-token"},
                 "basic": {"password": "probe-wrong-password"}}[auth.type]
        ev = await self._post("with wrong credentials", self.payloads.seed(), auth=replace(auth, **wrong))
        return _rejection(ev, "with wrong credentials")

    async def signature_tampered(self) -> tuple[Status, str, dict[str, Any]]:
        if not self.opts.secret:
            return Status.SKIP, "no --secret given: signatures not checked", {}
        payload = self.payloads.seed()
        body = encode_body(payload)
        wid, ts = self.payloads.webhook_id(), int(self.clock.now())
        good = sign(self.opts.secret, wid, ts, body)
        mac = bytearray(good[3:].encode())
        mac[0] = ord("A") if mac[0] != ord("A") else ord("B")
        ev = await self.wire.post(self.sender, "tampered signature", body,
                                  self.wire.headers(body, wid, timestamp=ts, signature="v1," + mac.decode()))
        return _rejection(ev, "with a tampered signature")

    async def signature_stale(self) -> tuple[Status, str, dict[str, Any]]:
        if not self.opts.secret:
            return Status.SKIP, "no --secret given: timestamps not checked", {}
        ev = await self._post("stale timestamp (1 h old, correctly signed)", self.payloads.seed(),
                              timestamp=int(self.clock.now()) - 3600)
        return _rejection(ev, "with a 1-hour-old timestamp")

    async def duplicate_send(self) -> tuple[Status, str, dict[str, Any]]:
        payload = self.payloads.seed()
        body = encode_body(payload)
        wid = self.payloads.webhook_id()
        first = await self.wire.post(self.sender, "delivery", body, self.wire.headers(body, wid))
        if not outcome_ok(first):
            return Status.FAIL, f"first delivery got {_got(first)}", {}
        again = await self.wire.post(self.sender, "same delivery re-sent (same webhook-id and id)", body,
                                     self.wire.headers(body, wid))
        self.state.dup = _Dup(payload["id"], self.loop.time(), outcome_ok(again))
        if not outcome_ok(again):
            return Status.FAIL, (f"re-sent delivery got {_got(again)}: a sender re-sends after a timeout and "
                                 f"retries until it gets a 2xx"), {"activity_id": payload["id"]}
        return Status.PASS, "re-send acknowledged (processing verified at the end)", {"activity_id": payload["id"]}

    async def _verify_duplicate(self, result: CheckResult) -> None:
        start = self.loop.time()
        dup = self.state.dup
        self.wire.evidence = result.evidence
        if self.listener is not None:
            wait = max(0.0, dup.resent_at + self.opts.callback_wait - self.loop.time())
            wait = min(wait, max(0.0, self.opts.max_time - self.elapsed()))
            await self.clock.sleep(wait)
            n = self.listener.count(dup.activity_id)
            result.metrics["callbacks"] = n
            if n == 1:
                result.summary = "re-send acknowledged; processed once (1 results callback)"
            elif n > 1:
                result.status = Status.FAIL
                result.summary = f"processed {n} times: {n} results callbacks for activity {dup.activity_id}"
            else:
                result.status = Status.WARN
                result.summary = (f"re-send acknowledged; cannot verify processing: no results callback for "
                                  f"{dup.activity_id} within {self.opts.callback_wait:g}s")
        elif self.opts.status_url is not None:
            status_url = self.opts.status_url.replace("{id}", dup.activity_id)
            ev = await self.wire.get(self.sender, "status URL", url=status_url)
            n = _processed_count(ev)
            result.metrics["processed"] = n
            if n == 1:
                result.summary = "re-send acknowledged; status URL says processed once"
            elif n is not None and n > 1:
                result.status = Status.FAIL
                result.summary = f"processed {n} times (status URL) for activity {dup.activity_id}"
            else:
                result.status = Status.WARN
                result.summary = ("re-send acknowledged; cannot verify processing: status URL answered "
                                  f"{_got(ev)} without a processed count of 1 or more")
        else:
            result.status = Status.WARN
            result.summary = ("re-send acknowledged; cannot verify it was processed once "
                              "(give --results-port or --status-url)")
        result.duration = round(result.duration + self.loop.time() - start, 6)

    async def burst_ordered(self) -> tuple[Status, str, dict[str, Any]]:
        queue = "COM-PROBE-ORDERED"
        evs = []
        for i in range(self.opts.ordered):
            evs.append(await self._post(f"ordered {i + 1}/{self.opts.ordered}", self.payloads.varied(commerce=queue)))
        return _burst_verdict(evs, f"{self.opts.ordered} in sequence")

    async def burst_concurrent(self) -> tuple[Status, str, dict[str, Any]]:
        n, rate = self.opts.burst, self.opts.rate
        gate = asyncio.Semaphore(self.opts.concurrency)
        start = self.loop.time()

        async def one(i: int) -> Evidence:
            await self.clock.sleep(start + i / rate - self.loop.time())
            async with gate:
                return await self._post(f"burst {i + 1}/{n}", self.payloads.varied())

        evs = await asyncio.gather(*(one(i) for i in range(n)))
        return _burst_verdict(list(evs), f"{n} at {rate:g}/s, ≤{self.opts.concurrency} in flight")

    async def edge(self, payload: dict[str, Any], what: str) -> tuple[Status, str, dict[str, Any]]:
        ev = await self._post(what, payload)
        if outcome_ok(ev):
            return Status.PASS, f"{what}: HTTP {ev.status}", {}
        return Status.FAIL, f"{what}: got {_got(ev)}; a valid delivery would be retried until it fails", {}

    async def slow_body(self) -> tuple[Status, str, dict[str, Any]]:
        body = encode_body(self.payloads.seed())
        parts = 8
        interval = self.opts.slow_body / (parts - 1)
        headers = {**self.wire.headers(body, self.payloads.webhook_id()), "Content-Length": str(len(body))}
        ev = await self.wire.post(self.sender, f"body in {parts} pieces over {self.opts.slow_body:g}s", body, headers,
                                  data=slow_chunks(body, parts, interval, self.clock.sleep),
                                  total=self.opts.timeout + self.opts.slow_body)
        up, check = await self._still_up("slow body")
        if not up:
            return Status.FAIL, f"endpoint down after a slow body: re-check got {_got(check)}", {}
        if not outcome_ok(ev):
            return Status.FAIL, f"slow body got {_got(ev)} (endpoint still up)", {}
        return Status.PASS, f"HTTP {ev.status} after {self.opts.slow_body:g}s of body; still up", {}

    async def connections(self, *, reuse: bool) -> tuple[Status, str, dict[str, Any]]:
        sender = ProbeSender(now=self.clock.now, limit=1, force_close=not reuse)
        await sender.start()
        evs = []
        try:
            for i in range(3):
                body = encode_body(self.payloads.seed())
                evs.append(await self.wire.post(sender, f"{'kept-alive' if reuse else 'new'} connection, "
                                                        f"request {i + 1}/3", body,
                                                self.wire.headers(body, self.payloads.webhook_id())))
        finally:
            await sender.close()
        metrics = {"connections_opened": sender.connections_created, "connections_reused": sender.connections_reused}
        up, check = await self._still_up("connection test")
        ok = sum(outcome_ok(e) for e in evs)
        if not up:
            return Status.FAIL, f"endpoint down afterwards: re-check got {_got(check)}", metrics
        if ok < len(evs):
            return Status.FAIL, f"{ok}/{len(evs)} acknowledged: {_counts(evs)}", metrics
        how = (f"{sender.connections_created} connection(s), {sender.connections_reused} reuse(s)" if reuse
               else f"{sender.connections_created} connections")
        note = "; the endpoint closed idle connections" if reuse and sender.connections_reused == 0 else ""
        return Status.PASS, f"3/3 acknowledged on {how}{note}; still up", metrics

    async def abort(self) -> tuple[Status, str, dict[str, Any]]:
        body = encode_body(self.payloads.max_size(min(self.opts.max_body, 16 * 1024)))
        headers = self.wire.headers(body, self.payloads.webhook_id())
        started = self.elapsed()
        self.wire.sent += 1
        sent, error = await abort_mid_body(self.url, headers, body, sent_fraction=0.5, pause=0.5,
                                           connect=self.opts.connect_timeout, sleep=self.clock.sleep)
        ev = self.wire.record(f"aborted after {sent} of {len(body)} body bytes", "POST", headers, body[:sent],
                              _aborted(error, self.elapsed() - started), started)
        await self.clock.sleep(0.5)
        up, check = await self._still_up("aborted request")
        if error is not None and sent == 0:
            return Status.FAIL, f"could not connect: {ev.error}", {}
        if not up:
            return Status.FAIL, f"endpoint down after an aborted request: re-check got {_got(check)}", {}
        return Status.PASS, f"aborted after {sent} of {len(body)} bytes; still up", {}


# ---- verdicts

def _rejection(ev: Evidence, what: str) -> tuple[Status, str, dict[str, Any]]:
    if ev.status in REJECTED:
        return Status.PASS, f"rejected {what}: HTTP {ev.status}", {}
    if outcome_ok(ev):
        return Status.FAIL, f"ACCEPTED {what}: HTTP {ev.status}", {}
    if ev.status is not None and 400 <= ev.status < 500:
        return Status.WARN, f"rejected {what} with HTTP {ev.status}; 401 or 403 expected", {}
    return Status.FAIL, f"{what}: got {_got(ev)} instead of 401/403", {}


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


def _processed_count(ev: Evidence) -> int | None:
    if not outcome_ok(ev) or not ev.response_excerpt:
        return None
    try:
        data = json.loads(ev.response_excerpt)
    except ValueError:
        return None
    if isinstance(data, dict):
        for key in ("processed", "count", "times_processed"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                return data[key]
    return None


def _got(ev: Evidence) -> str:
    if ev.status is not None:
        return f"HTTP {ev.status}"
    return ev.error or ev.outcome.lower()


def _counts(evs: list[Evidence]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in evidences_by_status(evs).items())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _aborted(error: str | None, latency: float) -> Outcome:
    return Outcome(kind=OutcomeKind.CONNECT_ERROR, latency=round(latency, 6),
                   error=error or "aborted by the probe (connection reset mid-body)")
