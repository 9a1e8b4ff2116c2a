"""Secrets at the edge: a receiver that echoes credentials back never gets them stored, logged or served.

A real aiohttp receiver on 127.0.0.1 echoes each kind of credential (API-key header value, bearer token,
basic ``user:password`` and its base64 token, signing secret and its ``whsec_`` key) with the secret
starting at every offset around every cut-off a text goes through:

* the stored excerpt of a response body (``EXCERPT_CAP``, 1 KiB, ours);
* the body read limit (``BODY_READ_CAP``, 64 KiB, ours, but the excerpt then sees a body cut by it);
* the stored/logged error message (``ERROR_CAP``, 1 KiB, ours), fed by a malformed status line;
* the 100 bytes of an over-long header that aiohttp quotes in its error (someone else's cut);

through activity deliveries, message-event batches (the same dispatcher) and the verification GET of
an activation refused through the HTTP API.

The rule (engine/redact.py): no output contains a run of ``FRAGMENT`` (4) or more consecutive
characters of a secret, unless that run also occurs in the non-secret text around it. The secrets
here are chosen so that none of their 4-character runs occurs in the non-secret text (checked first,
on control cases that echo no secret), which makes the rule exactly: no 4-character run of a secret
in any stored excerpt, attempt error, log line, exception or API response.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dispatchsim.engine import ActivationRefused
from dispatchsim.engine.redact import ERROR_CAP, FRAGMENT, REDACTED, Redactor
from dispatchsim.engine.sender import BODY_READ_CAP, EXCERPT_CAP, Sender
from dispatchsim.server.api import make_app
from dispatchsim.server.keys import KeyRing

API_KEY = "ak~J7q~Wz3~Rv9~Lm2~Xc5~Tb8~Hp4"
BEARER = "br~Qe4~Ty8~Ui2~Op6~As1~Df5~Gh9~Jk3~Lz7"
#: long enough (> 192 characters) that 64 KiB of it scrubbed fits in one excerpt, tail included
LONG_BEARER = "".join(f"{a}{b}~" for a, b in zip("QWERTYUPASDFGHJKLZXCVBNM" * 5, "23456789" * 15))[:300]
EVENTS_TOKEN = "ev~Kd3~Wp8~Zr5~Mb2~Yt6~Nc9~Hx4"
USER, PASSWORD = "ana", "pw~Zk4~Qy7~Mn2~Fd9"
BASIC_TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SIGNING = "whsec_" + base64.b64encode(b"SigKey~0000~ZqXwVmLpJrTnQwErTy").decode()
SECRETS = (API_KEY, BEARER, LONG_BEARER, EVENTS_TOKEN, PASSWORD, BASIC_TOKEN, SIGNING)
#: what each endpoint echoes: every form of the credentials its configuration sends
ECHOED = {
    "KEY": (API_KEY, SIGNING, SIGNING[len("whsec_"):]),
    "BEARER": (BEARER,),
    "BASIC": (PASSWORD, f"{USER}:{PASSWORD}", BASIC_TOKEN),
    "EVENTS": (EVENTS_TOKEN,),
}
ADMIN = "admin-key-000000000000"


def fragments(text: str) -> list[str]:
    """Every run of FRAGMENT characters of a secret found in ``text`` (the leak rule)."""
    return sorted({s[i:i + FRAGMENT] for s in SECRETS for i in range(len(s) - FRAGMENT + 1)
                   if s[i:i + FRAGMENT] in text})


@dataclass(frozen=True)
class Case:
    """One echo: ``secret`` after ``k`` filler characters, returned the way ``how`` says."""

    n: int
    how: str  #: excerpt | status_line | header_line | read_cap
    secret: str
    k: int

    def response(self) -> tuple[int, bytes] | bytes:
        """(status, body) for a well-formed response; raw bytes for a malformed one."""
        echoed = ("." * self.k + self.secret).encode()
        if self.how == "excerpt":
            return 500, echoed + b"." * 16
        if self.how == "read_cap":
            copies = (BODY_READ_CAP - self.k) // len(self.secret) + 2
            return 500, b"." * self.k + self.secret.encode() * copies
        if self.how == "status_line":
            return b"HTTP/1.1 2" + echoed + b"." * 16 + b" OK\r\nContent-Length: 0\r\n\r\n"
        assert self.how == "header_line"  # longer than aiohttp's 8190-byte field limit: it quotes 100 bytes
        return b"HTTP/1.1 500 X\r\nX-Echo: " + echoed + b"." * 9000 + b"\r\nContent-Length: 0\r\n\r\n"


class EchoReceiver:
    """Answers each POST (and each verification GET, once armed) with the echo of its case."""

    def __init__(self) -> None:
        self.cases: dict[int, Case] = {}
        self.get_case: Case | None = None
        self.seen_auth: set[str] = set()
        self.case_of: dict[str, int] = {}  #: webhook-id -> case

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            if self.get_case is None:
                return web.Response(text="ok")
            return await self._answer(request, self.get_case)
        body = json.loads(await request.read())
        self.seen_auth.add(request.headers.get("Authorization") or request.headers.get("X-Key") or "")
        n = body[0]["contactId"] if isinstance(body, list) else int(body["commerceExternalId"].split("-")[1])
        self.case_of[request.headers["webhook-id"]] = n
        return await self._answer(request, self.cases[n])

    async def _answer(self, request: web.Request, case: Case) -> web.StreamResponse:
        answer = case.response()
        if isinstance(answer, tuple):
            status, raw = answer
            return web.Response(status=status, body=raw, content_type="text/plain")
        assert request.transport is not None
        request.transport.write(answer)
        request.transport.close()
        await asyncio.Event().wait()  # cancelled when the connection goes (handler_cancellation)
        raise AssertionError("unreachable")


@pytest.fixture
async def echo(engine) -> AsyncIterator[tuple[EchoReceiver, str]]:
    rec = EchoReceiver()
    app = web.Application()
    app.router.add_route("*", "/hooks", rec.handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rec, f"http://127.0.0.1:{port}/hooks"
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(engine) -> AsyncIterator[aiohttp.ClientSession]:
    runner = web.AppRunner(make_app(engine, keys=KeyRing(engine.store, {ADMIN: None})), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}",
                                         headers={"X-Api-Key": ADMIN}) as session:
            yield session
    finally:
        await runner.cleanup()


async def _get(api: aiohttp.ClientSession, path: str) -> str:
    async with api.get(path) as resp:
        text = await resp.text()
        assert resp.status == 200, text
        return text


def _around(cut_at: int, secret: str) -> range:
    """Every filler length that puts the secret across ``cut_at`` (plus one each side)."""
    return range(max(0, cut_at - len(secret) - 1), cut_at + 2)


async def test_no_echoed_secret_escapes_at_any_cut_off(engine, echo, api):
    rec, url = echo
    await engine.add_tenant("acme")
    auths = {"KEY": {"type": "api_key", "header": "X-Key", "value": API_KEY},
             "BEARER": {"type": "bearer", "token": BEARER},
             "BASIC": {"type": "basic", "username": USER, "password": PASSWORD},
             "LONG": {"type": "bearer", "token": LONG_BEARER}}
    for channel, auth in auths.items():
        await engine.add_provider(channel.lower())
        await engine.add_config("acme", channel.lower(), channel, endpoint_url=url, activate=True, auth=auth,
                                signing_secret=SIGNING if channel == "KEY" else None, retry={"max_attempts": 1})
    await engine.events.configure_webhook("acme", {
        "url": url, "auth": {"type": "bearer", "token": EVENTS_TOKEN}, "batch_size": 1, "max_wait": 0,
        "retry": {"max_attempts": 1}})

    cases: list[tuple[str, Case]] = []

    def add(channel: str, how: str, secret: str, k: int) -> Case:
        case = Case(len(cases), how, secret, k)
        cases.append((channel, case))
        rec.cases[case.n] = case
        return case

    async def send(batch: list[tuple[str, Case]]) -> None:
        for channel, case in batch:
            if channel == "EVENTS":
                await engine.events.post("acme", [{"activityStatus": "READ", "contactId": case.n, "messageId": 1}])
            else:
                await engine.create_activity("acme", {"channel": channel, "commerceExternalId": f"case-{case.n}"})
        await engine.run_until_idle(max_time=3600)

    # 1. controls: every kind of answer, echoing no secret: the non-secret text and where errors quote
    controls = {how: add("BEARER", how, "", 0) for how in ("excerpt", "status_line", "header_line")}
    await send(cases)
    by_case = await _attempts_by_case(engine, rec)
    quoted_at = by_case[controls["status_line"].n].error.index("b'HTTP/1.1 2") + len("b'HTTP/1.1 2")
    assert by_case[controls["header_line"].n].error.count(".") >= 100
    assert by_case[controls["excerpt"].n].excerpt == "." * 16
    non_secret = engine.log_buffer.getvalue() + json.dumps([a.to_json() for a in await engine.attempts()]) + "".join(
        [await _get(api, "/api/dispatch-configurations"), await _get(api, "/api/accounts/acme/webhook")])
    assert fragments(non_secret) == [], "the secrets must share no 4-character run with the non-secret text"
    # ... nor with text that differs from run to run (hex ids, times, ports): each run has another character
    assert all(not re.fullmatch(r"[0-9a-f:.TZ-]+", s[i:i + FRAGMENT])
               for s in SECRETS for i in range(len(s) - FRAGMENT + 1))

    # 2. every secret form across every cut-off, through activities and message-event batches
    first = len(cases)
    for channel, forms in ECHOED.items():
        for secret in forms:
            for k in _around(EXCERPT_CAP, secret):
                add(channel, "excerpt", secret, k)
            for k in _around(ERROR_CAP - quoted_at, secret):
                add(channel, "status_line", secret, k)
            for k in _around(100, secret):
                add(channel, "header_line", secret, k)
    for j in (*range(1, 7), len(LONG_BEARER) // 2, *range(len(LONG_BEARER) - 6, len(LONG_BEARER))):
        add("LONG", "read_cap", LONG_BEARER, (BODY_READ_CAP - j) % len(LONG_BEARER))  # cut j chars into a copy
    await send(cases[first:])

    by_case = await _attempts_by_case(engine, rec)
    assert len(by_case) == len(cases)
    assert {API_KEY, f"Bearer {BEARER}", f"Bearer {EVENTS_TOKEN}", f"Basic {BASIC_TOKEN}"} <= rec.seen_auth
    for _, case in cases[first:]:
        a = by_case[case.n]
        stored = f"{a.excerpt}\n{a.error}"
        assert fragments(stored) == [], (case, stored[-300:])
        if case.how == "excerpt":
            assert len(a.excerpt.encode()) <= EXCERPT_CAP
            if case.k + len(case.secret) <= EXCERPT_CAP:  # whole in the excerpt: scrubbed, not just cut off
                assert a.excerpt.startswith("." * case.k), case
                assert REDACTED in a.excerpt[case.k:case.k + len(case.secret)], case
        elif case.how == "read_cap":
            assert REDACTED * 50 in a.excerpt, case  # the 64 KiB were read and scrubbed, then cut
        else:
            assert a.outcome == "PROTOCOL_ERROR" and len(a.error.encode()) <= ERROR_CAP, case

    # 3. the verification GET's answer reaches the API as an error (problem+json) and a log line
    await engine.add_provider("verify")
    for k in _around(100, API_KEY):
        rec.get_case = Case(-1, "header_line", API_KEY, k)
        async with api.post("/api/dispatch-configurations", json={
                "tenant_id": "acme", "provider_id": "verify", "channel": f"V{k}", "endpoint_url": url,
                "auth": {"type": "api_key", "header": "X-Key", "value": API_KEY}}) as resp:
            created = await resp.json()
            assert resp.status == 201, created
        async with api.post(f"/api/dispatch-configurations/{created['id']}/activate") as resp:
            problem = await resp.text()
            assert resp.status >= 400 and "verification GET" in problem, problem
            assert fragments(problem) == [], (k, problem)
        with pytest.raises(ActivationRefused) as refused:
            await engine.activate(created["id"])
        assert fragments(str(refused.value)) == [], (k, str(refused.value))

    # 4. everything else that left: every log line (structlog's JSON output), every API response
    lines = engine.log_buffer.getvalue().splitlines()
    assert len(lines) > len(cases)
    for line in lines:
        assert fragments(line) == [], line
    for path in ("/api/dispatch-configurations", "/api/accounts/acme/webhook", "/api/notifications",
                 "/api/activities"):
        body = await _get(api, path)
        assert fragments(body) == [], (path, body[:300])
    page, batches = "", 0
    while items := json.loads(body := await _get(api, f"/api/accounts/acme/event-batches{page}"))["items"]:
        assert fragments(body) == [], body[:300]
        page, batches = f"?after={items[-1]['id']}", batches + len(items)
    assert batches == sum(1 for channel, _ in cases if channel == "EVENTS")
    for d in await engine.deliveries():
        if d.batch_id is None:  # event batches are served by the event-batches route above
            for path in (f"/api/deliveries/{d.webhook_id}", f"/api/deliveries/{d.webhook_id}/attempts"):
                body = await _get(api, path)
                assert fragments(body) == [], (path, body[:300])


def test_the_rule_catches_the_old_order_cut_then_scrub():
    """Cutting before scrubbing (the bug) leaves a secret's head that the rule sees; scrubbing first does not."""
    r = Redactor(BEARER)
    body = ("." * (EXCERPT_CAP - 10) + BEARER).encode()
    old = r.text(body[:EXCERPT_CAP].decode())
    assert fragments(old) != []
    assert fragments(r.excerpt(body, EXCERPT_CAP) or "") == []


