"""Simulated provider endpoints: one aiohttp low-level server per endpoint, in the running loop.

Everything happens on the current event loop and its clock: latency is ``asyncio.sleep``,
windows are loop timers, so on a time-compacting loop hours of outage pass in milliseconds
while the HTTP stays real (127.0.0.1). Faults aiohttp cannot express as a response are
done on the request's transport: write garbage, close, abort with ``SO_LINGER 0`` (RST).
Refusing connections closes the listening socket and keeps the port bound without
listening, so connects are refused and the same port is served again afterwards.
"""
from __future__ import annotations

import asyncio
import functools
import json
import random
import socket
import struct
from collections.abc import Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .behaviour import (
    Behaviour,
    Decision,
    Fault,
    Mix,
    Plan,
    Respond,
    Sequence,
    Windows,
    has_refuse,
    next_change,
    refusing,
)
from .callback import Callbacks
from .checks import check_auth, check_schema, check_signature, redact
from .config import EndpointConfig, ProvidersConfig, check_host, parse_behaviour
from .errors import ProviderConfigError
from .recorder import EndpointEvent, Record, Recorder

Clock = Callable[[], float]
_READ_METHODS = ("GET", "HEAD")


class Endpoint:
    """One simulated receiver on its own port. Made and driven by :class:`EndpointSet`."""

    def __init__(self, config: EndpointConfig, owner: EndpointSet, *, port: int) -> None:
        self.config = config
        self.name = config.name
        self.port = port
        self._owner = owner
        self.rng = random.Random(f"{owner.seed}:{config.name}")
        self._plan = Plan(config.behaviour, self.rng)
        self._verify_plan = Plan(config.verify_get, self.rng)
        self._server: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._idle_sock: socket.socket | None = None
        self._listening = False
        self._desired = True
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._secret_headers = {config.auth.header} if config.auth and config.auth.type == "api_key" else set()
        #: only a schema check or a results callback reads the parsed request; the record parses its
        #: body on demand, so an endpoint with neither does not decode every request
        self._reads_json = config.schema is not None or config.results_callback is not None
        self._checks = config.auth is not None or config.signing_secret is not None or config.schema is not None
        #: id(leaf) -> (leaf, what :meth:`_answer` made of it)
        self._answers: dict[int, tuple[Respond, tuple[int, bytes, CIMultiDict[str]]]] = {}

    # ---- public

    @property
    def behaviour(self) -> Behaviour:
        """The behaviour the endpoint follows right now (its plan can change it over time)."""
        return self._plan.behaviour

    @property
    def listening(self) -> bool:
        """True while the endpoint accepts connections (False during a ``down`` window)."""
        return self._listening

    def url(self, path: str | None = None) -> str:
        """The URL of this endpoint, at its configured path unless ``path`` is given."""
        return f"http://{_host_in_url(self._owner.host)}:{self.port}{path or self.config.path}"

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Swap the behaviour now; sequence counters restart, the seeded rng carries on."""
        self._plan = Plan(behaviour, self.rng)
        if self._server is None:
            return
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        self._want(not refusing(behaviour, self._offset()))
        self._watcher = asyncio.get_running_loop().create_task(self._watch(behaviour))

    # ---- lifecycle

    async def start(self) -> None:
        """Bind the port and start following the behaviour plan; ``port`` is then the bound port."""
        self._server = web.Server(self._handle, handler_cancellation=True)
        self._idle_sock = self._bind(self.port)
        self.port = self._idle_sock.getsockname()[1]
        behaviour = self._plan.behaviour
        self._desired = not refusing(behaviour, self._offset())
        if not self._desired:
            self._event("down")
        await self._reconcile()
        if has_refuse(behaviour):
            self._watcher = asyncio.get_running_loop().create_task(self._watch(behaviour))

    async def stop(self) -> None:
        """Stop following the behaviour plan and close the port."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        async with self._lock:
            if self._listener is not None:
                self._listener.close()
                await self._listener.wait_closed()
                self._listener = None
            if self._idle_sock is not None:
                self._idle_sock.close()
                self._idle_sock = None
            self._listening = False
        self._drop_connections()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.shutdown(1.0)
            self._server = None

    # ---- listening state

    def _offset(self) -> float:
        return self._owner.now() - self._owner.t0

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._owner.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._owner.host, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if exc.errno is None:
                raise
            # the address says which of several endpoints (ports P, P+1, ...) could not listen
            raise OSError(exc.errno, f"{exc.strerror} ({self._owner.host}:{port}, endpoint {self.name})") from None
        return sock

    def _want(self, on: bool) -> None:
        if on != self._desired:
            self._event("up" if on else "down")
        self._desired = on
        if not on and self._listening and not self._lock.locked():
            self._down()  # at once, so a request sent right after set_behaviour is refused
        elif on != self._listening:
            if on and self._idle_sock is not None and not self._lock.locked():
                self._idle_sock.listen(128)  # at once: the kernel queues connects until we serve
            task = asyncio.get_running_loop().create_task(self._reconcile())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reconcile(self) -> None:
        async with self._lock:
            while self._listening != self._desired and not self._stopping:
                if self._desired:
                    sock = self._idle_sock or self._bind(self.port)
                    self._idle_sock = None
                    sock.listen(128)
                    assert self._server is not None
                    self._listener = await asyncio.get_running_loop().create_server(self._server, sock=sock)
                    self._listening = True
                else:
                    self._down()

    def _down(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._listening = False
        self._drop_connections()
        if self._idle_sock is not None:  # it may already be listening for a pending start
            self._idle_sock.close()
            self._idle_sock = None
        if not self._stopping:
            self._idle_sock = self._bind(self.port)  # keep the port: connects are refused, not stolen

    def _drop_connections(self) -> None:
        if self._server is None:
            return
        for handler in self._server.connections:
            if handler.transport is not None:
                handler.transport.abort()

    async def _watch(self, behaviour: Behaviour) -> None:
        offset = self._offset()
        while True:
            self._want(not refusing(behaviour, offset))
            await self._reconcile()
            change = next_change(behaviour, offset)
            if change is None:
                return
            await asyncio.sleep(max(0.0, change - self._offset()))
            offset = max(self._offset(), change)

    def _event(self, what: str) -> None:
        self._owner.recorder.events.append(EndpointEvent(self._owner.now(), self.name, what))

    # ---- requests

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await self._serve(request)
        finally:
            self._tasks.discard(task)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        owner = self._owner
        at = owner.now()
        raw = await request.read()
        parsed = _parse(raw) if self._reads_json else None
        record = owner.recorder.open(
            endpoint=self.name, at=at, offset=at - owner.t0, method=request.method, path=request.path,
            query=request.query_string, headers=redact(request.headers, self._secret_headers),
            body=raw.decode("utf-8", "replace"),
        )
        closed_by_us = False
        try:
            decision, note, data = self._decide(request, raw, parsed, record.offset)
            record.note = note
            record.latency = decision.latency
            if decision.latency > 0:
                await asyncio.sleep(decision.latency)
            leaf = decision.leaf
            if isinstance(leaf, Respond):
                response = self._response(leaf)
                await response.prepare(request)
                await response.write_eof()
                record.response_status = response.status
                if record.acknowledged and request.method not in _READ_METHODS:
                    self._acknowledged(parsed)
                return response
            record.fault = leaf.kind
            closed_by_us = leaf.kind in ("truncated", "garbage", "reset", "close")
            return await self._fault(request, leaf, record, data)
        except asyncio.CancelledError:
            if not closed_by_us and not self._stopping:
                record.client_disconnected = True
            raise
        finally:
            owner.recorder.close(record, owner.now())

    def _decide(self, request: web.BaseRequest, raw: bytes, parsed: Any,
                offset: float) -> tuple[Decision, str | None, bytes | None]:
        cfg = self.config
        if request.path != cfg.path:
            return Decision(Respond(status=404), 0.0), "no such path", None
        if request.method in _READ_METHODS:
            decision = self._verify_plan.decide(offset)
        else:
            decision = self._plan.decide(offset)
        leaf = decision.leaf
        data = None
        if isinstance(leaf, Fault) and leaf.kind == "garbage":
            data = leaf.data or self.rng.randbytes(64)
        note = None
        if self._checks and isinstance(leaf, Respond) and 200 <= leaf.status < 300 \
                and request.method not in _READ_METHODS:
            # Only an endpoint that is up looks at the request; a 503 window answers 503 regardless.
            if cfg.auth is not None and (note := check_auth(cfg.auth, request.headers)):
                leaf = Respond(status=401, headers=_challenge(cfg.auth.type), latency=leaf.latency)
            elif cfg.signing_secret is not None and (note := check_signature(
                    cfg.signing_secret, request.headers, raw, now=self._owner.now(),
                    tolerance=cfg.signature_tolerance)):
                leaf = Respond(status=401, latency=leaf.latency)
            elif cfg.schema is not None and (note := check_schema(cfg.schema, parsed)):
                leaf = Respond(status=400, body=json.dumps({"error": note}).encode(), latency=leaf.latency)
            decision = Decision(leaf, decision.latency)
        return decision, note, data

    def _response(self, leaf: Respond) -> web.Response:
        status, body, fixed = self._answer(leaf)
        headers: CIMultiDict[str] = CIMultiDict(fixed)
        if leaf.retry_after_date is not None:
            headers["Retry-After"] = formatdate(self._owner.now() + leaf.retry_after_date, usegmt=True)
        return web.Response(status=status, body=body, headers=headers)

    def _answer(self, leaf: Respond) -> tuple[int, bytes, CIMultiDict[str]]:
        """Status, body and the headers that do not depend on the moment, of a response leaf: the same
        for every request it answers, so made once per leaf (a simulation answers thousands)."""
        made = self._answers.get(id(leaf))
        if made is not None and made[0] is leaf:
            return made[1]
        status = leaf.status
        body = leaf.body if leaf.body is not None else _default_body(status)
        if status in (204, 304):
            body = b""
        headers: CIMultiDict[str] = CIMultiDict(leaf.headers)
        if body and "Content-Type" not in headers:
            headers["Content-Type"] = leaf.content_type or ("application/json" if _is_json(body) else "text/plain")
        if leaf.retry_after is not None:
            headers["Retry-After"] = leaf.retry_after
        if 300 <= status < 400 and "Location" not in headers:
            headers["Location"] = leaf.location or "/moved"
        answer = (status, body, headers)
        self._answers[id(leaf)] = (leaf, answer)  # the leaf is kept: its id is not reused meanwhile
        return answer

    async def _fault(self, request: web.BaseRequest, leaf: Fault, record: Record,
                     data: bytes | None) -> web.StreamResponse:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise asyncio.CancelledError
        kind = leaf.kind
        if kind == "hang":
            await _forever()
        if kind in ("headers_then_stall", "slow_body", "truncated"):
            body = leaf.body
            response = web.StreamResponse(status=leaf.status, headers=CIMultiDict(leaf.headers))
            if "Content-Type" not in response.headers:
                response.content_type = "application/json" if _is_json(body) else "text/plain"
            response.content_length = len(body)
            await response.prepare(request)  # a StreamResponse sends its headers right away
            record.response_status = leaf.status
            if kind == "headers_then_stall":
                await _forever()
            if kind == "truncated":
                sent = leaf.send if leaf.send is not None else len(body) // 2
                if sent:
                    await response.write(body[:sent])
                transport.close()
                await _forever()
            for i in range(0, len(body), leaf.chunk):
                if i:
                    await asyncio.sleep(leaf.interval)
                await response.write(body[i:i + leaf.chunk])
            await response.write_eof()
            if record.acknowledged and request.method not in _READ_METHODS:
                self._acknowledged(record.json)
            return response
        if kind == "garbage":
            transport.write(data or b"\x00garbage")
            transport.close()
        elif kind == "reset":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif kind == "close":
            transport.close()
        await _forever()
        raise AssertionError("unreachable")

    def _acknowledged(self, payload: Any) -> None:
        callback = self.config.results_callback
        if callback is None:
            return
        for item in payload if isinstance(payload, list) else [payload]:
            if isinstance(item, dict) and item.get("id") is not None:
                self._owner._callbacks.schedule(self.name, callback, str(item["id"]))


def _check_set(config: Any, seed: Any, keep_records: Any, now: Any = None, t0: Any = None,
               ports: Any = None) -> None:
    """:class:`EndpointSet`'s arguments, refused as Python refuses a wrong type (TypeError), naming them; a
    port for an endpoint the config does not have, or out of range, is a ProviderConfigError (a ValueError)."""
    if not isinstance(config, ProvidersConfig):
        raise TypeError(f"EndpointSet: config must be a ProvidersConfig (from parse_config(...) or "
                        f"load_config(path)), got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"EndpointSet: seed must be an integer, got {type(seed).__name__}")
    if not isinstance(keep_records, bool):
        raise TypeError(f"EndpointSet: keep_records must be True or False, got {type(keep_records).__name__}")
    if now is not None and not callable(now):
        raise TypeError(f"EndpointSet: now must be a function returning seconds (e.g. engine.clock.now), got "
                        f"{type(now).__name__}")
    if t0 is not None and (isinstance(t0, bool) or not isinstance(t0, (int, float))):
        raise TypeError(f"EndpointSet: t0 must be a number of seconds or None, got {type(t0).__name__}")
    if ports is not None and not isinstance(ports, Mapping):
        raise TypeError(f"EndpointSet: ports must be a mapping of endpoint name -> port, got {type(ports).__name__}")
    unknown = sorted(set(ports or {}) - set(config.endpoints), key=str)
    if unknown:
        raise ProviderConfigError(f"ports given for unknown endpoints: {', '.join(map(str, unknown))} (endpoints: "
                                  f"{', '.join(config.endpoints)})", source="<EndpointSet>", field="ports")
    for name, port in (ports or {}).items():
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ProviderConfigError(f"port of {name} must be a whole number from 0 to 65535, got {port!r}",
                                      source="<EndpointSet>", field="ports")


class EndpointSet:
    """Start the configured endpoints in the running loop; read what they saw in :attr:`recorder`.

    ``now`` is the clock (seconds; default the loop's time) and ``t0`` the instant windows are
    measured from (default ``now()`` at start). One ``seed`` gives every endpoint its own
    ``random.Random(f"{seed}:{name}")``, so the same requests produce the same record.
    ``keep_records=False``: the recorder keeps each request's receipt only (see :class:`Recorder`).
    """

    def __init__(self, config: ProvidersConfig, *, seed: int = 0, now: Clock | None = None,
                 t0: float | None = None, host: str = "127.0.0.1", ports: Mapping[str, int] | None = None,
                 keep_records: bool = True) -> None:
        _check_set(config, seed, keep_records, now, t0, ports)
        self.config = config
        self.seed = seed
        self.host = check_host(host)
        self.recorder = Recorder(keep=keep_records)
        self._clock = now
        self._t0 = t0
        self._ports = dict(ports or {})
        self._endpoints: dict[str, Endpoint] = {}
        self._callbacks: Callbacks | None = None  # type: ignore[assignment]
        self.t0 = 0.0

    def now(self) -> float:
        """The endpoint set's clock, in seconds (the loop's time unless one was given)."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def __aenter__(self) -> EndpointSet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and start every endpoint on 127.0.0.1 (or the given host).

        If one cannot start, those already started are stopped and the error is raised.
        """
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        self.t0 = self._t0 if self._t0 is not None else self.now()
        self._callbacks = Callbacks(self.recorder, self.now)
        try:
            for name, cfg in self.config.endpoints.items():
                endpoint = Endpoint(cfg, self, port=self._ports.get(name, cfg.port or 0))
                self._endpoints[name] = endpoint
                await endpoint.start()
        except BaseException:
            await self.stop()
            raise

    async def settle(self, rounds: int = 20) -> None:
        """Let the loop process pending socket events (e.g. a client that just gave up) without
        advancing the clock, so the record reflects them."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop listening, drop open connections, cancel pending callbacks. Records stay readable."""
        if self._endpoints:
            await self.settle()
        for endpoint in self._endpoints.values():
            await endpoint.stop()
        if self._callbacks is not None:
            await self._callbacks.close()

    def endpoint(self, name: str) -> Endpoint:
        """The started endpoint with this name; KeyError listing the known names otherwise."""
        try:
            return self._endpoints[name]
        except KeyError:
            known = ", ".join(self._endpoints) or "none (not started?)"
            raise KeyError(f"no endpoint {name!r}; known: {known}") from None

    def url(self, name: str, path: str | None = None) -> str:
        """``http://127.0.0.1:PORT/hooks`` (the endpoint's configured path unless ``path`` is given)."""
        return self.endpoint(name).url(path)

    @property
    def ports(self) -> dict[str, int]:
        """The port each endpoint is bound to, by name (known once started)."""
        return {name: e.port for name, e in self._endpoints.items()}

    def set_behaviour(self, name: str, behaviour: Any) -> None:
        """Change an endpoint's behaviour now (same shape as ``behaviour:`` in the config)."""
        endpoint = self.endpoint(name)
        parsed = behaviour if isinstance(behaviour, (Respond, Fault, Mix, Sequence, Windows)) else parse_behaviour(
            behaviour, source=f"set_behaviour({name!r})")
        endpoint.set_behaviour(parsed)


def _parse(raw: bytes) -> Any:
    """The request body as JSON, or None when it is empty or not JSON."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _forever() -> None:
    """Wait until the connection is lost (aiohttp then cancels the handler)."""
    await asyncio.get_running_loop().create_future()


@functools.lru_cache(maxsize=64)
def _default_body(status: int) -> bytes:
    if 200 <= status < 300:
        return b'{"ok":true}'
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return json.dumps({"error": phrase}, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=256)
def _is_json(body: bytes) -> bool:
    """Cached: an endpoint answers the same few bodies thousands of times."""
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def _challenge(kind: str) -> tuple[tuple[str, str], ...]:
    if kind == "bearer":
        return (("WWW-Authenticate", "Bearer"),)
    if kind == "basic":
        return (("WWW-Authenticate", 'Basic realm="dispatchsim"'),)
    return ()


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["Endpoint", "EndpointSet", "ProviderConfigError"]
