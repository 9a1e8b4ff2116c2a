"""Pieces of the chaos runs: a recording receiver, a real ``dispatchsim serve`` process, a load
generator, and the tally that says whether anything acknowledged was lost.

Everything is real: the serve process is started with the CLI on a SQLite file, the receiver is
an HTTP server on 127.0.0.1, activities arrive over HTTP. Waiting is always for a condition with a
deadline (:func:`wait_for`), never a fixed sleep.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ADMIN_KEY = "chaos-admin-key-0000000000"
TENANT_KEY = "chaos-acme-key-00000000000"
OTHER_KEY = "chaos-other-key-0000000000"
#: the two configurations every run creates: one ordered queue, one unordered
PATHS = ("/ordered", "/unordered")


class ChaosError(Exception):
    """A chaos run could not do what it set out to do (not a finding: an environment problem)."""


def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something true, or fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise ChaosError(f"timed out after {timeout:g}s waiting for {what}")
        threading.Event().wait(step)


class AnsweringHandler(BaseHTTPRequestHandler):
    """A receiver's request handler: HTTP/1.1 keep-alive, no access log, GET (activation) answers 200,
    ``_answer(status)`` sends a two-byte body; subclasses add ``do_POST``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_GET(self) -> None:
        self._answer(200)


class QuietServer(ThreadingHTTPServer):
    """A threaded server for :class:`AnsweringHandler` subclasses that stays quiet when a sender killed
    mid-request resets its connections (expected in these runs)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Receiver:
    """An endpoint on 127.0.0.1: GET answers 200 (activation); POST records the activity id and the
    ``webhook-id`` and answers 200, or 503 while :attr:`outage` is set."""

    def __init__(self) -> None:
        self.outage = False
        #: POSTs to this path hang, unanswered, until :attr:`release` is set (an attempt in flight)
        self.hold_path: str | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        #: (path, activity id) -> webhook-ids of every copy answered 2xx
        self.delivered: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.refused = 0
        outer = self

        class Handler(AnsweringHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == outer.hold_path and not outer.release.is_set():
                    outer.held.set()
                    outer.release.wait(60)
                    self.close_connection = True
                    return
                if outer.outage:
                    with outer.lock:
                        outer.refused += 1
                    self._answer(503)
                    return
                activity = json.loads(raw)["id"]
                with outer.lock:
                    outer.delivered[(self.path, activity)].append(self.headers.get("webhook-id", ""))
                self._answer(200)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def write_config(folder: Path, *, checkpoint_interval: float = 0.05) -> Path:
    cfg = folder / "serve.yaml"
    cfg.write_text(f"keys:\n  - {{key: {ADMIN_KEY}, admin: true}}\n  - {{key: {TENANT_KEY}, tenant: acme}}\n"
                   f"  - {{key: {OTHER_KEY}, tenant: other}}\ntenants: [acme, other]\nproviders: [crm]\n"
                   f"sweep_interval: 0.5\ncheckpoint_interval: {checkpoint_interval}\n")
    return cfg


class ServeProcess:
    """``python -m dispatchsim serve`` on ``db``; stderr (the event log) goes to ``log``."""

    def __init__(self, db: Path, cfg: Path, log: Path, *, shutdown_deadline: float = 2.0,
                 start_timeout: float = 30.0) -> None:
        self.log = log
        self._err = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchsim", "serve", "--db", str(db), "--port", "0", "--config", str(cfg),
             "--shutdown-deadline", str(shutdown_deadline)],
            stdout=subprocess.PIPE, stderr=self._err, text=True)
        assert self.proc.stdout is not None
        line = _readline(self.proc, start_timeout)
        if "listening on" not in line:
            self.proc.kill()
            self.proc.communicate()
            self._err.close()
            raise ChaosError(f"serve did not start: {line!r}; see {log}")
        self.base = line.split("listening on ")[1].split()[0]
        self.pid = self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        """Exit code and the rest of stdout."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            self._err.close()
            raise ChaosError(f"serve (pid {self.pid}) did not exit within {timeout:g}s") from None
        self._err.close()
        return self.proc.returncode, out

    def kill9(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.wait()[0]


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of ``proc`` within ``timeout`` (a reader thread: readline blocks)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def call(base: str, method: str, path: str, body: Any = None, *, key: str | None = TENANT_KEY,
         raw: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; returns (status, headers, body) for any status."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["X-Api-Key"] = key
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def setup_configs(base: str, receiver: Receiver) -> None:
    """One ordered and one unordered configuration of tenant acme, activated, retrying fast."""
    retry = {"base": 0.05, "factor": 2, "cap": 0.5, "max_attempts": None}
    for path, ordering in zip(PATHS, ({"mode": "ordered"}, {"mode": "none", "concurrency": 8})):
        status, _, raw = call(base, "POST", "/api/dispatch-configurations", {
            "id": path.strip("/"), "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.base + path,
            "retry": retry, "ordering": ordering, "timeouts": {"connect": 2, "total": 5}})
        if status != 201:
            raise ChaosError(f"creating configuration {path}: HTTP {status} {raw[:200]!r}")
        status, _, raw = call(base, "POST", f"/api/dispatch-configurations/{path.strip('/')}/activate")
        if status != 200:
            raise ChaosError(f"activating configuration {path}: HTTP {status} {raw[:200]!r}")


class Load:
    """A thread posting activities to whatever serve is up (``target``); every ``large_every``-th
    activity carries a ``large_bytes`` field. An activity is acknowledged when the API answered 201."""

    def __init__(self, *, seed: int, large_every: int = 5, large_bytes: int = 200_000) -> None:
        self.target: str | None = None
        self.acked: list[str] = []
        self.server_errors: list[str] = []
        self._rng = random.Random(seed)
        self._large_every, self._large_bytes = large_every, large_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            base = self.target
            if base is None:
                self._stop.wait(0.01)
                continue
            self._n += 1
            body: dict[str, Any] = {"channel": "SALESMAN", "commerceExternalId": f"C-{self._rng.randrange(50)}"}
            if self._n % self._large_every == 0:
                body["commerceName"] = "L" * self._large_bytes
            try:
                status, _, raw = call(base, "POST", "/api/activities", body, timeout=5)
            except OSError:
                self._stop.wait(0.01)  # serve is down or going down: not acknowledged
                continue
            if status == 201:
                self.acked.append(json.loads(raw)["id"])
            elif status >= 500 and status != 503:
                self.server_errors.append(f"POST /api/activities: HTTP {status} {raw[:200]!r}")


@dataclass
class Tally:
    """Acknowledged activities (the API answered 201), how many of them are stored and delivered to
    every configuration; (configuration, activity) pairs lost; extra copies and their webhook-ids."""

    acknowledged: int = 0
    stored: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    duplicates_share_webhook_id: bool = True
    integrity: str = "ok"

    @property
    def ok(self) -> bool:
        return not self.lost and self.duplicates_share_webhook_id and self.integrity == "ok"

    def line(self) -> str:
        return (f"acknowledged {self.acknowledged}, stored {self.stored}, delivered {self.delivered}, "
                f"lost {len(self.lost)}, duplicates {self.duplicates} "
                f"({'all share their webhook-id' if self.duplicates_share_webhook_id else 'DIFFERENT webhook-ids'}),"
                f" integrity {self.integrity}")


def tally(db: Path, acked: list[str], receiver: Receiver) -> Tally:
    """Compare the acknowledged activities with the database and with what the receiver got."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored = {r[0] for r in conn.execute("SELECT id FROM activities")}
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    t = Tally(acknowledged=len(acked), stored=len(stored & set(acked)), integrity=integrity)
    with receiver.lock:
        got = {k: list(v) for k, v in receiver.delivered.items()}
    for aid in acked:
        missing = [path for path in PATHS if not got.get((path, aid))]
        t.lost += [f"{path}:{aid}" for path in missing]
        t.delivered += not missing
    for copies in got.values():
        if len(copies) > 1:
            t.duplicates += len(copies) - 1
            t.duplicates_share_webhook_id &= len(set(copies)) == 1
    return t


def settle(db: Path, cfg: Path, log: Path, receiver: Receiver, acked: list[str], timeout: float) -> Tally:
    """End the outage, run one last serve until every acknowledged activity reached both
    configurations, stop it with SIGTERM, and tally. ``timeout`` bounds a wait WITHOUT progress: a
    long run leaves an ordered backlog that drains one head at a time (the 1,000-cycle run left
    8,277), so a fixed deadline would report a slow drain as a loss."""
    receiver.outage = False
    srv = ServeProcess(db, cfg, log)
    want = {(p, a) for p in PATHS for a in acked}
    seen = {"count": -1, "at": time.monotonic()}

    def done_or_stuck() -> bool:
        with receiver.lock:
            got = {k for k, v in receiver.delivered.items() if v}
        if want <= got:
            return True
        if len(got) != seen["count"]:
            seen["count"], seen["at"] = len(got), time.monotonic()
        return time.monotonic() - seen["at"] > timeout

    wait_for(done_or_stuck, float("inf"), "every acknowledged activity to be delivered")  # ends: see above
    srv.signal(signal.SIGTERM)
    srv.wait()
    return tally(db, acked, receiver)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