async def _attempts_by_case(engine, rec: EchoReceiver) -> dict[int, dict[str, Any]]:
    """The one attempt of each case, found through the webhook-id the receiver saw."""
    out: dict[int, dict[str, Any]] = {}
    for d in await engine.deliveries():
        [attempt] = await engine.attempts(d.id)
        out[rec.case_of[d.webhook_id]] = attempt
    return out


async def test_an_unparsable_request_is_logged_without_its_bytes(engine):
    """serve logs a request it cannot parse with aiohttp's error, which quotes the request's bytes: they
    may hold any credential, an API key the redaction does not know included, so only the error's
    message is logged, never the bytes (it used to log them scrubbed of the secrets the engine knew)."""
    from dispatchsim.server.serve import _protocol_logger

    engine.redactor.add(API_KEY)
    unknown = "dsk_a-key-nobody-told-the-redaction-0123"
    runner = web.AppRunner(web.Application(), access_log=None, logger=_protocol_logger(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def logged(request: bytes) -> str:
        mark = len(engine.log_buffer.getvalue())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.0 400")
        writer.close()
        [line] = engine.log_buffer.getvalue()[mark:].splitlines()
        event = json.loads(line)
        assert event["event"] == "http.unparsable_request"
        return event["error"]

    try:
        for secret in (API_KEY, unknown):
            for request in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Echo: " + secret.encode() + b"\x01\r\n\r\n",
                            b"GET /?api_key=" + secret.encode() + b" HTTP/1.2\r\n\r\n",
                            b"GET / HTTP/1.1\r\nX-Api-Key: " + secret.encode() * 400 + b"\r\n\r\n"):
                error = await logged(request)
                assert "b'" not in error and fragments(error) == [] and secret[4:12] not in error, error
                assert error.startswith(("BadHttpMessage", "BadStatusLine", "LineTooLong", "InvalidHeader")), error
    finally:
        await runner.cleanup()


async def test_a_sender_keeps_no_cookies():
    """One HTTP client serves every tenant and configuration: a ``Set-Cookie`` from one endpoint must
    never ride along on a later request (the same tenant's, or another tenant's to the same host).
    Real clock and a host name, because aiohttp's default jar ignores cookies of IP-address hosts."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        return web.Response(text="ok", headers={"Set-Cookie": f"session=tenant-{len(seen)}; Path=/"})

    app = web.Application()
    app.router.add_post("/hooks", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sender = Sender(now=time.time)
    await sender.start()
    try:
        for _ in range(3):
            out = await sender.exchange("POST", f"http://localhost:{port}/hooks", headers={}, data=b"{}",
                                        connect=5, total=5)
            assert out.status == 200, out
    finally:
        await sender.close()
        await runner.cleanup()
    assert seen == [None, None, None]


async def test_a_request_the_client_refuses_to_build_is_a_failed_try_without_the_password():
    """Configurations cannot combine credentials in the URL with an Authorization header any more,
    but if a request still cannot be built, the try fails like any other (no exception escapes)."""
    sender = Sender(now=time.time)
    await sender.start()
    try:
        out = await sender.exchange("POST", "http://u:pw-S3cret@127.0.0.1:9/hooks", headers={"Authorization": "x"},
                                    data=b"{}", connect=5, total=5)
    finally:
        await sender.close()
    assert out.kind.value == "PROTOCOL_ERROR" and out.error and "S3cret" not in out.error, out
