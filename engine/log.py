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
    return structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        # merge_contextvars: what serve mode binds for a request (its request_id) goes on every event of it
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, add_time, redactor,
                    fan_out, renderer],
        # the processors are fixed for this engine's life: bind them once, not on every event
        cache_logger_on_first_use=True,
    )


def _json(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False, default=str)


class _NullFile:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass

