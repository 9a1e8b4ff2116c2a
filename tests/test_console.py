"""The web console through a real aiohttp client on 127.0.0.1: sessions, CSRF, tenant privacy, every
page and every action over a real outage (a real receiver, the real engine on the virtual clock).
The same flows in a real browser are in test_console_browser.py."""
from __future__ import annotations

import re
from http.cookies import SimpleCookie
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from dispatchsim.engine import Engine, Status, iso
from support import start_site

from dispatchsim.server.api import make_app
from dispatchsim.server.console_sessions import COOKIE
from dispatchsim.server.keys import KeyRing, create_key, revoke_key, rotate_key

ADMIN = "admin-key-000000000000"
SECRET = "console-signing-secret-value"
TOKEN = "bearer-token-never-shown-123"


@dataclass
class Console:
    http: aiohttp.ClientSession
    engine: Engine
    acme_key: str
    other_key: str

    async def sign_in(self, key: str) -> tuple[int, str]:
        async with self.http.post("/console/login", data={"api_key": key}, allow_redirects=False) as r:
            return r.status, await r.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(path, allow_redirects=False) as r:
            return r.status, await r.text()

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, str | None]:
        async with self.http.post(path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location")

    async def csrf(self, path: str) -> str:
        status, html = await self.get(path)
        assert status == 200, html
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert m, html
        return m.group(1)


@pytest.fixture
async def console(engine: Engine) -> AsyncIterator[Console]:
    for t in ("acme", "other"):
        await engine.add_tenant(t)
    await engine.add_provider("crm")
    now = engine.clock.now()
    _, acme = await create_key(engine.store, tenant_id="acme", name="ops-alice", now=now)
    _, other = await create_key(engine.store, tenant_id="other", now=now)
    app = make_app(engine, keys=KeyRing(engine.store, {ADMIN: None}))
    runner, port = await start_site(app)
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", cookie_jar=jar) as http:
            yield Console(http, engine, acme, other)
    finally:
        await runner.cleanup()


async def _outage(engine: Engine, url: str, *, tenant: str = "acme", n: int = 3, **fields: Any) -> list[int]:
    """``n`` activities whose deliveries end FAILED against a failing endpoint (two tries each)."""
    await engine.add_config(tenant, "crm", "SALESMAN", endpoint_url=url, activate=True,
                            retry={"base": 30, "max_attempts": 2}, signing_secret=SECRET,
                            auth={"type": "bearer", "token": TOKEN}, **fields)
    for _ in range(n):
        await engine.create_activity(tenant, {"channel": "SALESMAN"})
    await engine.run_until_idle()
    return [d.id for d in await engine.deliveries(status=Status.FAILED)
            if await engine.store.delivery_tenant(d.id) == tenant]


async def test_sign_in_sets_a_strict_httponly_session_and_refuses_wrong_and_admin_keys(console: Console) -> None:
    status, _ = await console.get("/")
    assert status == 303
    status, _ = await console.get("/console/deliveries")
    assert status == 303  # to the sign-in page
    status, html = await console.sign_in("dsk_not-a-real-key-00000000")
    assert status == 401 and "not valid" in html
    status, html = await console.sign_in(ADMIN)
    assert status == 403 and "tenant" in html
    async with console.http.post("/console/login", data={"api_key": console.acme_key},
                                 allow_redirects=False) as r:
        assert r.status == 303
        cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert console.acme_key not in cookie
    status, html = await console.get("/console/")
    assert status == 200 and 'id="tenant">acme<' in html and "ops-alice" in html
    # signing out ends the session on the server, not only in the browser
    token = await console.csrf("/console/")
    cookie_value = SimpleCookie(cookie)[COOKIE].value
    status, _, where = await console.post("/console/logout", {"csrf_token": token})
    assert status == 303 and where == "/console/login"
    async with console.http.get("/console/", allow_redirects=False, cookies={COOKIE: cookie_value}) as r:
        assert r.status == 303


async def test_a_session_is_kept_in_the_database_so_a_restarted_server_keeps_it(console: Console, db_path) -> None:
    """On SQLite too: the server stops (its engine closes the file) and one opened anew on the same file
    knows the session, with its CSRF token, until the user signs out there. Sessions used to live in
    the process: a restart signed everyone out."""
    status, _ = await console.sign_in(console.acme_key)
    assert status == 303
    [cookie] = [c for c in console.http.cookie_jar if c.key == COOKIE]
    csrf = await console.csrf("/console/")
    await console.engine.close()
    restarted = await Engine.open(db_path, virtual=True, seed=2)
    runner, port = await start_site(make_app(restarted, keys=KeyRing(restarted.store, {ADMIN: None})))
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", cookies={COOKIE: cookie.value}) as again:
            async with again.get("/console/", allow_redirects=False) as r:
                html = await r.text()
                assert r.status == 200 and 'id="tenant">acme<' in html and f'value="{csrf}"' in html
            async with again.post("/console/logout", data={"csrf_token": csrf}, allow_redirects=False) as r:
                assert r.status == 303
            async with again.get("/console/", allow_redirects=False, cookies={COOKIE: cookie.value}) as r:
                assert r.status == 303
    finally:
        await runner.cleanup()
        await restarted.close()


async def _key_id(engine: Engine, name: str | None) -> str:
    return next(k.id for k in await engine.store.api_keys() if k.name == name and k.revoked_at is None)


@pytest.mark.parametrize("how", ["revoke", "rotate"])
async def test_a_revoked_or_rotated_key_ends_its_console_sessions_at_once(console: Console, receiver, how: str) -> None:
    """``keys revoke`` stops a key at once: its console sessions too, actions included (a session
    used to live on for its 8 hours)."""
    receiver.respond = lambda hit, n: (503, {}, 0.0)
    [failed] = await _outage(console.engine, receiver.url, n=1)
    public = (await console.engine.store.public_delivery_ids([failed]))[failed]
    assert (await console.sign_in(console.acme_key))[0] == 303
    token = await console.csrf(f"/console/deliveries/{public}/force-retry")
    key_id = await _key_id(console.engine, "ops-alice")
    if how == "revoke":
        await revoke_key(console.engine.store, key_id, now=console.engine.clock.now())
    else:
        await rotate_key(console.engine.store, key_id, now=console.engine.clock.now())
    status, html, _ = await console.post(f"/console/deliveries/{public}/force-retry",
                                         {"csrf_token": token, "reason": "after revoke"})
    assert status == 401 and "no longer valid" in html
    assert (await console.engine.delivery(failed)).status == "FAILED"  # nothing was retried
    assert (await console.get("/console/"))[0] == 303  # the session is gone: back to the sign-in page


async def test_failed_first_attempts_timeline_and_no_secrets(console: Console, receiver) -> None:
    receiver.respond = lambda hit, n: (500, {}, 0.0, f"boom {n} token={TOKEN}")
    failed = await _outage(console.engine, receiver.url, n=2)
    assert len(failed) == 2
    receiver.respond = lambda hit, n: (200, {}, 0.0)
    await console.engine.create_activity("acme", {"channel": "SALESMAN"})
    await console.engine.run_until_idle()
    await console.sign_in(console.acme_key)
    status, html = await console.get("/console/deliveries")
    assert status == 200
    order = re.findall(r'<tr data-status="(\w+)">', html)
    assert order == ["FAILED", "FAILED", "DISPATCHED"]
    status, html = await console.get("/console/deliveries?status=DISPATCHED")
    assert re.findall(r'<tr data-status="(\w+)">', html) == ["DISPATCHED"]
    future = iso(console.engine.clock.now() + 3600)[:16]
    status, html = await console.get(f"/console/deliveries?from={future}")
    assert status == 200 and "No delivery matches" in html
    status, html = await console.get("/console/deliveries?from=yesterday")
    assert status == 400 and "from: not a date" in html

    public = (await console.engine.store.public_delivery_ids(failed))[failed[0]]
    status, html = await console.get(f"/console/deliveries/{public}")
    assert status == 200 and 'id="status" class="status-FAILED"' in html
    assert html.count('<td class="code">500</td>') == 2 and "boom" in html
    offsets = [float(x) for x in re.findall(r'data-offset="([\d.]+)"', html)]
    span = float(re.search(r'data-span="([\d.]+)"', html).group(1))
    xs = [float(x) for x in re.findall(r'<circle class="mark \w+" cx="([\d.]+)"', html)]
    assert offsets[0] == pytest.approx(0.0, abs=0.01) and offsets[1] == pytest.approx(30.0, abs=0.01)
    assert xs[1] - xs[0] == pytest.approx(672 * offsets[1] / span, abs=0.05)  # to scale
    for page in ("/console/", "/console/deliveries", f"/console/deliveries/{public}"):
        _, html = await console.get(page)
        assert SECRET not in html and TOKEN not in html and console.acme_key not in html


async def test_actions_need_csrf_and_a_reason_and_are_audited(console: Console, receiver) -> None:
    receiver.respond = lambda hit, n: (503, {}, 0.0)
    failed = await _outage(console.engine, receiver.url, n=1)
    public = (await console.engine.store.public_delivery_ids(failed))[failed[0]]
    await console.sign_in(console.acme_key)
    status, html = await console.get(f"/console/deliveries/{public}/force-retry")
    assert status == 200 and 'name="reason"' in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    status, html, _ = await console.post(f"/console/deliveries/{public}/force-retry", {"reason": "endpoint fixed"})
    assert status == 403 and "CSRF" in html
    status, html, _ = await console.post(f"/console/deliveries/{public}/force-retry",
                                         {"reason": "fixed", "csrf_token": token + "x"})
    assert status == 403
    status, html, _ = await console.post(f"/console/deliveries/{public}/force-retry", {"csrf_token": token})
    assert status == 400 and "reason" in html
    assert (await console.engine.delivery(failed[0])).status == "FAILED"
    receiver.respond = lambda hit, n: (200, {}, 0.0)
    status, _, where = await console.post(f"/console/deliveries/{public}/force-retry",
                                          {"csrf_token": token, "reason": "endpoint fixed (INC-7)"})
    assert status == 303 and where == f"/console/deliveries/{public}"
    assert (await console.engine.delivery(failed[0])).status == "READY"
    await console.engine.run_until_idle()
    assert (await console.engine.delivery(failed[0])).status == "DISPATCHED"
    notes = [n for n in await console.engine.notifications(tenant_id="acme") if n["kind"] == "operator.force-retry"]
    assert len(notes) == 1 and "ops-alice" in notes[0]["message"] and "endpoint fixed (INC-7)" in notes[0]["message"]
    assert '"event": "operator.action"' in console.engine.log_buffer.getvalue()
    _, html = await console.get("/console/")
    assert "operator.force-retry" in html and "INC-7" in html

    # replay of the now DISPATCHED delivery, audited too
    status, _, _ = await console.post(f"/console/deliveries/{public}/replay",
                                      {"csrf_token": token, "reason": "receiver lost it"})
    assert status == 303
    attempts = await console.engine.attempts(failed[0])
    assert attempts[-1].replay and attempts[-1].status_code == 200
    # an action the state does not allow is refused and not audited
    status, html, _ = await console.post(f"/console/deliveries/{public}/force-retry",
                                         {"csrf_token": token, "reason": "again"})
    assert status == 409
    kinds = [n["kind"] for n in await console.engine.notifications(tenant_id="acme")]
    assert kinds.count("operator.force-retry") == 1 and kinds.count("operator.replay") == 1


async def test_a_tenant_sees_its_queues_by_configuration_name(console: Console, receiver) -> None:
    """Serve stores a tenant's configuration ``crm-hook`` as ``crm-hook~<8 hex>``; the API shows a tenant the
    name, and the console showed its queues by the stored id."""
    receiver.respond = lambda hit, n: (500, {}, 0.0)
    failed = await _outage(console.engine, receiver.url, n=2, config_id="crm-hook", scoped=True,
                           ordering={"mode": "ordered", "on_exhausted": "block"})
    await console.sign_in(console.acme_key)
    head = (await console.engine.store.public_delivery_ids(failed))[failed[0]]
    for page in ("/console/", f"/console/deliveries/{head}"):
        status, html = await console.get(page)
        shown = re.sub(r"<[^>]*>", " ", html)  # the text (links may carry the stored id)
        assert status == 200 and "<code>crm-hook</code>" in html and "crm-hook~" not in shown, shown


async def test_recover_since_reenable_and_skip(console: Console, receiver) -> None:
    engine = console.engine
    receiver.respond = lambda hit, n: (500, {}, 0.0)
    start = engine.clock.now()
    failed = await _outage(engine, receiver.url, n=2, ordering={"mode": "ordered", "on_exhausted": "block"},
                           auto_disable={"after_failures": 50})
    cid = (await engine.store.configs("acme"))[0].id
    await console.sign_in(console.acme_key)
    status, html = await console.get("/console/")
    assert status == 200 and "blocks" not in html  # the overview shows the queue, held by its FAILED head
    assert re.search(r"FAILED \(2 attempts\)</td>\s*<td>2</td>", html), html
    assert 'class="auto-disable">on: after 50 failures' in html
    head = (await engine.store.public_delivery_ids(failed))[failed[0]]
    token = await console.csrf(f"/console/deliveries/{head}/skip")
    status, _, _ = await console.post(f"/console/deliveries/{head}/skip", {"csrf_token": token, "reason": "poison"})
    assert status == 303
    assert not (await engine.delivery(failed[0])).blocks_queue
    await engine.run_until_idle()
    status, html, _ = await console.post(f"/console/configs/{cid}/recover", {"csrf_token": token, "reason": "r"})
    assert status == 400 and "since" in html
    receiver.respond = lambda hit, n: (200, {}, 0.0)
    status, _, _ = await console.post(f"/console/configs/{cid}/recover",
                                      {"csrf_token": token, "reason": "outage over", "since": iso(start)[:19]})
    assert status == 303
    await engine.run_until_idle()
    assert {d.status for d in await engine.deliveries()} == {"DISPATCHED"}
    await engine.deactivate(cid)
    status, html = await console.get(f"/console/configs/{cid}/activate")
    assert status == 200 and "Re-enable" in html
    status, _, _ = await console.post(f"/console/configs/{cid}/activate", {"csrf_token": token, "reason": "back"})
    assert status == 303 and (await engine.config_view(cid))["active"]
    kinds = [n["kind"] for n in await engine.notifications(cid)]
    assert kinds[-3:] == ["operator.skip", "operator.recover", "operator.activate"]


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(("body", "headers", "says"), [
    (b"api_key=\xff", {}, "the form cannot be read"),
    (b"api_key=x", {"Content-Type": f"{FORM}; charset=no-such-charset"}, "the form cannot be read"),
    (b"api_key=x", {"Content-Encoding": "gzip"}, "the request body is not valid gzip data"),
    (b"--xx\r\n", {"Content-Type": "multipart/form-data; boundary=yy"}, "multipart boundaries are missing"),
])
async def test_a_sign_in_form_that_cannot_be_read_is_a_400_page(console: Console, body: bytes,
                                                                headers: dict[str, str], says: str) -> None:
    """It was a 500 (an internal error) before any key was looked at."""
    async with console.http.post("/console/login", data=body, headers={"Content-Type": FORM, **headers},
                                 allow_redirects=False) as r:
        assert r.status == 400 and says in await r.text()
        assert "Set-Cookie" not in r.headers
    status, _ = await console.sign_in(console.acme_key)  # the console still answers, on a new connection
    assert status == 303 and (await console.get("/console/"))[0] == 200


async def test_an_action_form_that_cannot_be_read_is_a_400_page_and_changes_nothing(console: Console,
                                                                                    receiver) -> None:
    engine = console.engine
    cid = (await engine.add_config("acme", "crm", "SALESMAN", endpoint_url=receiver.url, activate=False))["id"]
    await console.sign_in(console.acme_key)
    token = await console.csrf(f"/console/configs/{cid}/activate")
    for body, headers, says in [
        (b"\xff=1", {}, "the form cannot be read"),  # read by the CSRF check, before any action
        (f"csrf_token={token}&reason=caf\xe9".encode("latin-1"), {}, "the form cannot be read"),
        (f"csrf_token={token}&reason=back".encode(), {"Content-Encoding": "deflate"}, "not valid deflate data"),
    ]:
        async with console.http.post(f"/console/configs/{cid}/activate", data=body,
                                     headers={"Content-Type": FORM, **headers}, allow_redirects=False) as r:
            assert r.status == 400 and says in await r.text(), body
    assert not (await engine.config_view(cid))["active"]
    assert [n["kind"] for n in await engine.notifications(cid) if n["kind"].startswith("operator.")] == []
    status, _, _ = await console.post(f"/console/configs/{cid}/activate", {"csrf_token": token, "reason": "back"})
    assert status == 303 and (await engine.config_view(cid))["active"]  # the same action, readable, is done


async def test_another_tenants_ids_answer_as_missing_ones(console: Console, receiver) -> None:
    receiver.respond = lambda hit, n: (500, {}, 0.0)
    theirs = await _outage(console.engine, receiver.url, tenant="other", n=1)
    their_public = (await console.engine.store.public_delivery_ids(theirs))[theirs[0]]
    their_config = (await console.engine.store.configs("other"))[0].id
    await console.sign_in(console.acme_key)
    token = await console.csrf("/console/")
    for path, missing in ((f"/console/deliveries/{their_public}", "/console/deliveries/msg_nosuchid"),
                          (f"/console/deliveries/{their_public}/force-retry",
                           "/console/deliveries/msg_nosuchid/force-retry"),
                          (f"/console/configs/{their_config}/recover", "/console/configs/nosuch/recover"),
                          (f"/console/deliveries?config={their_config}", "/console/deliveries?config=nosuch")):
        s1, h1 = await console.get(path)
        s2, h2 = await console.get(missing)
        assert s1 == s2 == 404
        assert h1.replace(their_public, "X").replace(their_config, "X") == \
            h2.replace("msg_nosuchid", "X").replace("nosuch", "X")
    status, _, _ = await console.post(f"/console/deliveries/{their_public}/force-retry",
                                      {"csrf_token": token, "reason": "mine now"})
    assert status == 404
    assert (await console.engine.delivery(theirs[0])).status == "FAILED"
    _, html = await console.get("/console/deliveries")
    assert their_public not in html and "No delivery matches" in html


async def test_message_event_webhook_and_its_batches(console: Console, receiver) -> None:
    engine = console.engine
    receiver.respond = lambda hit, n: (500, {}, 0.0) if n == 1 else (200, {}, 0.0)
    await engine.events.configure_webhook("acme", {"url": receiver.url, "batch_size": 2, "max_wait": 1,
                                                   "signing_secret": SECRET})
    await engine.events.post("acme", [{"activityStatus": "DELIVERED", "messageId": i} for i in range(3)])
    await engine.run_until_idle(max_time=600)
    await console.sign_in(console.acme_key)
    status, html = await console.get("/console/events")
    assert status == 200, console.engine.log_buffer.getvalue()[-1500:]
    assert "acme@events" in html and SECRET not in html
    rows = re.findall(r'<td class="status-(\w+)">', html)
    assert rows == ["DISPATCHED", "DISPATCHED"]
    first = re.findall(r'href="/console/deliveries/([^"]+)"', html)[-1]
    status, html = await console.get(f"/console/deliveries/{first}")
    assert status == 200 and "Batch" in html and '<td class="code">500</td>' in html
    _, html = await console.get("/console/")
    assert 'data-config="acme@events"' in html


async def test_the_list_pages_through_failed_first_then_newest_first_without_gaps(engine: Engine, receiver) -> None:
    """The store's page and cursor, across the FAILED section into DISPATCHED, over two configurations."""
    from dispatchsim.engine import DeliveryFilter

    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    receiver.respond = lambda hit, n: (500, {}, 0.0) if hit.body["channel"] == "BAD" else (200, {}, 0.0)
    for channel in ("BAD", "GOOD"):
        await engine.add_config("acme", "crm", channel, endpoint_url=receiver.url, activate=True,
                                retry={"base": 1, "max_attempts": 1})
    created = []
    for channel in ("GOOD", "BAD", "GOOD", "BAD", "GOOD"):
        await engine.create_activity("acme", {"channel": channel})
        created.append(engine.clock.now())
        await engine.run_until_idle()
        await engine.run_for(10)
    flt = DeliveryFilter(config_ids=tuple(c.id for c in await engine.store.configs("acme")))
    pages, cursor = [], None
    while True:
        rows, cursor = await engine.store.console_deliveries(flt, cursor=cursor, limit=2)
        pages.append([(r.status.value, r.id) for r in rows])
        if cursor is None:
            break
    assert pages == [[("FAILED", 4), ("FAILED", 2)], [("DISPATCHED", 5), ("DISPATCHED", 3)], [("DISPATCHED", 1)]]
    since = DeliveryFilter(config_ids=flt.config_ids, created_from=created[2], created_to=created[4])
    rows, cursor = await engine.store.console_deliveries(since, limit=10)
    assert [r.id for r in rows] == [4, 3] and cursor is None


async def test_a_page_the_database_cannot_answer_is_a_503_page(console: Console) -> None:
    """A lost database connection raises StorageUnavailable, which the console showed as a 400 page
    ("your request is wrong"); it is a 503 page, and the next request once it is back works. The
    failure is injected into the real engine's read; HTTP and SQLite are real."""
    from dispatchsim.engine import StorageUnavailable

    assert (await console.sign_in(console.acme_key))[0] == 303
    real = console.engine.store.ordered_queues

    async def unavailable(*args, **kwargs):
        raise StorageUnavailable("storage unavailable: injected; nothing was stored, retry later")

    console.engine.store.ordered_queues = unavailable
    status, html = await console.get("/console/")
    assert status == 503 and "storage unavailable" in html
    console.engine.store.ordered_queues = real
    assert (await console.get("/console/"))[0] == 200
