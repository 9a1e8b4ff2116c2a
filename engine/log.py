"""Structured events: one per transition, on the engine's clock, secrets redacted (:mod:`.redact`)."""
from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from .clock import iso
from .redact import Redactor


def make_logger(*, now: Callable[[], float], redactor: Redactor, stream: TextIO | None = None,
                fmt: str = "json", sinks: list[Callable[[dict[str, Any]], None]] | None = None) -> Any:
    """An engine-local structlog logger (no global configuration is touched).

    ``stream=None`` writes nowhere; ``sinks`` receive each event dict (already redacted),
    which is how the demo and the scenario runner follow what happens.
    """
    sink_list = sinks if sinks is not None else []
    if stream is None:
        # events go to sinks only: structlog is not needed (nor imported: about 0.09 s of a command's start)
        return EngineLog(None, sinks=sink_list, direct=[_merge_contextvars, _add_log_level, _time_stamper(now),
                                                        redactor, _fan_out(sink_list)])
    import structlog

    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json)
    # merge_contextvars: what serve mode binds for a request (its request_id) goes on every event of it
    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                             _time_stamper(now), redactor, _fan_out(sink_list)]
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=stream),
        processors=[*processors, renderer],
        # the processors are fixed for this engine's life: bind them once, not on every event
        cache_logger_on_first_use=True,
    )
    return EngineLog(logger, sinks=sink_list, direct=None)


Processor = Callable[[Any, str, dict[str, Any]], dict[str, Any]]


def _time_stamper(now: Callable[[], float]) -> Processor:
    def add_time(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["ts"] = iso(now())
        return event

    return add_time


def _fan_out(sinks: list[Callable[[dict[str, Any]], None]]) -> Processor:
    """Each subscriber gets its copy of the event. One that raises is unsubscribed, and its error goes
    to the event loop's exception handler (asyncio's usual channel for a failed callback): events are
    logged in the middle of the engine's work (a group commit, a dispatch cycle), which a subscriber's
    bug, or its closed pipe, must not break."""
    def fan_out(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        for sink in list(sinks):
            try:
                sink(dict(event))
            except Exception as exc:
                if sink in sinks:
                    sinks.remove(sink)
                _report(f"event subscriber {sink!r} raised {type(exc).__name__} on {event.get('event')!r}:"
                        " unsubscribed", exc)
        return event

    return fan_out


def _report(message: str, exc: BaseException) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # logged outside a loop (a synchronous caller): nobody else to tell
        return
    loop.call_exception_handler({"message": message, "exception": exc})


def _merge_contextvars(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog's ``merge_contextvars`` when structlog's context variables are in use: values can be
    bound only through that module, so before it is imported there is nothing to merge."""
    context = sys.modules.get("structlog.contextvars")
    return event if context is None else context.merge_contextvars(logger, method, event)


def _add_log_level(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog's ``add_log_level`` for the engine's own methods (debug … critical: the level is the
    method's name)."""
    event["level"] = method
    return event


class EngineLog:
    """The engine's logger: structlog's, made cheaper when nothing is written.

    An engine without a log stream and without subscribers (a library user's, a benchmark's) would
    still build, time-stamp and redact every event only to drop it: one event per transition is
    a measurable share of the CPU an attempt costs. ``sinks`` is the engine's list of subscribers,
    which can grow at any time, so the test is made per event. With subscribers but no stream (the
    scenario runner), the same processors run on the event directly: structlog's wrapping and a
    renderer whose output nobody reads are skipped."""

    __slots__ = ("_logger", "_sinks", "_direct")

    def __init__(self, logger: Any, *, sinks: list[Callable[[dict[str, Any]], None]],
                 direct: list[Any] | None) -> None:
        self._logger, self._sinks, self._direct = logger, sinks, direct

    @property
    def quiet(self) -> bool:
        """True while an event would be dropped unread (no stream, no subscriber): a caller may then
        skip building its fields."""
        return self._direct is not None and not self._sinks

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if self._direct is None:
            getattr(self._logger, level)(event, **fields)
        elif self._sinks:
            data: Any = dict(fields)
            data["event"] = event  # as structlog builds it: the fields, then the event's name
            for processor in self._direct:
                data = processor(None, level, data)

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level debug."""
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level info."""
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level warning."""
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level error."""
        self._log("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Log ``event`` at level critical (a library's CRITICAL record, routed here in serve mode)."""
        self._log("critical", event, fields)


def _json(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False, default=str)
