"""What every part of a scenario file's parser shares: where each key lives, and what the file declared.

An expectation or a timeline action parses its own value (see :mod:`.expect` and :mod:`.actions`); it gets a
:class:`ParseContext` that knows the file's line map and the names the rest of the file declared
(tenants, configurations, endpoints, accounts), so its errors can say ``file:line: key: message``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dispatchsim.engine.config import SECTION_KEYS, build_snapshot
from dispatchsim.engine.core import check_id
from dispatchsim.engine.errors import ConfigError
from dispatchsim.errors import Collector, ReportedAlready, misspelt
from dispatchsim.providers.durations import parse_duration
from dispatchsim.yamlfile import dotted

from .errors import ScenarioError

KeyPath = tuple[str | int, ...]
Lines = dict[KeyPath, int]
K = TypeVar("K")
T = TypeVar("T")

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


def kind_of(value: Any) -> str:
    """What a value is, in words, for "expected X, got Y" messages."""
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value}"}.get(
        type(value), f"{type(value).__name__} {value!r}")


class Reader:
    """Parsing helpers that know where each key lives; every failure names ``file:line: key``.

    ``found`` gathers the problems of a whole file: parts of the parser guard each item
    (``with reader.found.guard(): ...``) and go on, so one run reports every mistake. Within one
    mapping, each key is checked on its own (a local :class:`Collector`), and an unknown key is one
    more problem, not the end of the mapping's checks.
    """

    def __init__(self, source: str, lines: Lines) -> None:
        self.source, self.lines = source, lines
        self.found = Collector()
        #: the unknown keys found in each mapping, by its path (a missing key may be one of them misspelt)
        self.unknown: dict[KeyPath, list[Any]] = {}

    def line(self, path: KeyPath) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def fail(self, path: KeyPath, message: str) -> ScenarioError:
        return ScenarioError(message, source=self.source, line=self.line(path), field=dotted(path) or None)

    def mapping(self, value: Any, path: KeyPath, allowed: set[str] | frozenset[str] | None,
                what: str) -> dict[str, Any]:
        """``value``'s known keys (None: any key; the names are not known). A key not ``allowed`` is one
        more problem of the file, put in :attr:`found` rather than raised, so the caller checks the known
        keys all the same; it is left out of what is returned, so nothing reports it a second time."""
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping ({what}), got {kind_of(value)}")
        if allowed is None:
            return value
        unknown = [key for key in value if key not in allowed]
        if not unknown:
            return value
        expected = ", ".join(sorted(allowed))
        self.found.errors.extend(self.fail(path + (key,), f"unknown key {key!r} in {what} (expected one of: "
                                                          f"{expected})") for key in unknown)
        self.unknown.setdefault(path, []).extend(unknown)
        return {key: v for key, v in value.items() if key in allowed}

    def required(self, value: dict[str, Any], path: KeyPath, key: str, message: str | None = None) -> Any:
        """``value[key]`` of the mapping at ``path``; when missing, the problem, unless an unknown key
        written there is probably ``key`` misspelt (:class:`ReportedAlready`: that key said it already)."""
        if key in value:
            return value[key]
        if misspelt(key, self.unknown.get(path, ())):
            raise ReportedAlready()
        raise self.fail(path, message or f"missing required key {key!r}")

    def each(self, value: Mapping[K, Any], check: Callable[[K, Any], T]) -> dict[K, T]:
        """``check(key, item)`` of every entry, each on its own: the problems of all of them are raised together."""
        found = Collector()
        out: dict[K, T] = {}
        for key, item in value.items():
            with found.guard():
                out[key] = check(key, item)
        found.raise_if_any(ScenarioError)
        return out

    def each_item(self, value: list[Any], check: Callable[[int, Any], T]) -> list[T]:
        """``check(index, item)`` of every item of a list, each on its own (see :meth:`each`)."""
        return list(self.each(dict(enumerate(value)), check).values())

    def known(self, name: str, path: KeyPath, names: frozenset[str] | None, what: str) -> str:
        """``name`` is one of the ``names`` the file declared (None: that part of the file is itself
        invalid, so the name is not checked again)."""
        if names is not None and name not in names:
            raise self.fail(path, f"unknown {what} {name!r} ({what}s: {', '.join(sorted(names))})")
        return name

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

    def identifier(self, value: Any, path: KeyPath, kind: str) -> str:
        """A tenant or configuration id, by the rule the engine and the API apply (checked here so a
        wrong one is ``file:line``, not an error once the run has started)."""
        text = self.string(value, path)
        try:
            return check_id(kind, text)
        except ConfigError as exc:
            raise self.fail(path, exc.message) from None

    def boolean(self, value: Any, path: KeyPath) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "expected true or false")
        return value

    def config_ref(self, value: Any, path: KeyPath, configs: frozenset[str] | None) -> str:
        """A configuration id the file declared."""
        return self.known(self.string(value, path), path, configs, "configuration")

    def durations(self, fields: dict[str, Any], path: KeyPath) -> dict[str, Any]:
        """Configuration fields as the engine takes them: an unknown key of a nested object (``retry``,
        ``timeouts``, …) is one more problem and is left out; durations written as text (``5m``,
        ``1h30m``) become seconds, each checked on its own."""
        out = dict(fields)
        for key, value in fields.items():
            if key in SECTION_KEYS and isinstance(value, dict):
                out[key] = self.mapping(value, path + (key,), SECTION_KEYS[key], key)
        found = Collector()
        for key, names in DURATION_FIELDS.items():
            value = out.get(key)
            if not isinstance(value, dict):
                continue
            value = dict(value)
            for name in names:
                if isinstance(value.get(name), str):
                    with found.guard():
                        value[name] = self.duration(value[name], path + (key, name))
            if key == "retry" and isinstance(value.get("schedule"), list):
                with found.guard():
                    value["schedule"] = self.each_item(value["schedule"],
                                                       lambda i, d: self.duration(d, path + (key, "schedule", i)))
            out[key] = value
        found.raise_if_any(ScenarioError)
        return out

    def config_fields(self, fields: dict[str, Any], path: KeyPath, *, url: str | None = None,
                      url_path: KeyPath = ()) -> None:
        """Validate configuration fields now, before anything runs: with an external provider's
        ``url`` (written at ``url_path``; checked already where the provider is declared, and given
        only when valid), else with a stand-in for a simulated endpoint's."""
        stand_in = {"endpoint_url": url or "http://127.0.0.1:1/check"}
        try:
            build_snapshot({**fields, **stand_in})
        except ConfigError as exc:
            if exc.field == "endpoint_url" and url is not None:
                raise self.fail(url_path, exc.message) from None
            where = tuple(exc.field.split(".")) if exc.field else ("configuration",)
            raise self.fail(path + where, exc.message) from None
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


@dataclass(frozen=True)
class ParseContext:
    """The file's line map and what the rest of the scenario declared, for one expectation or action."""

    reader: Reader
    tenants: dict[str, str]  #: tenant id -> name
    #: The names the file declares; None where that part of the file is itself invalid (its own errors are
    #: reported, references to it are not checked again).
    configs: frozenset[str] | None = frozenset()  #: configuration ids
    providers: frozenset[str] | None = frozenset()  #: simulated and external provider names
    endpoints: frozenset[str] | None = frozenset()  #: simulated endpoints (their behaviour can change)
    accounts: frozenset[str] | None = frozenset()  #: accounts with a message-event webhook
    #: external provider name -> its URL (a configuration's fields are checked against it)
    urls: Mapping[str, str] = field(default_factory=dict)
    duration: float = 48 * 3600.0
    at: float = 0.0  #: the timeline event's own time (actions only)
