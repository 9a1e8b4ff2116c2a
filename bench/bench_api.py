"""API load: activities accepted per second through ``POST /api/activities`` with dispatch running.

Three processes on loopback, so none of them measures the others' work as its own latency:

- ``dispatchsim serve`` (real clock) with an active configuration pointing at
- a receiver: a minimal keep-alive HTTP/1.1 endpoint answering 200 to everything, in its own
  process (it used to share the load generator's event loop: 500 webhook requests/s handled
  there showed up as API latency), and
- this process: an open-loop generator sending at a fixed rate (default 500/s for 10 s) and
  recording each request's latency, plus how late it sent each one (generator lag).

The baseline is ``GET /healthz`` at the same rate, same client, same server. CPU seconds of
each process and of everything else on the machine (other jobs compete for the same cores)
are printed, with the server's CPU cost per accepted activity. Target: p99 < 50 ms at 500/s.
``BENCH_NO_DISPATCH=1`` leaves the configuration inactive (API cost alone).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sys.path)

import aiohttp

DISPATCH = os.environ.get("BENCH_NO_DISPATCH") is None
ADMIN, ACME = "bench-admin-key-0000000", "bench-acme-key-00000000"
TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# -- the receiver (its own process) ---------------------------------------------------------


class _Receiver(asyncio.Protocol):
    """Just enough HTTP/1.1 for aiohttp's keep-alive client: headers, Content-Length body, 200.

    ``GET /count`` answers the number of POSTs so far, ``GET /times`` their arrival times
    (``time.monotonic``, comparable across processes on Linux) as a JSON list.
    """

    posts = 0
    times: list[float] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            if head.startswith("GET /count"):
                body = str(_Receiver.posts).encode()
            elif head.startswith("GET /times"):
                body = json.dumps(_Receiver.times).encode()
            else:
                body = b"ok"
                if head.startswith("POST"):
                    _Receiver.posts += 1
                    _Receiver.times.append(time.monotonic())
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"  # type: ignore[attr-defined]
                         % (len(body), body))


async def receiver_main() -> None:
    server = await asyncio.get_running_loop().create_server(_Receiver, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin


# -- measurement helpers ----------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread has spent runnable but waiting for a free core
    (``/proc/PID/schedstat``): the direct measure of CPU contention for a one-thread server."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def all_cpu() -> dict[int, float]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                out[int(name)] = proc_cpu(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


class CpuMeter:
    """CPU seconds of our three processes and of every other process on the machine (other jobs
    share these cores; processes that end between two samples are missed, so "others" is a lower
    bound)."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids

    def sample(self) -> dict[str, object]:
        return {"all": all_cpu(), "wait": runqueue_wait(self.pids["server"]),
                **{name: proc_cpu(pid) for name, pid in self.pids.items()}}

    def delta(self, a: dict, b: dict) -> dict[str, float]:
        d = {name: round(b[name] - a[name], 2) for name in self.pids}
        ours = set(self.pids.values())
        d["others"] = round(sum(v - a["all"].get(pid, 0.0) for pid, v in b["all"].items() if pid not in ours), 2)
        d["server_runqueue_wait"] = round(b["wait"] - a["wait"], 2)
        return d


class _Conn(asyncio.Protocol):
    """One keep-alive client connection: write a request, resolve a future when its response is complete
    (status line, headers, Content-Length body), stamped the moment the last byte arrives."""

    def __init__(self) -> None:
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, float]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").split("\r\n")
        length = next((int(v) for n, _, v in (h.partition(":") for h in head[1:])
                       if n.strip().lower() == "content-length"), 0)
        if len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length:]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((int(head[0].split()[1]), time.perf_counter()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))


