"""Each endpoint behaviour, seen by a real aiohttp client over 127.0.0.1 on virtual time."""
from __future__ import annotations

import asyncio
import base64
import errno
import json
import math
import random
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime

import aiohttp
import pytest

from dispatchsim.providers import EndpointSet, ProviderConfigError, parse_config, sign


def client(total: float = 10.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total, ceil_threshold=10**9))


@asynccontextmanager
async def endpoint(behaviour=None, *, seed: int = 0, now=None, **spec):
    if behaviour is not None:
        spec["behaviour"] = behaviour
    async with EndpointSet(parse_config({"endpoints": {"a": spec}}), seed=seed, now=now) as es:
        yield es


async def post(es, payload=None, *, total: float = 10.0, **kw):
    """POST and read the body; returns (status, body, headers) or raises the client's exception."""
    async with client(total) as s:
        async with s.post(es.url("a"), json=payload if payload is not None else {"id": "act-1"},
                          allow_redirects=False, **kw) as r:
            return r.status, await r.read(), r.headers


def elapsed_since(t: float) -> float:
    return asyncio.get_running_loop().time() - t


# ------------------------------------------------------------------ answers


async def test_success_with_chosen_status_and_body():
    async with endpoint({"status": 202, "body": {"accepted": True}}) as es:
        status, body, headers = await post(es)
        await es.settle()
    assert (status, json.loads(body)) == (202, {"accepted": True})
    assert headers["Content-Type"].startswith("application/json")
    [rec] = es.recorder.records
    assert rec.acknowledged and rec.response_status == 202 and rec.json == {"id": "act-1"}


async def test_default_is_200_ok():
    async with endpoint() as es:
        assert (await post(es))[:2] == (200, b'{"ok":true}')


@pytest.mark.parametrize("status", [400, 404, 409, 500, 502, 504])
async def test_error_statuses(status):
    async with endpoint({"status": status, "body": "nope"}) as es:
        got, body, headers = await post(es)
    assert (got, body) == (status, b"nope")
    assert headers["Content-Type"].startswith("text/plain")
    assert not es.recorder.records[0].acknowledged


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_is_not_followed_by_a_careful_sender(status):
    async with endpoint({"status": status, "location": "https://elsewhere.invalid/hooks"}) as es:
        got, _, headers = await post(es)
    assert got == status and headers["Location"] == "https://elsewhere.invalid/hooks"


async def test_redirect_followed_by_a_naive_client_lands_on_404():
    async with endpoint({"status": 307}) as es:
        async with client() as s, s.post(es.url("a"), json={"id": "x"}) as r:
            assert r.status == 404
    assert [(r.path, r.response_status) for r in es.recorder.records] == [("/hooks", 307), ("/moved", 404)]
    assert es.recorder.records[1].note == "no such path"


