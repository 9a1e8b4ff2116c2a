"""Serve mode's log: every line is a structlog JSON event, with the request's id and an access log.

Each request gets an id (``X-Request-Id``: the caller's, when it is a short token, or a new one),
bound in structlog's context variables so every event logged while the request runs carries it,
and returned in the response header. One ``http.request`` event per request is the access log.
Log records of aiohttp and of the standard library (anything using :mod:`logging`) are forwarded to
the same structlog logger as one event each, tracebacks reduced to one line, so the stream stays
one JSON object per line.
"""
from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

REQUEST_ID_HEADER = "X-Request-Id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


def request_id_of(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SAFE_ID.fullmatch(given) else new_request_id()


def request_log_middleware(log: Any, on_response: Callable[[web.Request, int], None] | None = None) -> Any:
    """The outermost middleware: request id in, header out, one access event per request."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        rid = request_id_of(request)
        structlog.contextvars.bind_contextvars(request_id=rid)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers[REQUEST_ID_HEADER] = rid
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        finally:
            log.info("http.request", method=request.method, path=request.path, status=status,
                     duration_ms=round((time.perf_counter() - started) * 1000, 3), remote=request.remote)
            if on_response is not None:
                on_response(request, status)
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


class StructlogHandler(logging.Handler):
    """A :mod:`logging` handler that sends each record to a structlog logger as one event."""

    def __init__(self, log: Any, redactor: Any) -> None:
        super().__init__(level=logging.INFO)
        self.log, self.redactor = log, redactor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            # messages and errors may quote request bytes: scrubbed first, then cut (the one redaction)
            fields: dict[str, Any] = {"logger": record.name,
                                      "message": self.redactor.error(" ".join(record.getMessage().split()), cap=1000)}
            if exc is not None:
                fields["error"] = self.redactor.error(f"{type(exc).__name__}: {' '.join(str(exc).split())}", cap=300)
            level = record.levelname.lower()
            method = getattr(self.log, level if level in ("debug", "info", "warning", "error", "critical")
                             else "info")
            method("log.record", **fields)
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def route_stdlib_logging(log: Any, redactor: Any) -> Callable[[], None]:
    """Send every :mod:`logging` record (root logger: aiohttp's, asyncio's, APScheduler's …) through
    ``log``, scrubbed by ``redactor``; returns the function that undoes it."""
    root = logging.getLogger()
    handler = StructlogHandler(log, redactor)
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    scheduler = logging.getLogger("apscheduler")
    scheduler_level = scheduler.level
    scheduler.setLevel(logging.WARNING)  # not "Running job …" twice a second: the jobs log their own results

    def undo() -> None:
        root.handlers[:], level = saved
        root.setLevel(level)
        scheduler.setLevel(scheduler_level)

    return undo
