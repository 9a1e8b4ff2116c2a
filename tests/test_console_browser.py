"""The web console in a real headless Chromium against a real ``dispatchsim serve`` process (real clock).

A real endpoint on 127.0.0.1 fails every POST until the test "fixes" it; a configuration with a
two-try budget turns the outage into a FAILED delivery within a second. Every wait is a poll of a
condition with a deadline. Run locally: ``apt-get install -y chromium`` (or set DISPATCHSIM_CHROMIUM),
``pip install -e '.[test]'``, then ``pytest tests/test_console_browser.py``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ADMIN, ACME, OTHER = "admin-key-console-0000", "acme-key-console-00000", "other-key-console-0000"


class FlakyEndpoint:
    """GET (the verification) answers 200; POST answers 500 until ``fixed`` is set, then 200."""

    def __init__(self) -> None:
        self.fixed = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _answer(self, code: int, text: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def do_GET(self) -> None:
                self._answer(200, b"ok")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.fixed.is_set():
                    self._answer(200, b"ok")
                else:
                    self._answer(500, b"database unavailable")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _until(cond: Callable[[], Any], what: str, deadline: float = 10.0) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.05)


class Serve:
    """``dispatchsim serve`` as a subprocess on a free port, and a JSON client of its API."""

    def __init__(self, tmp: Path) -> None:
        cfg = tmp / "serve.yaml"
        cfg.write_text(f"keys:\n  - {{key: {ADMIN}, admin: true}}\n  - {{key: {ACME}, tenant: acme}}\n"
                       f"  - {{key: {OTHER}, tenant: other}}\ntenants: [acme, other]\nproviders: [crm]\n")
        self.log = open(tmp / "serve.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "dispatchsim.cli", "serve", "--db", str(tmp / "c.db"),
                                      "--port", "0", "--config", str(cfg)],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, line
        self.base = line.split("listening on ")[1].split()[0]

    def call(self, method: str, path: str, body: Any = None, key: str = ACME) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"X-Api-Key": key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def outage(self, url: str, key: str) -> str:
        """A configuration with a two-try budget and one activity; returns its delivery's public id."""
        cfg = self.call("POST", "/api/dispatch-configurations", {
            "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": url,
            "retry": {"base": 0.2, "max_attempts": 2}, "timeouts": {"connect": 2, "total": 5}}, key=key)
        self.call("POST", f"/api/dispatch-configurations/{cfg['id']}/activate", key=key)
        activity = self.call("POST", "/api/activities", {"channel": "SALESMAN"}, key=key)
        return self.call("GET", f"/api/activities/{activity['id']}/deliveries", key=key)["items"][0]["id"]

    def status(self, public: str, key: str = ACME) -> str:
        return self.call("GET", f"/api/deliveries/{public}", key=key)["status"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=20)
        self.log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, FlakyEndpoint, str, str]]:
    endpoint = FlakyEndpoint()
    serve = Serve(tmp_path_factory.mktemp("console"))
    try:
        ours = serve.outage(endpoint.url, ACME)
        theirs = serve.outage(endpoint.url, OTHER)
        _until(lambda: serve.status(ours) == "FAILED" and serve.status(theirs, OTHER) == "FAILED",
               "both deliveries FAILED")
        yield serve, endpoint, ours, theirs
    finally:
        serve.stop()
        endpoint.close()


def _sign_in(page: Any, key: str) -> None:
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")


def test_sign_in_find_the_failed_delivery_force_retry_and_see_it_dispatched(browser, world) -> None:
    serve, endpoint, ours, _ = world

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        _sign_in(page, ACME)
        expect(page.locator("#tenant")).to_have_text("acme")
        page.click("text=Deliveries")
        first = page.locator("#deliveries tbody tr").first
        expect(first).to_have_attribute("data-status", "FAILED")
        first.locator("a").click()
        expect(page.locator("h1")).to_contain_text(ours)
        expect(page.locator("#status")).to_contain_text("FAILED")
        expect(page.locator("#attempts td.code")).to_have_text(["500", "500"])
        assert page.locator("svg.timeline circle.mark.fail").count() == 2
        endpoint.fixed.set()  # the provider fixed their endpoint
        page.click("#action-force-retry")
        page.fill("input[name=reason]", "endpoint fixed, INC-42")
        page.click("#confirm button[type=submit]")
        expect(page.locator("#status")).to_contain_text("DISPATCHED", timeout=10_000)
        expect(page.locator("svg.timeline circle.mark.ok")).to_have_count(1)
        page.click("text=Configurations")
        expect(page.locator("#audit")).to_contain_text("operator.force-retry")
        expect(page.locator("#audit")).to_contain_text("INC-42")

    browser.open(serve.base + "/", check, timeout=30)
    assert serve.status(ours) == "DISPATCHED"