@pytest.mark.parametrize(("value", "header"), [(120, "120"), ("2m", "120"), ("1.2s", "2"),
                                               ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT")])
async def test_retry_after_seconds_or_literal_date(value, header):
    async with endpoint({"status": 503, "retry_after": value}) as es:
        status, _, headers = await post(es)
    assert status == 503 and headers["Retry-After"] == header


async def test_retry_after_as_http_date_from_the_clock():
    loop = asyncio.get_running_loop()
    epoch = 1_776_000_000.0
    async with endpoint({"status": 429, "retry_after_date": "10m"}, now=lambda: epoch + loop.time()) as es:
        await asyncio.sleep(30)
        status, _, headers = await post(es)
    when = parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert status == 429 and when == epoch + 30 + 600


# ------------------------------------------------------------------ latency


async def test_fixed_latency_delays_the_answer_exactly():
    async with endpoint({"status": 200, "latency": "2500ms"}) as es:
        t = asyncio.get_running_loop().time()
        assert (await post(es))[0] == 200
        assert elapsed_since(t) == pytest.approx(2.5)
    assert es.recorder.records[0].latency == 2.5


@pytest.mark.parametrize(("spec", "draw"), [
    ({"uniform": ["100ms", "3s"]}, lambda rng: rng.uniform(0.1, 3.0)),
    ({"normal": {"mean": "2s", "stddev": "500ms"}}, lambda rng: max(0.0, rng.normalvariate(2.0, 0.5))),
    ({"lognormal": {"median": "1s", "sigma": 0.8}}, lambda rng: rng.lognormvariate(math.log(1.0), 0.8)),
])
async def test_latency_distributions_draw_from_the_seeded_rng(spec, draw):
    rng = random.Random("3:a")
    expected = [draw(rng) for _ in range(5)]
    loop = asyncio.get_running_loop()
    got = []
    async with endpoint({"status": 200, "latency": spec}, seed=3) as es:
        for _ in range(5):
            t = loop.time()
            await post(es, total=60)
            got.append(elapsed_since(t))
    assert [r.latency for r in es.recorder.records] == pytest.approx(expected)
    assert got == pytest.approx(expected, abs=1e-6)
    assert len(set(expected)) == 5


async def test_latency_longer_than_client_timeout_is_a_timeout_and_not_acknowledged():
    async with endpoint({"status": 200, "latency": "30s"}) as es:
        t = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.TimeoutError):
            await post(es, total=5)
        assert elapsed_since(t) == 5.0
        await es.settle()
    rec = es.recorder.records[0]
    assert rec.client_disconnected and rec.response_status is None and not rec.acknowledged
    assert rec.duration == 5.0


# ------------------------------------------------------------------ faults


async def test_hang_times_out_after_exactly_the_client_timeout():
    async with endpoint("hang") as es:
        t = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.TimeoutError):
            await post(es, total=7)
        assert elapsed_since(t) == 7.0
        await es.settle()
    rec = es.recorder.records[0]
    assert (rec.fault, rec.response_status, rec.client_disconnected, rec.duration) == ("hang", None, True, 7.0)


async def test_headers_then_stall_gives_a_status_then_times_out_reading():
    async with endpoint({"fault": "headers_then_stall", "status": 200}) as es:
        loop = asyncio.get_running_loop()
        t = loop.time()
        async with client(total=9) as s:
            async with s.post(es.url("a"), json={"id": "x"}) as r:
                assert r.status == 200
                assert elapsed_since(t) == 0
                with pytest.raises(asyncio.TimeoutError):
                    await r.read()
        assert elapsed_since(t) == 9.0
        await es.settle()
    rec = es.recorder.records[0]
    assert rec.fault == "headers_then_stall" and rec.client_disconnected and not rec.acknowledged


async def test_slow_body_dribbles_bytes_until_complete():
    async with endpoint({"fault": "slow_body", "body": "0123456789", "chunk": 2, "interval": "1s"}) as es:
        t = asyncio.get_running_loop().time()
        status, body, _ = await post(es, total=60)
        assert elapsed_since(t) == pytest.approx(4.0)
    assert (status, body) == (200, b"0123456789")
    assert es.recorder.records[0].acknowledged


async def test_slow_body_slower_than_the_client_timeout():
    async with endpoint({"fault": "slow_body", "body": "0123456789", "interval": "1s"}) as es:
        with pytest.raises(asyncio.TimeoutError):
            await post(es, total=3.5)
        await es.settle()
    rec = es.recorder.records[0]
    assert rec.client_disconnected and not rec.acknowledged and rec.duration == 3.5


async def test_truncated_body_is_a_payload_error():
    async with endpoint({"fault": "truncated", "body": '{"ok":true,"padding":"xxxxxxxx"}', "send": 5}) as es:
        with pytest.raises(aiohttp.ClientPayloadError, match="not completed"):
            await post(es)
    rec = es.recorder.records[0]
    assert (rec.fault, rec.response_status, rec.acknowledged) == ("truncated", 200, False)


async def test_garbage_is_a_protocol_error():
    async with endpoint({"fault": "garbage", "data": "SMTP ready\r\n\r\n"}) as es:
        with pytest.raises(aiohttp.ClientResponseError) as info:
            await post(es)
    # aiohttp reports an unparseable response as a 400 — classify by exception, not status
    assert info.value.status == 400 and "Bad status line" in info.value.message
    assert es.recorder.records[0].fault == "garbage"


