"""``dispatchsim serve`` as a real process: SIGTERM with attempts in flight, restart, nothing lost.

These are the only tests with real time: the receiving endpoint answers after a real delay, so
attempts are genuinely in flight when the signal arrives. Each test takes a few seconds.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dispatchsim.engine.errors import ConfigError
from dispatchsim.server.serve import ServeOptions, load_serve_config
from dispatchsim.engine.store import Store
from support import run_sync

ADMIN, ACME = "admin-key-000000000000", "acme-key-0000000000000"


class SlowReceiver:
    """A threaded HTTP endpoint: GET 200 at once, POST 200 after ``delay`` real seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started: list[str] = []
        self.acked: list[str] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.started.append(body["id"])
                time.sleep(outer.delay)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with lock:
                    outer.acked.append(body["id"])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _wait(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


class Serve:
    def __init__(self, db: Path, cfg: Path, deadline: float) -> None:
        self.err = open(db.with_suffix(".log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dispatchsim.cli", "serve", "--db", str(db), "--port", "0", "--config", str(cfg),
             "--shutdown-deadline", str(deadline)], stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        assert "listening on" in line, line
        self.base = line.split("listening on ")[1].split()[0]

    def call(self, method: str, path: str, body=None, key: str = ACME):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"X-Api-Key": key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")

    def terminate(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        self.err.close()
        assert self.proc.returncode == 0, out
        return out


@pytest.fixture
def setup(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"keys:\n  - {{key: {ADMIN}, admin: true}}\n  - {{key: {ACME}, tenant: acme}}\n"
                   "tenants: [acme]\nproviders: [crm]\n")
    receiver = SlowReceiver(delay=0.8)
    try:
        yield tmp_path / "serve.db", cfg, receiver
    finally:
        receiver.close()


def _start_load(srv: Serve, receiver: SlowReceiver, n: int = 8) -> list[str]:
    status, cfg = srv.call("POST", "/api/dispatch-configurations", {
        "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url,
        "ordering": {"mode": "none", "concurrency": 4}, "timeouts": {"connect": 2, "total": 10}})
    assert status == 201
    assert srv.call("POST", f"/api/dispatch-configurations/{cfg['id']}/activate")[0] == 200
    ids = [srv.call("POST", "/api/activities", {"channel": "SALESMAN"})[1]["id"] for _ in range(n)]
    _wait(lambda: len(receiver.started) >= 4)
    return ids


def _counts(db: Path) -> tuple[dict[str, int], int]:
    store = Store(db)
    try:
        leases = store.conn.execute("SELECT COUNT(*) FROM deliveries WHERE lease_until IS NOT NULL").fetchone()[0]
        return run_sync(store.counts()), leases
    finally:
        run_sync(store.close())


def test_sigterm_waits_for_in_flight_and_restart_resumes(setup) -> None:
    db, cfg, receiver = setup
    srv = Serve(db, cfg, deadline=5)
    ids = _start_load(srv, receiver)
    out = srv.terminate()
    assert "0 attempt(s) released" in out
    counts, leases = _counts(db)
    # the 4 in flight finished within the deadline; nothing new was claimed; the rest wait
    assert counts == {"READY": 4, "DISPATCHED": 4, "RETRYING": 0, "FAILED": 0} and leases == 0
    assert sorted(receiver.acked) == sorted(receiver.started) and len(receiver.acked) == 4
    srv = Serve(db, cfg, deadline=5)
    _wait(lambda: _counts(db)[0]["DISPATCHED"] == 8)
    status, page = srv.call("GET", "/api/activities?dispatch_status=DISPATCHED&limit=100")
    assert [a["id"] for a in page["items"]] == ids
    srv.terminate()
    assert sorted(receiver.acked) == sorted(ids)  # each exactly once


def test_sigterm_past_the_deadline_releases_attempts_for_the_next_start(setup) -> None:
    db, cfg, receiver = setup
    srv = Serve(db, cfg, deadline=0.1)
    ids = _start_load(srv, receiver)
    out = srv.terminate()
    assert "4 attempt(s) released" in out
    counts, leases = _counts(db)
    assert counts["READY"] == 8 and leases == 0
    store = Store(db)
    outcomes = [r[0] for r in store.conn.execute("SELECT outcome FROM attempts ORDER BY id")]
    run_sync(store.close())
    assert outcomes == ["INTERRUPTED"] * 4
    srv = Serve(db, cfg, deadline=5)
    _wait(lambda: _counts(db)[0]["DISPATCHED"] == 8)
    srv.terminate()
    assert set(receiver.acked) >= set(ids)  # nothing lost; duplicates only for the 4 interrupted
    dupes = {i for i in ids if receiver.started.count(i) > 1}
    assert len(dupes) <= 4


def test_serve_config_file_is_checked(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    for text, fragment in (("keys: [{key: short, admin: true}]", "16 or more"),
                           ("keys: [{key: aaaaaaaaaaaaaaaaaaaa, admin: true, tenant: x}]", "either admin"),
                           ("tenants: acme", "a list of ids"), ("colour: red", "unknown key")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=fragment):
            load_serve_config(bad, ServeOptions(db="x"))
    good = tmp_path / "good.yaml"
    good.write_text(f"keys: [{{key: {ADMIN}, admin: true}}, {{key: {ACME}, tenant: acme}}]\ntenants: [acme]\n"
                    "retention_days: 30\n")
    opts = load_serve_config(good, ServeOptions(db="x"))
    assert opts.keys == {ADMIN: None, ACME: "acme"} and opts.tenants == ["acme"] and opts.retention_days == 30
    good.write_text(f"keys: [{{key: {ACME}, tenant: 42}}]\ntenants: ['42']\n")  # YAML reads 42 as a number
    assert load_serve_config(good, ServeOptions(db="x")).keys == {ACME: "42"}


def test_keys_cli_stores_only_a_hash(tmp_path, capsys) -> None:
    from dispatchsim.cli import main

    db = tmp_path / "k.db"
    assert main(["keys", "create", "--db", str(db), "--tenant", "acme", "--create-tenant"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("dsk_")
    assert main(["keys", "create", "--db", str(db), "--tenant", "ghost"]) == 2
    store = Store(db)
    try:
        rows = store.conn.execute("SELECT * FROM api_keys").fetchall()
        assert len(rows) == 1 and key not in json.dumps([list(r) for r in rows])
        from dispatchsim.server.keys import KeyRing

        assert run_sync(KeyRing(store).lookup(key)).tenant_id == "acme"
        assert run_sync(KeyRing(store).lookup(key + "x")) is None
    finally:
        run_sync(store.close())


async def test_retention_deletes_old_attempts_of_finished_deliveries_only(tmp_path) -> None:
    store = Store(tmp_path / "r.db")
    try:
        c = store.conn
        c.execute("INSERT INTO tenants VALUES ('t', 't', 0)")
        c.execute("INSERT INTO providers VALUES ('p', 'p', 0)")
        c.execute("INSERT INTO configurations (id, tenant_id, provider_id, channel, version, created_at, updated_at)"
                  " VALUES ('c', 't', 'p', 'S', 1, 0, 0)")
        c.execute("INSERT INTO activities (id, tenant_id, type, channel, payload, created_at) VALUES"
                  " ('a', 't', 'TASK', 'S', '{}', 0)")
        for did, status in ((1, "DISPATCHED"), (2, "RETRYING")):
            c.execute("INSERT INTO deliveries (id, webhook_id, activity_id, config_id, config_version, queue, status,"
                      " budget_started_at, next_attempt_at, created_at, updated_at) VALUES (?, ?, 'a', 'c', 1, 'q', ?,"
                      " 0, 0, 0, 0)", (did, f"w{did}", status))
            for n in (1, 2, 3):
                c.execute("INSERT INTO attempts (delivery_id, number, started_at, finished_at) VALUES (?, ?, ?, ?)",
                          (did, n, n, n))
        assert await store.delete_old_attempts(before=100) == 2  # delivery 1's first two; its last one is kept
        left = [tuple(r) for r in c.execute("SELECT delivery_id, number FROM attempts ORDER BY id")]
        assert left == [(1, 3), (2, 1), (2, 2), (2, 3)]
    finally:
        await store.close()


def _refused_config(tmp_path, capsys, text: str) -> tuple[Path, list[str]]:
    """Serve started with config ``text``: exit 2, nothing started, no database made; (file, stderr lines)."""
    from dispatchsim.cli import main

    cfg = tmp_path / "serve.yaml"
    cfg.write_text(text, encoding="utf-8")
    db = tmp_path / "s.db"
    assert main(["serve", "--db", str(db), "--config", str(cfg), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "0123456789abcdef" not in err and not db.exists()  # the keys themselves are secrets
    return cfg, err.splitlines()


def test_serve_config_names_every_key_entry_mistake_at_its_line_before_starting(tmp_path, capsys) -> None:
    cfg, err = _refused_config(tmp_path, capsys, 'tenants: [acme, "bad id"]\n'
                               "keys:\n"
                               "  - key: 0123456789abcdef0123\n"
                               '    tenant: "bad id"\n'
                               "  - key: 0123456789abcdef0124\n"
                               "    admin: true\n"
                               "    bogus: 1\n"
                               "  - key: 0123456789abcdef0125\n"
                               "    tenant: acme\n"
                               '    name: "a\\e[31m"\n')
    rule = "use 1-64 letters, digits, '_', '-', '.', ':', starting with a letter or digit"
    assert err == [
        f"{cfg}:4: keys[0].tenant: tenant id 'bad id': {rule}",
        f"{cfg}:7: keys[1].bogus: unknown key 'bogus' (known: admin, key, name, tenant)",
        f"{cfg}:10: keys[2].name: key name: U+001B at position 2 is a control or invisible character; a name is a "
        "printable label",
        f"{cfg}:1: tenants[1]: tenant id 'bad id': {rule}",
        "dispatchsim serve: invalid --config file; nothing was started"]


@pytest.mark.parametrize("tenant", ["a/b?c", "bad id with spaces", "a" * 5000, "_leading", "x" * 65, "ok\n"])
def test_keys_create_refuses_a_tenant_id_the_api_refuses_before_opening_the_database(tmp_path, capsys, tenant):
    from dispatchsim.cli import main
    from dispatchsim.engine import ID_PATTERN

    assert re.fullmatch(ID_PATTERN, tenant) is None  # the pattern POST /api/tenants checks (server/models.py)
    db = tmp_path / "k.db"
    assert main(["keys", "create", "--db", str(db), "--tenant", tenant, "--create-tenant"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 300
    assert err.startswith("dispatchsim keys create: tenant id ") and "use 1-64 letters" in err
    assert not db.exists()
    assert main(["keys", "create", "--db", str(db), "--tenant", "a:b.c-d_" + "e" * 56, "--create-tenant"]) == 0


def test_a_key_name_with_control_characters_is_refused_and_an_old_one_is_listed_escaped(tmp_path, capsys) -> None:
    from dispatchsim.cli import main

    db = tmp_path / "k.db"
    assert main(["keys", "create", "--db", str(db), "--admin", "--name", "a\nb\x1b[31m"]) == 2
    assert capsys.readouterr().err == ("dispatchsim keys create: key name: U+000A at position 2 is a control or "
                                       "invisible character; a name is a printable label\n")
    assert main(["keys", "create", "--db", str(db), "--admin", "--name", "ops – Zoë"]) == 0
    store = Store(db)  # a database written before the rule: the name went in as given
    try:
        run_sync(store.add_api_key("key_old", "0" * 64, tenant_id=None, name="x\x1b[2Jy\u202e", now=0))
    finally:
        run_sync(store.close())
    capsys.readouterr()
    assert main(["keys", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "ops – Zoë" in out and "x\\x1b[2Jy\\u202e" in out
    assert "\x1b" not in out and "\u202e" not in out


def test_the_same_key_twice_in_the_serve_config_is_refused_not_taken_over(tmp_path, capsys) -> None:
    """Two entries with one key: the later silently took it over (acme's key granted beta's data)."""
    cfg, err = _refused_config(tmp_path, capsys, "tenants: [acme, beta]\nkeys:\n"
                               "  - {key: 0123456789abcdef0123, tenant: acme}\n"
                               "  - {key: 0123456789abcdef0123, tenant: beta}\n"
                               "  - {key: 0123456789abcdef0123, admin: true}\n")
    same = "the same key as keys[0]: a key belongs to one tenant (or is an admin key); give each entry its own"
    assert err == [f"{cfg}:4: keys[1].key: {same}", f"{cfg}:5: keys[2].key: {same}",
                   "dispatchsim serve: invalid --config file; nothing was started"]
