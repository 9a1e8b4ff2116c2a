"""What every part of a scenario file's parser shares: where each key lives, and what the file declared.

An expectation or a timeline action parses its own value (see :mod:`.expect` and :mod:`.actions`); it gets a
:class:`ParseContext` that knows the file's line map and the names the rest of the file declared
(tenants, configurations, endpoints, accounts), so its errors can say ``file:line: key: message``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dispatchsim.engine.config import build_snapshot
from dispatchsim.engine.errors import ConfigError
from dispatchsim.providers.durations import parse_duration

from .errors import ScenarioError

KeyPath = tuple[str | int, ...]
Lines = dict[KeyPath, int]

#: Keys of one dispatch configuration in a scenario file.
CONFIG_KEYS = {"id", "tenant", "provider", "channel", "auth", "signing_secret", "mapping", "retry", "ordering",
               "timeouts", "circuit_breaker", "auto_disable", "active", "activation"}
#: The configuration fields a timeline ``edit`` may change.
EDITABLE_KEYS = CONFIG_KEYS - {"id", "tenant", "provider", "channel", "active", "activation"}
#: configuration fields whose values are durations: written 30s / 10m / 6h in scenario files
DURATION_FIELDS = {"retry": ("base", "cap", "max_age", "retry_after_ceiling"), "timeouts": ("connect", "total"),
                   "circuit_breaker": ("window", "cooldown"), "auto_disable": ("after",)}
_TEXT_FIELDS = {"preset", "jitter", "mode", "on_exhausted", "partition_key", "type", "header", "value", "token",
                "username", "password"}


def dotted(path: KeyPath) -> str:
    """``("configurations", 0, "retry")`` -> ``configurations[0].retry``: the key as a user writes it."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def kind_of(value: Any) -> str:
    """What a value is, in words, for "expected X, got Y" messages."""
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value}"}.get(
        type(value), f"{type(value).__name__} {value!r}")


class Reader:
    """Parsing helpers that know where each key lives; every failure names ``file:line: key``."""

    def __init__(self, source: str, lines: Lines) -> None:
        self.source, self.lines = source, lines

    def line(self, path: KeyPath) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def fail(self, path: KeyPath, message: str) -> ScenarioError:
        return ScenarioError(message, source=self.source, line=self.line(path), field=dotted(path) or None)

    def mapping(self, value: Any, path: KeyPath, allowed: set[str], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping ({what}), got {kind_of(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(path + (key,), f"unknown key {key!r} in {what} (expected one of: "
                                               f"{', '.join(sorted(allowed))})")
        return value

    def duration(self, value: Any, path: KeyPath) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def integer(self, value: Any, path: KeyPath, lo: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise self.fail(path, f"expected an integer >= {lo}, got {value!r}")
        return value

    def string(self, value: Any, path: KeyPath) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {kind_of(value)}")
        return value

    def boolean(self, value: Any, path: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false")
        return value

    def config_ref(self, value: Any, path: KeyPath, configs: frozenset[str]) -> str:
        """A configuration id the file declared."""
        cid = self.string(value, path)
        if cid not in configs:
            raise self.fail(path, f"unknown configuration {cid!r} (configurations: {', '.join(sorted(configs))})")
        return cid

    def durations(self, fields: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        """Turn durations written as text (``5m``, ``1h30m``) into the seconds the engine takes."""
        out = dict(fields)
        for key, names in DURATION_FIELDS.items():
            value = out.get(key)
            if not isinstance(value, dict):
                continue
            value = dict(value)
            for name in names:
                if isinstance(value.get(name), str):
                    value[name] = self.duration(value[name], path + (key, name))
            if key == "retry" and isinstance(value.get("schedule"), list):
                value["schedule"] = [self.duration(d, path + (key, "schedule", i))
                                     for i, d in enumerate(value["schedule"])]
            out[key] = value
        return out

    def config_fields(self, fields: dict[str, Any], path: KeyPath) -> None:
        """Validate configuration fields now, before anything runs (the URL is a stand-in)."""
        stand_in = {"endpoint_url": "http://127.0.0.1:1/check"}
        try:
            build_snapshot({**fields, **stand_in})
        except ConfigError as exc:
            raise self.fail(path + (_config_key(str(exc)),), str(exc)) from None
        except (TypeError, ValueError) as exc:  # a wrong type the engine's validation does not name, e.g. cap: 1h
            key = "configuration"
            for name in fields:
                try:
                    build_snapshot({name: fields[name], **stand_in})
                except (ConfigError, TypeError, ValueError):
                    key = name
                    break
            value = fields.get(key)
            texts = [k for k, v in value.items() if isinstance(v, str) and k not in _TEXT_FIELDS] \
                if isinstance(value, dict) else []
            if texts:
                raise self.fail(path + (key, texts[0]), f"expected a number (seconds for times), got "
                                                        f"{value[texts[0]]!r}") from None
            raise self.fail(path + (key,), f"invalid value: {exc}") from None


def _config_key(message: str) -> str:
    for key in ("auth", "signing_secret", "mapping", "retry", "ordering", "timeouts", "circuit_breaker",
                "auto_disable"):
        if message.startswith(key) or message.startswith(f"{key} ") or message.startswith(f"{key}:") \
                or message.startswith(f"{key}."):
            return key
    if message.startswith("retry policy"):
        return "retry"
    return "configuration"


@dataclass(frozen=True)
class ParseContext:
    """The file's line map and what the rest of the scenario declared, for one expectation or action."""

    reader: Reader
    tenants: dict[str, str]  #: tenant id -> name
    configs: frozenset[str] = frozenset()  #: configuration ids
    providers: frozenset[str] = frozenset()  #: simulated and external provider names
    endpoints: frozenset[str] = frozenset()  #: simulated endpoints (their behaviour can change)
    accounts: frozenset[str] = frozenset()  #: accounts with a message-event webhook
    duration: float = 48 * 3600.0
    at: float = 0.0  #: the timeline event's own time (actions only)