def test_a_wrong_key_is_refused(browser, world) -> None:
    serve = world[0]

    def check(page: Any) -> None:
        from playwright.sync_api import expect

        _sign_in(page, "dsk_this-is-not-a-key-at-all")
        expect(page.locator(".error")).to_contain_text("not valid")
        assert page.locator("#tenant").count() == 0
        response = page.goto(serve.base + "/console/deliveries")
        assert page.url.endswith("/console/login") and response.status == 200  # sent back to sign in

    browser.open(serve.base + "/console/login", check, error_statuses=True, timeout=30)


def test_another_tenants_ids_are_refused(browser, world) -> None:
    serve, _, _, theirs = world

    def check(page: Any) -> None:
        _sign_in(page, ACME)
        page.wait_for_selector("#tenant")
        for path in (f"/console/deliveries/{theirs}", f"/console/deliveries/{theirs}/force-retry"):
            response = page.goto(serve.base + path)
            assert response.status == 404, path
            assert theirs in page.locator(".error").inner_text() and "not found" in page.content()
        response = page.goto(serve.base + "/console/deliveries/msg_doesnotexist")
        assert response.status == 404

    browser.open(serve.base + "/console/login", check, error_statuses=True, timeout=30)
    assert serve.status(theirs, OTHER) == "FAILED"


def test_an_action_without_its_csrf_token_is_refused_in_the_browser(browser, world) -> None:
    serve, _, ours, _ = world

    def check(page: Any) -> None:
        _sign_in(page, ACME)
        page.wait_for_selector("#tenant")
        page.goto(serve.base + f"/console/deliveries/{ours}/replay")
        page.locator("#confirm input[name=csrf_token]").evaluate("e => e.remove()")
        page.fill("input[name=reason]", "no token")
        with page.expect_navigation() as nav:
            page.click("#confirm button[type=submit]")
        assert nav.value.status == 403
        assert "CSRF" in page.locator(".error").inner_text()

    browser.open(serve.base + "/console/login", check, error_statuses=True, timeout=30)
    replays = [a for a in serve.call("GET", f"/api/deliveries/{ours}/attempts")["items"] if a["replay"]]
    assert replays == []


def test_an_action_without_its_csrf_token_is_refused_to_a_plain_http_client(world) -> None:
    serve, _, ours, _ = world

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    login = urllib.request.Request(serve.base + "/console/login", data=f"api_key={ACME}".encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as signed_in:
        opener.open(login, timeout=10)
    signed_in.value.close()
    assert signed_in.value.code == 303
    cookie = signed_in.value.headers["Set-Cookie"].split(";")[0]
    with opener.open(urllib.request.Request(serve.base + "/console/", headers={"Cookie": cookie}), timeout=10) as r:
        token = re.search(r'name="csrf_token" value="([^"]+)"', r.read().decode()).group(1)
    for body in ("reason=no+token", "reason=wrong+token&csrf_token=" + "x" * len(token)):
        req = urllib.request.Request(serve.base + f"/console/deliveries/{ours}/replay", data=body.encode(),
                                     method="POST", headers={"Cookie": cookie})
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(req, timeout=10)
        refused.value.close()
        assert refused.value.code == 403
    req = urllib.request.Request(serve.base + f"/console/deliveries/{ours}/replay", data=b"reason=x&csrf_token=x",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        opener.open(req, timeout=10)
    anonymous.value.close()
    assert anonymous.value.code == 401