async def test_garbage_default_bytes_are_seeded():
    async def garbage(seed: int) -> str:
        async with endpoint("garbage", seed=seed) as es:
            with pytest.raises(aiohttp.ClientResponseError, match="Bad status line") as info:
                await post(es)
        return info.value.message

    first = await garbage(11)
    assert await garbage(11) == first
    assert await garbage(12) != first


async def test_reset_is_a_connection_reset():
    async with endpoint("reset") as es:
        with pytest.raises(aiohttp.ClientOSError) as info:
            await post(es)
    assert info.value.errno == errno.ECONNRESET
    assert not isinstance(info.value, aiohttp.ServerDisconnectedError)
    assert es.recorder.records[0].fault == "reset"


async def test_close_without_response_is_server_disconnected():
    async with endpoint({"fault": "close", "latency": "3s"}) as es:
        t = asyncio.get_running_loop().time()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(es)
        assert elapsed_since(t) == 3.0
    rec = es.recorder.records[0]
    assert rec.fault == "close" and not rec.client_disconnected


async def test_refuse_means_connection_refused():
    async with endpoint("refuse") as es:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await post(es)
        assert not es.endpoint("a").listening
    assert info.value.os_error.errno == errno.ECONNREFUSED
    assert es.recorder.records == []


async def test_refuse_window_closes_and_reopens_the_same_port():
    loop = asyncio.get_running_loop()
    behaviour = {"windows": [{"from": "10m", "to": "6h", "fault": "refuse"}]}
    async with endpoint(behaviour) as es:
        port = es.ports["a"]
        assert (await post(es))[0] == 200
        await asyncio.sleep(600)
        with pytest.raises(aiohttp.ClientConnectorError):
            await post(es)
        await asyncio.sleep(6 * 3600 - 600 - 1)
        with pytest.raises(aiohttp.ClientConnectorError):
            await post(es)
        await asyncio.sleep(1)
        assert es.ports["a"] == port
        assert (await post(es))[0] == 200
    assert [(e.event, e.at - es.t0) for e in es.recorder.events] == [("down", 600.0), ("up", 21600.0)]
    assert loop.time() - es.t0 == 21600.0


async def test_going_down_drops_connections_in_flight():
    async with endpoint("hang") as es:
        task = asyncio.create_task(post(es, total=60))
        await asyncio.sleep(1)
        es.set_behaviour("a", "refuse")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await task


async def test_set_behaviour_at_run_time():
    async with endpoint() as es:
        port = es.ports["a"]
        assert (await post(es))[0] == 200
        es.set_behaviour("a", "refuse")
        with pytest.raises(aiohttp.ClientConnectorError):
            await post(es)
        es.set_behaviour("a", {"status": 503})
        assert (await post(es))[0] == 503
        assert es.ports["a"] == port
        with pytest.raises(ProviderConfigError, match=r"set_behaviour\('a'\): status"):
            es.set_behaviour("a", {"status": "teapot"})


# ------------------------------------------------------------------ choosing per request


async def test_probability_mix_follows_the_seeded_draws():
    behaviour = {"mix": [{"p": 0.3, "status": 503}, {"p": 0.05, "fault": "hang"}, {"status": 200}]}
    rng = random.Random("7:a")
    expected = []
    for _ in range(300):
        x = rng.random()
        expected.append(503 if x < 0.3 else "hang" if x < 0.35 else 200)
    got = []
    async with endpoint(behaviour, seed=7) as es:
        for _ in range(300):
            try:
                got.append((await post(es, total=1))[0])
            except asyncio.TimeoutError:
                got.append("hang")
    assert got == expected
    assert 60 < got.count(503) < 120 and 3 < got.count("hang") < 30


async def test_sequence_fails_the_first_three_then_succeeds():
    behaviour = {"sequence": [{"times": 3, "status": 503, "retry_after": 60}, {"status": 200}]}
    async with endpoint(behaviour) as es:
        got = [(await post(es))[0] for _ in range(6)]
        es.set_behaviour("a", behaviour)  # counters restart
        again = [(await post(es))[0] for _ in range(2)]
    assert got == [503, 503, 503, 200, 200, 200] and again == [503, 503]


