"""The interactive API reference (``/api/docs``) in a real headless Chromium against a real ``dispatchsim serve``.

The page must render Swagger UI from the vendored files, list every operation of the OpenAPI document,
log no console error and make no request beyond the server on 127.0.0.1 (it works offline).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from dispatchsim.server.reference import ASSETS

ACME = "acme-key-reference-000"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("reference")
    cfg = tmp / "serve.yaml"
    cfg.write_text(f"keys:\n  - {{key: {ACME}, tenant: acme}}\ntenants: [acme]\nproviders: [crm]\n")
    log = open(tmp / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "dispatchsim.cli", "serve", "--db", str(tmp / "r.db"),
                             "--port", "0", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "listening on" in line, line
        base = line.split("listening on ")[1].split()[0]
        assert base.startswith("http://127.0.0.1:"), base
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
        log.close()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_reference_page_lists_every_operation_offline(browser: Any, served: str) -> None:
    _, _, raw = _get(served + "/api/openapi.json")
    doc = json.loads(raw)
    operations = sorted((method.upper(), path) for path, ops in doc["paths"].items() for method in ops)
    seen: list[str] = []

    def check(page: Any) -> list[tuple[str, str]]:
        from playwright.sync_api import expect

        page.on("request", lambda r: seen.append(r.url))
        blocks = page.locator(".opblock")
        expect(blocks).to_have_count(len(operations), timeout=20_000)
        expect(page.locator(".info .title")).to_contain_text("dispatchsim serve")
        shown = []
        for i in range(blocks.count()):
            block = blocks.nth(i)
            shown.append((block.locator(".opblock-summary-method").inner_text().strip(),
                          block.locator(".opblock-summary-path").get_attribute("data-path")))
        # open one operation: its parameters and the request body's schema render from the models
        page.locator("#operations-activities-list_activities .opblock-summary").click()
        expect(page.locator("#operations-activities-list_activities .parameters")).to_contain_text("dispatch_status")
        return sorted(shown)

    shown = browser.open(served + "/api/docs", check, timeout=60)
    assert shown == operations
    assert all(url.startswith(served) for url in seen), seen  # the page's own requests, after load


def test_the_assets_are_the_vendored_files(served: str) -> None:
    status, headers, page = _get(served + "/api/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    static = resources.files("dispatchsim.server") / "static"
    source = (static / "swagger_ui" / "SOURCE.md").read_text(encoding="utf-8")
    for name, (path, ctype) in ASSETS.items():
        assert f"/api/docs/assets/{name}".encode() in page
        status, headers, body = _get(f"{served}/api/docs/assets/{name}")
        assert status == 200 and headers["Content-Type"].startswith(ctype), name
        assert body == (static / path).read_bytes()
        if path.startswith("swagger_ui/"):  # unchanged since vendored: the hash SOURCE.md records
            assert hashlib.sha256(body).hexdigest() in source, name
    for name in ("LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"):
        assert (static / "swagger_ui" / name).is_file()
    for bad in ("..%2Freference.py", "LICENSE", "nope.js"):
        status, headers, body = _get(f"{served}/api/docs/assets/{bad}")
        assert status == 404 and headers["Content-Type"].startswith("application/problem+json"), bad


def test_the_package_ships_the_assets() -> None:
    """The wheel's package data holds the page and its files (pyproject's package-data globs)."""
    import tomllib

    data = tomllib.loads(Path(__file__).parent.parent.joinpath("pyproject.toml").read_text(encoding="utf-8"))
    package_data = data["tool"]["setuptools"]["package-data"]
    root = Path(__file__).parent.parent / "server"
    shipped = {f"{package[len('dispatchsim.server.'):].replace('.', '/')}/{p.name}"
               for package, globs in package_data.items() if package.startswith("dispatchsim.server.")
               for g in globs for p in (root / package[len("dispatchsim.server."):].replace(".", "/")).glob(g)}
    wanted = {"static/reference.html", *(f"static/{p}" for p, _ in ASSETS.values()),
              *(f"static/swagger_ui/{n}" for n in ("LICENSE", "NOTICE", "SOURCE.md", "swagger-ui-bundle.js.LICENSE.txt"))}
    assert wanted <= shipped, sorted(wanted - shipped)
