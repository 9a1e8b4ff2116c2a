"""Three ``dispatchsim serve`` processes on one PostgreSQL database, one of them killed with SIGKILL in
the middle of an attempt and started again: judged only from what the receiving endpoint saw.

The receiver is a real HTTP server on 127.0.0.1 that answers 503 to the first POSTs, then 200 after a
short delay, and logs every request (arrival, end, ``webhook-id``, activity, partition). Once armed
(after the first activities are in), the next POST to arrive makes it find the worker process that
owns the client end of that connection and kill it right then: that attempt is in flight at the kill.
Activities keep arriving before and after.
Everything is bounded (39 activities, a deadline on every wait); waits are for conditions, not sleeps.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from chaos.harness import AnsweringHandler, QuietServer, ServeProcess, call, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

ADMIN, ACME = "pg-workers-admin-key-000", "pg-workers-acme-key-0000"
PARTITIONS = ("P1", "P2", "P3")
FAIL_FIRST = 12  #: POSTs answered 503 before the endpoint recovers
DELAY = 0.12  #: seconds the endpoint takes to answer a POST
TIMEOUT = 5.0  #: the sender's total timeout: an answer later than that was given up on (a loaded machine)


@dataclass
class Request:
    n: int
    start: float
    webhook_id: str
    activity: str
    partition: str
    end: float | None = None
    status: int | None = None  #: None: the connection died before the answer (its sender was killed)


class Receiver:
    """The endpoint, its log, and the kill (see the module docstring)."""

    def __init__(self, workers: dict[int, ServeProcess]) -> None:
        self.workers = workers
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self.armed = threading.Event()  #: kill the sender of the next POST
        self.killed = threading.Event()
        self.kill_time: float | None = None
        self.victim: int | None = None
        outer = self

        class Handler(AnsweringHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                with outer.lock:
                    req = Request(n=len(outer.log) + 1, start=time.monotonic(),
                                  webhook_id=self.headers.get("webhook-id", ""), activity=body["id"],
                                  partition=body["commerceExternalId"])
                    outer.log.append(req)
                with outer.lock:
                    kill = outer.armed.is_set() and not outer.killed.is_set()
                    if kill:
                        outer.kill_sender(self.client_address[1])
                status = 503 if req.n <= FAIL_FIRST else 200
                threading.Event().wait(DELAY)  # the endpoint's own latency
                try:
                    self._answer(status)
                    req.status = status
                except OSError:
                    self.close_connection = True  # the sender is gone
                req.end = time.monotonic()

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def kill_sender(self, client_port: int) -> None:
        """SIGKILL the worker whose socket is the client end of this request."""
        for index, worker in list(self.workers.items()):
            conns = psutil.Process(worker.pid).net_connections(kind="tcp")
            if any(c.laddr and c.laddr.port == client_port for c in conns):
                os.kill(worker.pid, signal.SIGKILL)
                self.victim, self.kill_time = index, time.monotonic()
                self.killed.set()
                return
        raise AssertionError(f"no worker owns the connection from port {client_port}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"keys:\n  - {{key: {ADMIN}, admin: true}}\n  - {{key: {ACME}, tenant: acme}}\n"
                   "tenants: [acme]\nproviders: [crm]\nsweep_interval: 0.2\npool_size: 3\nlease_margin: 1\n"
                   "claim_chunk: 10\n")
    return cfg


def _start(db: str, cfg: Path, log: Path, n: int) -> list[ServeProcess]:
    """``n`` workers started side by side (each waits for its "listening" line)."""
    out: list[ServeProcess | BaseException] = [RuntimeError("not started")] * n

    def one(i: int) -> None:
        try:
            out[i] = ServeProcess(db, cfg, log, shutdown_deadline=2.0, start_timeout=60)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - reported below
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in out:
        if isinstance(w, BaseException):
            raise w
    return out  # type: ignore[return-value]


def test_three_workers_one_killed_mid_flight_lose_nothing_and_keep_every_queue_in_order(pg_server,
                                                                                         tmp_path: Path) -> None:
    db = pg_server.fresh()
    cfg, log = _config(tmp_path), tmp_path / "workers.log"
    workers: dict[int, ServeProcess] = {}
    receiver = Receiver(workers)
    created: dict[str, list[str]] = defaultdict(list)  # partition -> activity ids in creation order
    try:
        workers.update(enumerate(_start(db, cfg, log, 3)))
        status, _, raw = call(workers[0].base, "POST", "/api/dispatch-configurations", {
            "id": "orders", "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": receiver.url,
            "retry": {"base": 0.1, "factor": 2, "cap": 0.4, "max_attempts": None},
            "ordering": {"mode": "partitioned", "partition_key": "commerceExternalId"},
            "timeouts": {"connect": 1, "total": TIMEOUT}}, key=ACME)
        assert status == 201, raw
        status, _, raw = call(workers[1].base, "POST", "/api/dispatch-configurations/orders/activate", key=ACME)
        assert status == 200, raw

        def post(count: int) -> None:
            for _ in range(count):
                n = sum(len(v) for v in created.values())
                partition = PARTITIONS[n % len(PARTITIONS)]
                live = sorted(workers)
                status, _, raw = call(workers[live[n % len(live)]].base, "POST", "/api/activities",
                                      {"channel": "SALESMAN", "commerceExternalId": partition}, key=ACME)
                assert status == 201, raw
                created[partition].append(json.loads(raw)["id"])

        post(30)
        receiver.armed.set()
        wait_for(receiver.killed.is_set, 60, "a POST after the first activities, and the kill of its sender")
        victim = receiver.victim
        assert victim is not None
        workers[victim].wait()
        del workers[victim]
        post(4)
        workers[victim] = _start(db, cfg, log, 1)[0]  # started again
        post(5)
        everything = {a for ids in created.values() for a in ids}
        wait_for(lambda: everything <= {r.activity for r in receiver.log if r.status == 200}, 90,
                 "every activity to be acknowledged by the endpoint")
        for w in workers.values():
            w.signal(signal.SIGTERM)
        assert [w.wait()[0] for w in workers.values()] == [0, 0, 0]
        workers.clear()
    finally:
        for w in workers.values():
            w.signal(signal.SIGKILL)
            w.wait()
        receiver.close()
        pg_server.drop(db)

    requests = list(receiver.log)
    assert receiver.kill_time is not None
    in_flight_at_kill = {r.activity for r in requests if r.start <= receiver.kill_time
                         and (r.end is None or r.end >= receiver.kill_time)}
    assert any(r.status is None for r in requests)  # the attempt cut off by the kill
    by_activity: dict[str, list[Request]] = defaultdict(list)
    for r in requests:
        by_activity[r.activity].append(r)
    def given_up(r: Request) -> bool:  # answered after the sender's timeout: it had already retried
        return r.end is not None and r.end - r.start > TIMEOUT

    for activity, reqs in by_activity.items():
        # one webhook-id per delivery, whichever worker sent it, before and after the kill
        assert len({r.webhook_id for r in reqs}) == 1, activity
        acked = [r for r in reqs if r.status == 200]
        # nothing lost; a second acknowledged copy only for an attempt in flight when its sender died
        # (or one answered too late, after its sender's timeout)
        assert len(acked) == 1 or (len(acked) == 2 and (activity in in_flight_at_kill or given_up(acked[0]))), (
            activity, acked)
    for partition, ids in created.items():
        order = {a: i for i, a in enumerate(ids)}
        queue = sorted((r for r in requests if r.partition == partition), key=lambda r: r.start)
        firsts = []
        for r in queue:
            if r.status == 200 and r.activity not in firsts:
                firsts.append(r.activity)
        assert firsts == ids, partition  # acknowledged in creation order
        for r in queue:
            # nothing of the queue goes before every earlier activity is acknowledged ...
            earlier = [a for a in ids[:order[r.activity]]]
            done = {q.activity for q in queue if q.status == 200 and q.end is not None and q.end <= r.start}
            assert set(earlier) <= done, (partition, r)
        spans = sorted((r.start, r.start + TIMEOUT if given_up(r) else (r.end if r.end is not None else r.start))
                       for r in queue)  # an attempt ends for its sender when the answer comes, or at the timeout
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, partition  # ... and never two attempts of one queue at once, across workers


def test_a_killed_workers_attempt_is_sent_again_in_seconds_not_at_its_lease_end(pg_server, tmp_path: Path) -> None:
    """Two workers; the sender of the first POST is killed with SIGKILL while the endpoint holds that
    request open. Its lease has 40 s left (total timeout 10 s + the default lease_margin of 30 s), but
    its database session is gone, and with it the owner lock it held: the lease sweep (every 0.2 s
    here) releases its attempt when two sweeps in a row find it so, and the other worker sends it
    again with the same webhook-id, in well under the total timeout."""
    db = pg_server.fresh()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"keys:\n  - {{key: {ADMIN}, admin: true}}\n  - {{key: {ACME}, tenant: acme}}\n"
                   "tenants: [acme]\nproviders: [crm]\nsweep_interval: 0.2\npool_size: 3\n")
    workers: dict[int, ServeProcess] = {}
    posts: list[tuple[float, str]] = []
    killed: list[float] = []

    class Handler(AnsweringHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            posts.append((time.monotonic(), self.headers.get("webhook-id", "")))
            if len(posts) == 1:
                for worker in list(workers.values()):  # the sender of this request dies now, mid-attempt
                    if any(c.laddr and c.laddr.port == self.client_address[1]
                           for c in psutil.Process(worker.pid).net_connections(kind="tcp")):
                        os.kill(worker.pid, signal.SIGKILL)
                        killed.append(time.monotonic())
                threading.Event().wait(5.0)  # held open past the kill
            try:
                self._answer(200)
            except OSError:
                self.close_connection = True

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        workers.update(enumerate(_start(db, cfg, tmp_path / "workers.log", 2)))
        status, _, raw = call(workers[0].base, "POST", "/api/dispatch-configurations", {
            "id": "crm", "provider_id": "crm", "channel": "SALESMAN",
            "endpoint_url": f"http://127.0.0.1:{server.server_address[1]}/hooks",
            "timeouts": {"connect": 1, "total": 10}}, key=ACME)
        assert status == 201, raw
        assert call(workers[1].base, "POST", "/api/dispatch-configurations/crm/activate", key=ACME)[0] == 200
        assert call(workers[0].base, "POST", "/api/activities", {"channel": "SALESMAN"}, key=ACME)[0] == 201
        wait_for(lambda: killed, 30, "the first POST and the kill of its sender")
        wait_for(lambda: len(posts) >= 2, 30, "the attempt sent again by the other worker")
        assert posts[1][1] == posts[0][1]  # the same delivery, the same webhook-id
        assert posts[1][0] - killed[0] < 8.0, posts  # well before the lease (40 s) or even the timeout (10 s) ends
        for i, w in list(workers.items()):
            if w.proc.poll() is None:
                w.signal(signal.SIGTERM)
                assert w.wait()[0] == 0
            else:
                w.wait()
            del workers[i]
    finally:
        for w in workers.values():
            w.signal(signal.SIGKILL)
            w.wait()
        server.shutdown()
        server.server_close()
        pg_server.drop(db)