async def test_sequence_can_cycle_and_nest():
    behaviour = {"sequence": [{"status": 500}, {"times": 2, "sequence": [{"status": 201}, {"status": 202}]}],
                 "cycle": True}
    async with endpoint(behaviour) as es:
        got = [(await post(es))[0] for _ in range(7)]
    assert got == [500, 201, 202, 500, 202, 202, 500]


async def test_time_windows_on_the_clock():
    loop = asyncio.get_running_loop()
    behaviour = {"windows": [{"from": "10m", "to": "6h", "status": 503}, {"from": "7h", "fault": "close"}],
                 "else": {"status": 204}}
    async with endpoint(behaviour, now=lambda: 1_000_000 + loop.time()) as es:
        seen = []
        for at in (0, 599, 600, 21599, 21600, 25199):
            await asyncio.sleep(es.t0 + at - es.now())
            seen.append((await post(es))[0])
        await asyncio.sleep(3600)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await post(es)
    assert seen == [204, 204, 503, 503, 204, 204]
    assert [r.offset for r in es.recorder.records][:3] == [0, 599, 600]


# ------------------------------------------------------------------ receiver checks


@pytest.mark.parametrize(("auth", "good", "bad"), [
    ({"type": "api_key", "header": "X-Api-Key", "value": "k1"}, {"X-Api-Key": "k1"}, {"X-Api-Key": "k2"}),
    ({"type": "bearer", "token": "t0k"}, {"Authorization": "Bearer t0k"}, {"Authorization": "Bearer nope"}),
    ({"type": "basic", "username": "u", "password": "p"},
     {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}, {}),
])
async def test_auth_is_checked_and_redacted(auth, good, bad):
    async with endpoint(auth=auth) as es:
        assert (await post(es, headers=good))[0] == 200
        status, _, headers = await post(es, headers=bad)
    assert status == 401
    if auth["type"] != "api_key":
        assert "WWW-Authenticate" in headers
    ok, rejected = es.recorder.records
    assert ok.acknowledged and rejected.note.startswith("auth:")
    secret = "x-api-key" if auth["type"] == "api_key" else "authorization"
    assert ok.headers[secret] == "***"
    assert "k1" not in es.recorder.jsonl() and "t0k" not in es.recorder.jsonl()


async def test_a_down_endpoint_does_not_look_at_credentials():
    auth = {"type": "bearer", "token": "t"}
    async with endpoint({"status": 503}, auth=auth) as es:
        assert (await post(es))[0] == 503


async def test_standard_webhooks_signature():
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
    body = json.dumps({"id": "act-1"}).encode()

    def headers(sig: str, ts: str = "1776000000") -> dict[str, str]:
        return {"webhook-id": "msg_1", "webhook-timestamp": ts, "webhook-signature": sig,
                "Content-Type": "application/json"}

    good = sign(secret, "msg_1", 1776000000, body)
    other = "v1," + base64.b64encode(b"x" * 32).decode()
    async with endpoint(signing_secret=secret) as es:
        async with client() as s:
            async def status(h):
                async with s.post(es.url("a"), data=body, headers=h) as r:
                    return r.status
            assert await status(headers(good)) == 200
            assert await status(headers(f"{other} {good}")) == 200  # any listed signature may match
            assert await status(headers(other)) == 401
            assert await status(headers(good, ts="1776000001")) == 401
            assert await status({"Content-Type": "application/json"}) == 401
    notes = [r.note for r in es.recorder.records]
    assert notes[:2] == [None, None] and all(n.startswith("signature:") for n in notes[2:])


async def test_signature_with_a_plain_secret_and_tolerance():
    loop = asyncio.get_running_loop()
    now = lambda: 1_776_000_000 + loop.time()  # noqa: E731
    async with endpoint(signing_secret="plain-secret", signature_tolerance="5m", now=now) as es:
        body = b'{"id":"a"}'
        async with client() as s:
            for ts, want in ((int(now()), 200), (int(now()) - 400, 401)):
                h = {"webhook-id": "m", "webhook-timestamp": str(ts),
                     "webhook-signature": sign("plain-secret", "m", ts, body)}
                async with s.post(es.url("a"), data=body, headers=h) as r:
                    assert r.status == want
    assert es.recorder.records[1].note == "signature: webhook-timestamp outside tolerance"


