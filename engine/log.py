"""Structured events: one per transition, on the engine's clock, secrets redacted (:mod:`.redact`)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from .clock import iso
from .redact import Redactor

def make_logger(*, now: Callable[[], float], redactor: Redactor, stream: TextIO | None = None,
                fmt: str = "json", sinks: list[Callable[[dict[str, Any]], None]] | None = None) -> Any:
    """An engine-local structlog logger (no global configuration is touched).

    ``stream=None`` writes nowhere; ``sinks`` receive each event dict (already redacted),
    which is how the demo and the scenario runner follow what happens.
    """
    sink_list = sinks if sinks is not None else []

    def add_time(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["ts"] = iso(now())
        return event

    def fan_out(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        for sink in sink_list:
            sink(dict(event))
        return event

    if stream is None:
        renderer: Any = lambda _l, _m, e: ""  # noqa: E731 - events go to sinks only
        out = _NullFile()
    elif fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
        out = stream
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json)
        out = stream
    # merge_contextvars: what serve mode binds for a request (its request_id) goes on every event of it
    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, add_time,
                             redactor, fan_out]
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        processors=[*processors, renderer],
        # the processors are fixed for this engine's life: bind them once, not on every event
        cache_logger_on_first_use=True,
    )
    return EngineLog(logger, sinks=sink_list, direct=None if stream is not None else processors)


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


class _NullFile:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass
