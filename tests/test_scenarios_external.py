"""Scenarios against a team's own URL: on the real clock, the provider table and the expectations count
what the engine sent that URL and what it acknowledged, and hard caps bound the rate and the count.

The receiver runs in a thread of its own (its own event loop) because a real-clock scenario runs its
own loop, as `dispatchsim run` does; every run here is a few requests and well under two seconds.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

from dispatchsim.scenarios import ScenarioError, parse_scenario, run_scenario
from dispatchsim.scenarios.report import human, provider_table, to_json


class ThreadedReceiver:
    """A team's endpoint on 127.0.0.1: answers ``status`` to POSTs (200 to the verification GET)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[float, dict]] = []  #: (monotonic time, body)
        self.gets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedReceiver:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/in", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/in"  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            self.gets += 1
            return web.json_response({"ok": True})
        self.posts.append((time.monotonic(), json.loads(await request.read())))
        return web.json_response({"ok": self.status < 300}, status=self.status)


def scenario(url: str, *, count: int, limits: str = "", expect: str = "") -> str:
    return f"""
name: own-url
seed: 3
duration: 60s
providers:
  partner: {{url: "{url}"{limits}}}
tenants: [acme]
configurations:
  - id: partner-sales
    tenant: acme
    provider: partner
    ordering: {{mode: none, concurrency: 5}}
    retry: {{max_attempts: 2, base: 1s}}
    auth: {{type: api_key, header: X-Api-Key, value: partner-s3cret}}
timeline:
  - at: 0s
    create: {{count: {count}}}
{expect}"""


def test_the_provider_table_counts_what_the_engine_sent_the_external_url():
    with ThreadedReceiver() as receiver:
        result = run_scenario(parse_scenario(scenario(receiver.url, count=6, limits=", max_rate: 50/s",
                                                      expect="expect:\n  all_delivered: true\n"
                                                             "  received: {partner: 6}\n  max_duplicates: 0\n")))
    assert len(receiver.posts) == 6 and receiver.gets == 1
    assert result.scenario.clock == "real" and result.counts["DISPATCHED"] == 6
    row = next(r for r in provider_table(result) if r["provider"] == "partner")
    assert (row["requests"], row["acknowledged"], row["outcomes"]) == (6, 6, {"200": 6})
    assert row["latency_p50"] is not None
    assert result.ok, [(c.name, c.observed) for c in result.checks]
    text = human(result)
    assert "partner" in text and "partner-s3cret" not in text
    assert "partner-s3cret" not in json.dumps(to_json(result)) + result.recorder.jsonl()


def test_refusals_of_the_external_url_are_requests_not_acknowledgements():
    with ThreadedReceiver(status=503) as receiver:
        result = run_scenario(parse_scenario(scenario(receiver.url, count=2, limits=", max_rate: 50/s")))
    row = next(r for r in provider_table(result) if r["provider"] == "partner")
    assert row["requests"] == len(receiver.posts) == 4  # 2 deliveries x 2 attempts
    assert row["acknowledged"] == 0 and row["outcomes"] == {"503": 4}
    assert result.counts["FAILED"] == 2


def test_the_request_rate_to_an_external_url_is_capped():
    with ThreadedReceiver() as receiver:
        result = run_scenario(parse_scenario(scenario(receiver.url, count=5, limits=", max_rate: 10/s")))
    assert len(receiver.posts) == 5
    # The slot each request was given, on the sender's clock (arrival times at the receiver jitter with the
    # load, and so could the moment the record was opened, a few statements after the slot was given).
    times = [r.at for r in result.recorder.records if r.method == "POST"]
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.1 - 1e-6, gaps  # 10/s: one request per 0.1 s (the verification GET took the first slot)


def test_the_request_count_to_an_external_url_is_capped_and_the_run_says_so():
    with ThreadedReceiver() as receiver:
        result = run_scenario(parse_scenario(scenario(receiver.url, count=8, limits=", max_rate: 100/s, max_requests: 4",
                                                      expect="expect:\n  all_delivered: true\n")))
    assert len(receiver.posts) == 3 and receiver.gets == 1  # the verification GET counts too
    row = next(r for r in provider_table(result) if r["provider"] == "partner")
    assert row["requests"] == 3
    assert any("max_requests" in text and "4 requests sent to partner" in text for _, text in result.key_events)
    assert not result.ok and not result.idle


@pytest.mark.parametrize("limits, message", [
    (", max_rate: 0", "providers.partner.max_rate"),
    (", max_rate: 500/s", "at most 100/s"),
    (", max_requests: 0", "providers.partner.max_requests"),
    (", behaviour: {status: 200}", "takes only url, max_rate and max_requests"),
])
def test_bad_external_limits_are_refused_with_the_field(limits, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(scenario("http://127.0.0.1:9/in", count=1, limits=limits), source="own.yaml")
    assert message in str(err.value) and "own.yaml:" in str(err.value)


@pytest.mark.parametrize("url, message", [
    ("http://[::1", "not a valid URL"),
    ("http://[zz]/", "not a valid URL"),
    ("http://127.0.0.1:99999/in", "Port out of range"),
    ("http://127.0.0.1:abc/in", "not a valid URL"),
    ("http://a b/in", "spaces or control characters"),
    ("ftp://127.0.0.1/in", "absolute http(s) URL"),
    # with the configuration's auth (an API key in the Authorization header) the client refuses every request
    ("http://u:pw@127.0.0.1:9/in", "both set the Authorization header"),
])
def test_an_external_url_no_client_could_use_is_refused_at_its_line(url, message):
    """These were tracebacks (from the URL parser, or from the HTTP client on the first request)."""
    text = scenario(url, count=1).replace("header: X-Api-Key", "header: Authorization")
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, source="own.yaml")
    assert str(err.value).startswith("own.yaml:6: providers.partner.url: ") and message in str(err.value), err.value
    assert "pw" not in str(err.value)


def test_a_notification_url_no_client_could_use_is_refused_at_its_line():
    text = scenario("http://127.0.0.1:9/in", count=1).replace(
        "    retry: {max_attempts: 2, base: 1s}\n",
        "    retry: {max_attempts: 2, base: 1s}\n    auto_disable: {after_failures: 5, notify_url: 'http://u:p@127.0.0.1:99999/'}\n")
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, source="own.yaml")
    assert "own.yaml:" in str(err.value) and "auto_disable.notify_url: not a valid URL" in str(err.value), err.value


def test_defaults_cap_an_external_url_that_names_no_limits():
    s = parse_scenario(scenario("https://hooks.example.test/in", count=1))
    limits = s.external_limits["partner"]
    assert (limits.max_rate, limits.max_requests) == (5.0, 500)



def test_an_external_url_is_checked_once_where_it_is_declared(monkeypatch):
    """Each configuration of the provider is checked with its URL (the engine's own check of a whole
    configuration), but the URL alone once, not again for every configuration."""
    import dispatchsim.scenarios.parsing as parsing
    from dispatchsim.engine.redact import check_http_url
    from dispatchsim.scenarios import spec

    checked: list[str] = []

    def counted(url, **kw):
        checked.append(url)
        return check_http_url(url, **kw)

    for module in (spec, parsing):  # where the scenario reader checks URLs (or did)
        monkeypatch.setattr(module, "check_http_url", counted, raising=False)
    parse_scenario(scenario("http://127.0.0.1:9/in", count=1))
    assert checked == ["http://127.0.0.1:9/in"]