class RawClient:
    """A minimal HTTP/1.1 keep-alive client for the load (aiohttp's client costs the generator ~0.5 ms of
    CPU per request on the same 2 cores as the server; this one a small fraction of that)."""

    def __init__(self, base: str, limit: int = 200) -> None:
        hostport = base.split("//", 1)[1].rstrip("/")
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.idle: list[_Conn] = []
        self.open = 0
        self.limit = limit
        self.freed = asyncio.Condition()

    async def _get(self) -> _Conn:
        async with self.freed:
            while not self.idle and self.open >= self.limit:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.open += 1
        _, conn = await asyncio.get_running_loop().create_connection(_Conn, self.host, self.port)
        return conn

    async def _put(self, conn: _Conn) -> None:
        async with self.freed:
            if conn.closed:
                self.open -= 1
            else:
                self.idle.append(conn)
            self.freed.notify()

    async def request(self, raw: bytes) -> tuple[int, float]:
        """Send one prepared request; returns (status, perf_counter when the response was complete)."""
        conn = await self._get()
        try:
            conn.waiter = asyncio.get_running_loop().create_future()
            conn.t.write(raw)  # type: ignore[attr-defined]
            return await conn.waiter
        finally:
            await self._put(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.t.close()  # type: ignore[attr-defined]


def http_request(method: str, path: str, body: dict | None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nX-Api-Key: {ACME}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


async def open_loop(client: RawClient, rate: float, seconds: float, raw: bytes
                    ) -> tuple[list[float], list[float], int]:
    """Send ``rate`` requests/s for ``seconds`` regardless of answers (open loop).

    Returns latencies (s, from the moment the request was written to the moment its response was
    complete), generator lag (s, how much later than scheduled each was sent) and the number of errors.
    """
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        lags.append(t0 - (start + i / rate))
        try:
            status, t1 = await client.request(raw)
            if status >= 300:
                errors += 1
        except OSError:
            errors += 1
            t1 = time.perf_counter()
        latencies.append(t1 - t0)

    tasks = []
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies, lags, errors


async def main(rate: float, seconds: float, serve_options: dict[str, str]) -> None:
    here = Path(__file__).resolve()
    rx = subprocess.Popen([sys.executable, str(here), "--receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
    rx_port = int(await asyncio.get_running_loop().run_in_executor(None, rx.stdout.readline))
    hook_url = f"http://127.0.0.1:{rx_port}/hooks"

    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    cfg = tmp / "serve.yaml"
    cfg.write_text(f"keys: [{{key: {ADMIN}, admin: true}}, {{key: {ACME}, tenant: acme}}]\n"
                   "tenants: [acme]\nproviders: [crm]\nstats_interval: 3600\n"
                   + "".join(f"{k}: {v}\n" for k, v in serve_options.items()))
    # the server logs JSON to stderr as in production; it goes to a file, not a terminal
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "dispatchsim.cli", "serve", "--db", str(tmp / "b.db"), "--port",
                             "0", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONPATH": str(here.parent.parent)})
    line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
    base = line.split("listening on ")[1].split()[0]
    meter = CpuMeter(server=proc.pid, client=os.getpid(), receiver=rx.pid)

    async def received(s: aiohttp.ClientSession) -> int:
        async with s.get(f"http://127.0.0.1:{rx_port}/count") as r:
            return int(await r.text())

    try:
        conn = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(base_url=base, connector=conn) as s, aiohttp.ClientSession() as rs:
            async with s.post("/api/dispatch-configurations", headers={"X-Api-Key": ACME}, json={
                    "provider_id": "crm", "channel": "SALESMAN", "endpoint_url": hook_url,
                    "ordering": {"mode": "none", "concurrency": 50}}) as r:
                cid = (await r.json())["id"]
            async with s.post(f"/api/dispatch-configurations/{cid}/{'activate' if DISPATCH else 'deactivate'}",
                              headers={"X-Api-Key": ACME}) as r:
                assert r.status == 200, await r.text()
            # warm-up, then the baseline, then the load
            client = RawClient(base)
            healthz = http_request("GET", "/healthz", None)
            await open_loop(client, rate, 1.0, healthz)
            c0 = meter.sample()
            base_lat, base_lag, base_err = await open_loop(client, rate, seconds, healthz)
            c1 = meter.sample()
            activity = {"channel": "SALESMAN", "commerceExternalId": "COM-001", "commerceName": "Farmacia Central",
                        "reason": {"code": "CHURN_RISK", "label": "Riesgo de fuga"}}
            t0 = time.perf_counter()
            lat, lag, err = await open_loop(client, rate, seconds, http_request("POST", "/api/activities", activity))
            wall = time.perf_counter() - t0
            c2 = meter.sample()
            client.close()
            accepted = len(lat) - err
            dispatched_during = await received(rs)
            deadline = time.perf_counter() + 30
            dispatched = dispatched_during
            while DISPATCH and dispatched < accepted and time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
                dispatched = await received(rs)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        rx.stdin.close()
        rx.wait()
        log.close()

    base_cpu, load_cpu = meter.delta(c0, c1), meter.delta(c1, c2)
    p50, p99, lag99 = pct(lat, 50) * 1000, pct(lat, 99) * 1000, pct(lag, 99) * 1000
    b50, b99 = pct(base_lat, 50) * 1000, pct(base_lat, 99) * 1000
    ms_per_activity = load_cpu["server"] / max(1, accepted) * 1000
    print(json.dumps({"rate": rate, "seconds": seconds, "dispatch": DISPATCH, "serve_options": serve_options, "accepted": accepted, "errors": err,
                      "accepted_per_s": round(accepted / wall, 1), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                      "max_ms": round(max(lat) * 1000, 2), "mean_ms": round(statistics.mean(lat) * 1000, 2),
                      "generator_lag_p99_ms": round(lag99, 2), "healthz_p50_ms": round(b50, 2),
                      "healthz_p99_ms": round(b99, 2), "healthz_errors": base_err,
                      "cpu_s_healthz": base_cpu, "cpu_s_activities": load_cpu,
                      "server_cpu_ms_per_activity": round(ms_per_activity, 3),
                      "dispatched_during_load": dispatched_during, "dispatched_total": dispatched}))
    print(f"POST /api/activities at {rate:g}/s for {seconds:g}s with dispatch {'running' if DISPATCH else 'off'}: "
          f"{accepted} accepted ({accepted / wall:.0f}/s), {err} errors; p50 {p50:.1f} ms, p99 {p99:.1f} ms "
          f"(target p99 < 50 ms: {'met' if p99 < 50 else 'NOT met'}); generator lag p99 {lag99:.1f} ms")
    print(f"baseline GET /healthz at the same rate: p50 {b50:.1f} ms, p99 {b99:.1f} ms -> "
          f"activities/healthz p50 {p50 / b50:.2f}x, p99 {p99 / b99:.2f}x")
    print(f"CPU seconds during the {seconds:g}s load: server {load_cpu['server']}, generator {load_cpu['client']}, "
          f"receiver {load_cpu['receiver']}, other processes {load_cpu['others']} (of {os.cpu_count()} cores x "
          f"{wall:.1f}s); server CPU per accepted activity {ms_per_activity:.2f} ms; the server waited "
          f"{load_cpu['server_runqueue_wait']} s for a free core")
    if load_cpu["others"] > 0.1 * wall or load_cpu["server_runqueue_wait"] > 0.05 * wall:
        print(f"warning: the machine was shared (other processes used {load_cpu['others']:.1f} CPU-seconds, the "
              f"server waited {load_cpu['server_runqueue_wait']:.1f} s for a core); latency figures include that")
    if DISPATCH:
        print(f"dispatched to the endpoint: {dispatched_during} during the load, {dispatched} in the end "
              f"(every accepted activity {'was' if dispatched >= accepted else 'was NOT'} delivered)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a serve config key for this run, e.g. dispatch_interval=0 (the defaults otherwise)")
    ap.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    opts = dict(kv.split("=", 1) for kv in args.set)
    asyncio.run(receiver_main() if args.receiver else main(args.rate, args.seconds, opts))
