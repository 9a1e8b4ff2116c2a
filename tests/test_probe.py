"""The probe against simulated endpoints on the virtual clock: a good one passes everything, and each
bad behaviour makes exactly the check that targets it fail."""
from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from dispatchsim.engine.clock import VirtualClock
from dispatchsim.mapping.activity import PAYLOAD_KEYS
from dispatchsim.probe import CHECKS, ProbeError, ProbeReport, ResultsListener, Status, run_probe
from dispatchsim.providers import EndpointSet, parse_config

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="
KEY = "k3y-s3cret-value"
AUTH = {"type": "api_key", "header": "X-Api-Key", "value": KEY}


def good_spec(callback_url: str) -> dict[str, Any]:
    return {
        "behaviour": {"status": 200},
        "auth": {"type": "api_key", "header": "X-Api-Key", "value": KEY},
        "signing_secret": SECRET,
        "signature_tolerance": "5m",
        "schema": {"required": ["id", "type", "channel", "reason.code"]},
        "results_callback": {"url": callback_url, "delay": "2s"},
    }


def failing(report: ProbeReport) -> set[str]:
    return {c.id for c in report.checks if c.status is Status.FAIL}


async def probe_provider(*changes, **settings: Any) -> ProbeReport:
    """Probe a simulated provider: the good spec, modified by each ``change(spec)``."""
    clock = VirtualClock()
    async with ResultsListener() as listener:
        spec = good_spec(listener.url)
        for change in changes:
            change(spec)
        async with EndpointSet(parse_config({"endpoints": {"p": spec}}), now=clock.now) as endpoints:
            kw: dict[str, Any] = {"auth": AUTH, "secret": SECRET, "results_listener": listener, **settings}
            return await run_probe(endpoints.url("p"), clock=clock, **kw)


