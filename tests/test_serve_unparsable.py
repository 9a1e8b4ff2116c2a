"""Requests aiohttp's HTTP parser refuses get a problem document like every other error, from the serve
runner (``server/unparsable.py``, which reaches into aiohttp's unexported parts: these tests pin them).

The real API app on a real socket on 127.0.0.1; the requests are raw bytes, since no HTTP client sends them.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web, web_protocol

from dispatchsim.engine import Engine
from dispatchsim.server import serve
from dispatchsim.server.api import make_app
from dispatchsim.server.keys import KeyRing
from dispatchsim.server.unparsable import ProblemAppRunner, unparsable_problem

SECRET = "k-2a9f0c77d1e4b3"
HEAD = b"POST /api/activities HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: " + SECRET.encode() + b"\r\n"


@pytest.fixture
async def port(engine: Engine) -> AsyncIterator[int]:
    """The API as serve runs it (same runner class and parser limits)."""
    runner = ProblemAppRunner(make_app(engine, keys=KeyRing(engine.store, {"admin-key-000000000000": None})),
                              access_log=None, max_line_size=serve.MAX_REQUEST_LINE)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def _answer(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()  # to the end: the server closes the connection after its answer
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(("raw", "says"), [
    (HEAD + b"Content-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
     "headers or framing"),
    (HEAD + b"X-Big: " + b"a" * 8191 + b"\r\n\r\n", "longer than this server accepts"),
    (b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", "request line"),
    (b"\x16\x03\x01 not http at all\r\n\r\n", "request line"),
    (HEAD + b"X-Echo: " + SECRET.encode() + b"\x01\r\n\r\n", "headers or framing"),
])
async def test_a_request_the_parser_refuses_is_a_problem_document(port: int, raw: bytes, says: str) -> None:
    status, headers, body = await _answer(port, raw)
    assert status == 400 and headers["content-type"].startswith("application/problem+json")
    doc = json.loads(body)
    assert doc["type"].endswith("/unparsable-request") and doc["status"] == 400 and doc["title"] == "Bad Request"
    assert says in doc["detail"]
    assert SECRET.encode() not in body and b"X-Big" not in body  # the request is never quoted back
    assert re.fullmatch(r"req_[0-9a-f]{16}", headers["x-request-id"])  # like every other answer


async def test_a_request_the_parser_accepts_is_answered_by_the_app(port: int) -> None:
    status, headers, body = await _answer(port, b"GET /api/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 401 and headers["content-type"].startswith("application/problem+json")


def test_an_error_outside_every_handler_is_an_internal_problem_without_details() -> None:
    doc = unparsable_problem(500, RuntimeError("a secret in the message"))
    assert doc["type"].endswith("/internal") and doc["status"] == 500 and "secret" not in json.dumps(doc)


def test_the_aiohttp_parts_this_relies_on_are_where_they_were() -> None:
    """If an upgrade moves them, this fails here (and the tests above fail) rather than in production."""
    params = list(inspect.signature(web_protocol.RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    server = web.Server(lambda request: None, loop=asyncio.new_event_loop(), max_line_size=1)  # type: ignore[arg-type,return-value]
    try:
        assert server._kwargs == {"max_line_size": 1} and server._loop is not None
    finally:
        server._loop.close()


def test_serve_runs_the_api_on_this_runner() -> None:
    assert "ProblemAppRunner(app" in inspect.getsource(serve.Server.start)


async def test_the_answer_and_the_log_event_of_an_unparsable_request_share_a_request_id(engine: Engine) -> None:
    """Every answer carries an X-Request-Id that finds its log events; a request the parser refuses had
    none (the app's middleware never ran): it gets a new id, in the answer and in the logged error."""
    import dispatchsim.server.serve as serve_module

    runner = ProblemAppRunner(web.Application(), access_log=None, logger=serve_module._protocol_logger(engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        mark = len(engine.log_buffer.getvalue())
        status, headers, _ = await _answer(port, HEAD + b"X-Echo: x\x01\r\n\r\n")
        [line] = engine.log_buffer.getvalue()[mark:].splitlines()
        event = json.loads(line)
        assert status == 400 and event["event"] == "http.unparsable_request"
        assert event["request_id"] == headers["x-request-id"]
    finally:
        await runner.cleanup()
