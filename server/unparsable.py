"""Requests aiohttp's HTTP parser refuses, answered as problem documents like every other error.

aiohttp answers a request it cannot parse (a duplicate ``Content-Type``, a header over its limit, a
request line that is not HTTP) by itself, before any handler or middleware runs, with a ``text/plain``
400 built in ``RequestHandler.handle_error``; it has no hook for that answer (aio-libs/aiohttp#3287 is
open). This module is the one place that reaches into aiohttp's unexported parts to change it: a runner
whose server makes its connections' handlers of a subclass that answers with ``application/problem+json``.
It depends on ``BaseRunner._make_server``, ``Server``'s ``_loop`` and ``_kwargs`` (what ``Server.__call__``
builds a handler from) and ``RequestHandler.handle_error(request, status, exc, message)``;
``tests/test_serve_unparsable.py`` pins them, so an aiohttp upgrade that moves them fails the tests, not
a running service. The answer never quotes the request (aiohttp's text did: its bytes, which may carry a
credential); the server log still has aiohttp's error, scrubbed (see ``serve._protocol_logger``).
"""
from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import http_exceptions, web, web_protocol
from aiohttp.web_request import BaseRequest

from .logs import REQUEST_ID_HEADER, new_request_id
from .problems import PROBLEM_BASE, PROBLEM_TYPE, TITLES

#: What the caller is told, by the parser's error class (the first that matches, most specific first).
REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (http_exceptions.LineTooLong, "the request line or a header is longer than this server accepts"),
    (http_exceptions.BadStatusLine, "the request line is not 'METHOD /path HTTP/1.1'"),
    (http_exceptions.InvalidURLError, "the request target is not a valid path"),
    (http_exceptions.BadHttpMessage, "the request's headers or framing are not valid HTTP/1.1 (e.g. a header"
                                     " given twice that may appear once, such as Content-Type or Content-Length,"
                                     " or a character not allowed in a header)"),
)


def abandon_body(request: BaseRequest) -> str:
    """Give up the body of ``request``, which aiohttp's parser failed on as a handler read it (its
    ``RequestPayloadError``: ``Content-Encoding: gzip`` on a body that is not); return why, for the caller.

    The parser has dropped the rest of the body, so the connection cannot carry another request: the
    answer must close it (``force_close``). The body's stream is ended here, or aiohttp would read it
    once more after the answer and log the same failure as an unhandled exception. The reason names the
    ``Content-Encoding`` the body did not match and never quotes aiohttp's message, which for a framing
    error may quote the request's bytes.
    """
    request.content.feed_eof()
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding and encoding != "identity":
        return (f"the request body is not valid {encoding} data, as its Content-Encoding says; send the body "
                "compressed, or without the header; nothing was done")
    return "the request body is cut short or its framing is not valid HTTP/1.1; nothing was done"


def unparsable_problem(status: int, exc: BaseException | None) -> dict[str, Any]:
    """The problem document for an answer aiohttp makes itself: ``status`` and why, never the request."""
    if 400 <= status < 500:
        reason = next((text for cls, text in REASONS if isinstance(exc, cls)), "the request is not valid HTTP/1.1")
        slug, detail = "unparsable-request", f"{reason}; nothing was done"
    else:  # an error outside every handler (the API's own errors are answered by its middleware)
        slug, detail = "internal", "internal error; see the server log"
    return {"type": PROBLEM_BASE + slug, "title": TITLES.get(status, "Error"), "status": status, "detail": detail}


class _ProblemRequestHandler(web_protocol.RequestHandler):
    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's own handling first (it logs the error, and raises when an answer has begun), then
        its answer replaced, closing the connection as aiohttp's does."""
        # a new request id (the request's own header was not read): in the answer and in the log event
        # aiohttp's handling writes, as for every other request (logs.request_log_middleware)
        rid = new_request_id()
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            super().handle_error(request, status, exc, message)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        resp = web.Response(status=status, text=json.dumps(unparsable_problem(status, exc)),
                            content_type=PROBLEM_TYPE, headers={REQUEST_ID_HEADER: rid})
        resp.force_close()
        return resp


class _ProblemServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections answer unparsable requests with problem+json."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _ProblemServer(server.request_handler, request_factory=server.request_factory,
                              handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs)


__all__ = ["REASONS", "ProblemAppRunner", "unparsable_problem", "abandon_body"]