async def test_good_endpoint_passes_every_check():
    report = await probe_provider()
    assert [c.id for c in report.checks] == list(CHECKS)
    assert {c.id: c.status for c in report.checks} == {c: Status.PASS for c in CHECKS}, report.table()
    assert report.ok and report.exit_code == 0
    assert report.check("duplicate").metrics["callbacks"] == 1
    burst = report.check("burst_concurrent").metrics
    assert burst["sent"] == burst["acknowledged"] == 20 and set(burst["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert report.check("connection_reuse").metrics["connections_reused"] >= 1
    assert report.check("connection_new").metrics["connections_reused"] == 0
    assert report.requests_sent == sum(len(c.evidence) for c in report.checks)


def _drop(*keys):
    def change(spec):
        for k in keys:
            spec.pop(k)
    return change


def _set(key, value):
    def change(spec):
        spec[key] = value
    return change


def _drop_signing(spec):
    del spec["signing_secret"], spec["signature_tolerance"]


def _callback_every_time(spec):
    spec["results_callback"]["once"] = False


@pytest.mark.parametrize("change, expected", [
    pytest.param(_drop("auth"), {"auth_missing", "auth_wrong"}, id="accepts-any-credentials"),
    pytest.param(_drop("signing_secret", "signature_tolerance"),
                 {"signature_missing", "signature_tampered", "signature_stale"}, id="ignores-signatures"),
    pytest.param(_drop("signature_tolerance"), {"signature_stale"}, id="no-timestamp-tolerance"),
    pytest.param(_callback_every_time, {"duplicate", "duplicate_overlap"}, id="processes-duplicates-twice"),
    pytest.param(_set("verify_get", 405), {"verify_get"}, id="verification-get-405"),
    pytest.param(_set("verify_get", "reset"), {"verify_get"}, id="verification-get-reset"),
    pytest.param(_set("schema", {"required": ["id", "activityDetails.assignedOperator.externalId"]}),
                 {"edge_nulls"}, id="schema-requires-optional-field"),
])
async def test_bad_provider_fails_exactly_its_check(change, expected):
    report = await probe_provider(change)
    assert failing(report) == expected, report.table()
    assert report.exit_code == 1


async def test_bearer_credentials_checked_and_no_secret_skips_signatures():
    report = await probe_provider(_set("auth", {"type": "bearer", "token": "t0k"}), _drop_signing,
                                  auth={"type": "bearer", "token": "t0k"}, secret=None)
    assert report.check("auth_wrong").status is Status.PASS and report.check("auth_missing").status is Status.PASS
    assert report.check("signature_tampered").status is Status.SKIP and report.ok, report.table()


@pytest.mark.parametrize("status, outcome, verdict", [
    (401, "HTTP_ERROR", Status.PASS), (403, "HTTP_ERROR", Status.PASS), (200, "SUCCESS", Status.FAIL),
    (400, "HTTP_ERROR", Status.WARN), (500, "HTTP_ERROR", Status.FAIL), (None, "TIMEOUT", Status.FAIL),
])
def test_rejection_verdicts(status, outcome, verdict):
    from dispatchsim.probe.report import Evidence
    from dispatchsim.probe.runner import _rejection
    ev = Evidence(label="x", method="POST", url="u", status=status, outcome=outcome)
    assert _rejection(ev, "with wrong credentials")[0] is verdict


async def test_duplicate_cannot_be_verified_without_callback_or_status_url():
    clock = VirtualClock()
    spec = good_spec("http://127.0.0.1:9/unused")
    del spec["results_callback"]
    async with EndpointSet(parse_config({"endpoints": {"p": spec}}), now=clock.now) as endpoints:
        report = await run_probe(endpoints.url("p"), clock=clock, auth=AUTH, secret=SECRET)
    dup = report.check("duplicate")
    assert dup.status is Status.WARN and "cannot verify" in dup.summary
    assert report.ok  # a warning does not fail the probe


async def test_acknowledged_but_not_processed_within_the_wait_fails_every_check():
    report = await probe_provider(lambda s: s["results_callback"].update(delay="1m"), callback_wait=10)
    lost = failing(report)
    assert {"seed_post", "duplicate", "burst_ordered", "burst_concurrent", "edge_unicode", "slow_body"} <= lost
    assert "ACKNOWLEDGED BUT NEVER PROCESSED" in report.check("duplicate").summary
    assert "results callbacks = 0 after 11s" in report.check("seed_post").findings[0]


# ---- a hand-made receiver for misbehaviour that depends on the request itself


class Receiver:
    """A receiver with switchable faults; counts processing per payload id (``GET /status/{id}``)."""

    def __init__(self, *, unknown_fields_500: bool = False, max_body: int = 1024 ** 2, hang_on_slow_body: bool = False,
                 die_on_abort: bool = False, max_in_flight: int | None = None, latency: float = 0.0,
                 dedup: bool = True) -> None:
        self.unknown_fields_500 = unknown_fields_500
        self.max_body = max_body
        self.hang_on_slow_body = hang_on_slow_body
        self.die_on_abort = die_on_abort
        self.max_in_flight = max_in_flight
        self.latency = latency
        self.dedup = dedup
        self.processed: Counter[str] = Counter()
        self.seen: set[str] = set()
        self.in_flight = 0
        self.died = False
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> Receiver:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_get("/status/{id}", self._status)
        app.router.add_route("*", "/hooks", self._hook)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks"  # type: ignore
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"processed": self.processed[request.match_info["id"]]})

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if request.method == "GET":
            return web.json_response({"ok": True})
        start = loop.time()
        try:
            raw = await request.read()
        except asyncio.CancelledError:
            if self.die_on_abort and not self.died:
                self.died = True
                task = loop.create_task(self._die())
                self._tasks.add(task)
            raise
        if self.hang_on_slow_body and loop.time() - start > 1.0:
            await loop.create_future()
        self.in_flight += 1
        try:
            await asyncio.sleep(self.latency)
            if self.max_in_flight is not None and self.in_flight > self.max_in_flight:
                return web.json_response({"error": "overloaded"}, status=500)
        finally:
            self.in_flight -= 1
        try:
            data = json.loads(raw)
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        if self.unknown_fields_500 and set(data) - set(PAYLOAD_KEYS):
            return web.json_response({"error": "Unrecognized field"}, status=500)
        wid = request.headers["webhook-id"]
        if not (self.dedup and wid in self.seen):
            self.processed[data["id"]] += 1
        self.seen.add(wid)
        return web.json_response({"ok": True})

    async def _die(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def probe_receiver(receiver: Receiver, **settings: Any) -> ProbeReport:
    async with receiver:
        return await run_probe(receiver.url, clock=VirtualClock(), **settings)


@pytest.mark.parametrize("receiver, expected", [
    pytest.param(lambda: Receiver(), set(), id="plain-good"),
    pytest.param(lambda: Receiver(unknown_fields_500=True), {"edge_unknown_fields"}, id="500-on-unknown-fields"),
    pytest.param(lambda: Receiver(max_body=32 * 1024), {"edge_max_size"}, id="413-below-max-size"),
    pytest.param(lambda: Receiver(hang_on_slow_body=True), {"slow_body"}, id="hangs-on-slow-body"),
    pytest.param(lambda: Receiver(die_on_abort=True), {"abort_mid_body"}, id="dies-after-aborted-request"),
    pytest.param(lambda: Receiver(max_in_flight=2, latency=0.3), {"burst_concurrent"}, id="500-under-concurrency"),
])
async def test_bad_receiver_fails_exactly_its_check(receiver, expected):
    report = await probe_receiver(receiver())
    assert failing(report) == expected, report.table()
    skipped = {c.id for c in report.checks if c.status is Status.SKIP}
    assert skipped == {"auth_missing", "auth_wrong", "signature_missing", "signature_tampered", "signature_stale"}


async def test_hang_is_reported_as_a_timeout_with_evidence():
    report = await probe_receiver(Receiver(hang_on_slow_body=True), timeout=4)
    slow = report.check("slow_body")
    post = slow.evidence[0]
    assert post.outcome == "TIMEOUT" and post.latency == pytest.approx(4 + 3)
    assert slow.evidence[1].status == 200  # the re-check: up, it only hung that request


async def test_status_url_verifies_duplicate_processing():
    receiver = Receiver()
    async with receiver:
        status_url = receiver.url.replace("/hooks", "/status/{id}")
        report = await run_probe(receiver.url, clock=VirtualClock(), status_url=status_url)
    assert report.check("duplicate").status is Status.PASS
    assert report.check("duplicate").metrics["processed"] == 1
    receiver = Receiver(dedup=False)
    async with receiver:
        report = await run_probe(receiver.url, clock=VirtualClock(),
                                 status_url=receiver.url.replace("/hooks", "/status/{id}"))
    assert failing(report) == {"duplicate", "duplicate_overlap"}
    assert report.check("duplicate").metrics["processed"] == 2


async def test_backpressure_in_a_burst_is_a_warning():
    clock = VirtualClock()
    # only the burst runs: 2 acknowledged, then 3 get 429, then the rest are acknowledged
    spec = {"behaviour": {"sequence": [{"times": 2, "status": 200}, {"times": 3, "status": 429, "retry_after": 1},
                                       {"status": 200}]}}
    async with EndpointSet(parse_config({"endpoints": {"p": spec}}), now=clock.now) as endpoints:
        report = await run_probe(endpoints.url("p"), clock=clock, burst=10, only=["burst_concurrent"])
    assert [c.id for c in report.checks] == ["burst_concurrent"]
    burst = report.check("burst_concurrent")
    assert burst.status is Status.WARN and burst.metrics["errors"] == {"HTTP 429": 3}, report.table()
    assert report.ok


async def test_unreachable_endpoint_stops_early():
    clock = VirtualClock()
    async with EndpointSet(parse_config({"endpoints": {"p": {"behaviour": "refuse"}}}), now=clock.now) as endpoints:
        report = await run_probe(endpoints.url("p"), clock=clock)
    assert failing(report) == {"verify_get", "seed_post"}
    assert report.requests_sent == 2
    assert all(c.status is Status.SKIP for c in report.checks[2:])


async def test_time_budget_bounds_the_probe():
    clock = VirtualClock()
    loop = asyncio.get_running_loop()
    async with EndpointSet(parse_config({"endpoints": {"p": {"behaviour": {"status": 200, "latency": "2s"}}}}),
                           now=clock.now) as endpoints:
        start = loop.time()
        report = await run_probe(endpoints.url("p"), clock=clock, max_time=15)
    assert loop.time() - start <= 15 + 1
    statuses = Counter(c.status for c in report.checks)
    assert statuses[Status.SKIP] >= 5 and statuses[Status.WARN] >= 1  # cut short, not failed
    assert "time budget" in report.table()


async def test_payload_shapes_sent():
    clock = VirtualClock()
    async with EndpointSet(parse_config({"endpoints": {"p": {}}}), now=clock.now) as endpoints:
        report = await run_probe(endpoints.url("p"), clock=clock, ordered=3, burst=4, max_body=20_000)
        posts = [r for r in endpoints.recorder.records if r.method == "POST" and r.json is not None]
    seed = posts[0].json
    assert list(seed) == list(PAYLOAD_KEYS) and seed["commerceName"] == "Farmacia Central"
    sizes = {len(r.body.encode()) for r in posts}
    assert 20_000 in sizes
    ordered = [r.json for r in posts if r.json.get("commerceExternalId") == "COM-PROBE-ORDERED"]
    assert len(ordered) == 3 and all(list(p) == list(PAYLOAD_KEYS) for p in ordered)
    ids = [r.json["id"] for r in posts]
    assert len(ids) - len(set(ids)) == 2  # only the two duplicate checks repeat an id
    assert report.requests_sent == len(endpoints.recorder.records) + 1  # + the aborted request


async def test_same_seed_same_requests():
    async def bodies(seed):
        clock = VirtualClock()
        async with EndpointSet(parse_config({"endpoints": {"p": {}}}), now=clock.now) as endpoints:
            await run_probe(endpoints.url("p"), clock=clock, seed=seed, ordered=2, burst=2)
            return [(r.headers.get("webhook-id"), r.json["id"]) for r in endpoints.recorder.records
                    if r.method == "POST" and r.json]
    first, again, other = await bodies(1), await bodies(1), await bodies(2)
    assert first == again and first != other


def test_checks_run_in_the_documented_order():
    assert list(CHECKS)[:2] == ["verify_get", "seed_post"] and list(CHECKS)[-1] == "abort_mid_body"


#: A provider with its own format: it requires task.ref / customer.id and keeps the payload's id.
OWN_FORMAT = {"fields": {"id": "id", "task.ref": "id", "customer.id": "commerceExternalId"}, "include_rest": True}


def _own_schema(spec: dict[str, Any]) -> None:
    spec["schema"] = {"required": ["id", "task.ref", "customer.id"]}


async def test_mapping_sends_the_shape_the_endpoint_expects():
    without = await probe_provider(_own_schema)
    assert "seed_post" in failing(without)  # the seed shape is rejected by the provider's schema (400)
    report = await probe_provider(_own_schema, mapping=OWN_FORMAT)
    assert report.ok, report.table()
    assert not failing(report)


def test_probe_cli_refuses_an_invalid_mapping(tmp_path, capsys):
    from dispatchsim.cli import main

    bad = tmp_path / "m.yaml"
    bad.write_text("fields:\n  x: {from: id, fn: uper}\n", encoding="utf-8")
    assert main(["probe", "http://127.0.0.1:9/hooks", "--mapping", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "mapping" in err and "uper" in err


@pytest.mark.parametrize(("kw", "says"), [
    ({"timeout": "5"}, "timeout must be a finite number of seconds (or per second), got '5'"),
    ({"rate": math.inf}, "rate must be a finite number"),
    ({"burst": 2.5}, "burst must be a whole number, got 2.5"),
    ({"only": "verify_get"}, "only must be a list of check names, got str"),
    ({"secret": 5}, "secret must be text or None, got int"),
    ({"allow_remote": "yes"}, "allow_remote must be True or False, got 'yes'"),
    ({"clock": "real"}, "clock: must be a clock"),
    ({"results_listener": "x"}, "results_listener: must be a started ResultsListener or None, got str"),
])
async def test_run_probe_names_a_setting_of_the_wrong_kind(kw, says):
    """A text timeout failed as a TypeError inside a comparison, a clock as an AttributeError, and a check
    name given as text was read letter by letter ('unknown check(s) _, e, f, g …'); a wrong listener was
    ignored. Each is a ProbeError naming the setting, before anything is sent."""
    with pytest.raises(ProbeError) as err:
        await run_probe("http://127.0.0.1:1/", **kw)
    assert says in str(err.value)