async def test_schema_required_fields():
    async with endpoint(schema={"required": ["id", "type", "reason.code"]}) as es:
        assert (await post(es, {"id": "1", "type": "TASK", "reason": {"code": "C"}}))[0] == 200
        status, body, _ = await post(es, {"id": "1", "type": "TASK"})
        assert (status, json.loads(body)) == (400, {"error": "schema: missing reason.code"})
        ok_batch = [{"id": "1", "type": "T", "reason": {"code": "C"}}]
        assert (await post(es, ok_batch))[0] == 200
        assert (await post(es, ok_batch + [{"id": "2"}]))[0] == 400
        async with client() as s, s.post(es.url("a"), data=b"not json") as r:
            assert r.status == 400
    assert es.recorder.records[3].note == "schema: missing [1].type"
    assert es.recorder.records[4].note == "schema: body is not JSON"


@pytest.mark.parametrize(("verify_get", "expected"), [(None, 200), ({"status": 403}, 403), (204, 204)])
async def test_verification_get(verify_get, expected):
    spec = {"verify_get": verify_get} if verify_get is not None else {}
    async with endpoint({"status": 503}, auth={"type": "bearer", "token": "t"}, **spec) as es:
        async with client() as s, s.get(es.url("a")) as r:
            assert r.status == expected
    assert es.recorder.deliveries() == {}


async def test_verification_get_can_fail_too():
    async with endpoint(verify_get="reset") as es:
        async with client() as s:
            with pytest.raises(aiohttp.ClientOSError):
                async with s.get(es.url("a")):
                    pass
        assert (await post(es))[0] == 200


async def test_unknown_path_is_404():
    async with endpoint(path="/in") as es:
        assert es.url("a").endswith("/in")
        async with client() as s, s.post(es.url("a", "/other"), json={"id": "x"}) as r:
            assert r.status == 404


# ------------------------------------------------------------------ results callback


async def test_results_callback_posts_the_activity_result_after_a_delay():
    sender_cfg = parse_config({"endpoints": {"reten": {"path": "/api/integration/activity-results/tasks"}}})
    async with EndpointSet(sender_cfg) as sender:
        callback = {"url": sender.url("reten"), "delay": "5s", "api_key": "reten-key", "header": "X-Reten-Key",
                    "result": {"outcome": "VISITED"}}
        async with endpoint(results_callback=callback) as es:
            t0 = asyncio.get_running_loop().time()
            await post(es, {"id": "act-9"})
            await post(es, {"id": "act-9"})  # a duplicate delivery does not report twice
            await asyncio.sleep(10)
        [got] = sender.recorder.records
    assert got.at - t0 == 5.0
    assert got.json == {"activity_id": "act-9", "status": "COMPLETED", "result": {"outcome": "VISITED"}}
    assert got.headers["x-reten-key"] == "reten-key"
    [cb] = es.recorder.callbacks
    assert (cb.activity_id, cb.status, cb.error) == ("act-9", 200, None)


async def test_no_callback_when_not_acknowledged_and_errors_are_recorded():
    callback = {"url": "http://127.0.0.1:9/nowhere", "delay": "1s"}
    async with endpoint({"sequence": [{"status": 500}, {"status": 200}]}, results_callback=callback) as es:
        await post(es, {"id": "a"})
        await asyncio.sleep(5)
        assert es.recorder.callbacks == []
        await post(es, {"id": "a"})
        await asyncio.sleep(5)
    [cb] = es.recorder.callbacks
    assert cb.status is None and cb.error.startswith("ClientConnectorError")


async def test_pending_callbacks_are_cancelled_on_stop():
    async with endpoint(results_callback={"url": "http://127.0.0.1:9/x", "delay": "1h"}) as es:
        await post(es)
    assert es.recorder.callbacks == []
