"""A real headless Chromium (Debian's package) driven by Playwright, for tests of pages we generate.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``.ci/run`` installs it
with apt-get). Playwright's sync API keeps an event loop running in the thread that uses it, which
would stop the tests' own ``asyncio.run``; so the browser lives in a thread of its own and a test
hands it a check to run on a page: ``browser.visit(path, check)`` returns what ``check(page)``
returns and fails on any console error, uncaught exception or request leaving the page's file.
"""
from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM = os.environ.get("DISPATCHSIM_CHROMIUM", "/usr/bin/chromium")
#: quiet, offline Chromium: no GPU, no background traffic to the outside (plus --no-sandbox as root)
FLAGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]


def missing_reason() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return None


@dataclass
class PageProblems:
    """What went wrong while a page was open: each list must stay empty."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)

    def assert_none(self) -> None:
        assert not self.console_errors, f"console errors: {self.console_errors}"
        assert not self.page_errors, f"uncaught exceptions: {self.page_errors}"
        assert not self.outside_requests, f"requests outside the page: {self.outside_requests}"


class Browser:
    """One Chromium for the test session, in its own thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[Any], Any], Future[Any]] | None] = queue.Queue()
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="chromium", daemon=True)
        self._thread.start()
        ready.result(timeout=60)

    def _main(self, ready: Future[None]) -> None:
        from playwright.sync_api import sync_playwright

        args = FLAGS + (["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            while (job := self._jobs.get()) is not None:
                fn, fut = job
                try:
                    fut.set_result(fn(browser))
                except BaseException as exc:
                    fut.set_exception(exc)
        finally:
            browser.close()
            pw.stop()

    def visit(self, path: Path, check: Callable[[Any], T], *, timeout: float = 60.0) -> T:
        """Open the local file ``path``, run ``check(page)``, then fail on any problem seen."""
        url = path.resolve().as_uri()
        return self.open(url, check, allowed=lambda u: u == url, timeout=timeout)

    def open(self, url: str, check: Callable[[Any], T], *, allowed: Callable[[str], bool] | None = None,
             error_statuses: bool = False, timeout: float = 60.0) -> T:
        """Open ``url`` in a fresh context (no cookies), run ``check(page)``, then fail on any problem
        seen; requests are allowed to ``url``'s origin only (or where ``allowed`` says).
        ``error_statuses``: the check expects 4xx pages, so Chromium's "Failed to load resource: the
        server responded with a status of …" lines are not errors (every other console error is)."""
        origin = "/".join(url.split("/")[:3]) + "/"
        ok = allowed or (lambda u: u.startswith(origin))

        def job(browser: Any) -> T:
            problems = PageProblems()
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            try:
                page = context.new_page()
                def console(m: Any) -> None:
                    expected = error_statuses and m.text.startswith("Failed to load resource: the server responded")
                    if m.type == "error" and not expected:
                        problems.console_errors.append(m.text)

                page.on("console", console)
                page.on("pageerror", lambda exc: problems.page_errors.append(str(exc)))

                def route(r: Any) -> None:
                    if ok(r.request.url):
                        r.continue_()
                    else:
                        problems.outside_requests.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.goto(url, wait_until="load")
                result = check(page)
                problems.assert_none()
                return result
            finally:
                context.close()

        fut: Future[T] = Future()
        self._jobs.put((job, fut))
        return fut.result(timeout=timeout)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)
