"""Endpoint configuration: strict, data-only, with errors that name file, line and field.

The same structure is read from a standalone YAML file (:func:`load_config`) and from the
``providers:`` part of a scenario file (:func:`parse_config`, given the line map of that part).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dispatchsim.errors import Collector, ReportedAlready, misspelt
from dispatchsim.yamlfile import dotted as _dotted
from dispatchsim.yamlfile import load_file

from .behaviour import (
    FAULTS,
    OK,
    REFUSE,
    Behaviour,
    Fault,
    Latency,
    Mix,
    Respond,
    Sequence,
    Window,
    Windows,
)
from .durations import parse_duration
from .errors import ProviderConfigError

Path = tuple[str | int, ...]
Lines = Mapping[Path, int]


@dataclass(frozen=True, kw_only=True)
class AuthCheck:
    """Credentials the receiver expects; anything else gets a 401."""

    type: str  #: api_key | bearer | basic
    header: str = "X-Api-Key"  #: api_key only
    value: str = ""  #: the API key or the bearer token
    username: str = ""
    password: str = ""


@dataclass(frozen=True, kw_only=True)
class SchemaCheck:
    """Fields (dotted paths) every payload object must carry; otherwise 400."""

    required: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ResultsCallback:
    """After a 2xx, POST the activity result back to the sender (Reten's results API)."""

    url: str
    delay: float = 5.0
    api_key: str | None = None
    header: str = "X-Api-Key"
    status: str = "COMPLETED"
    result: Mapping[str, Any] = field(default_factory=lambda: {"outcome": "DONE"})
    once: bool = True  #: one callback per activity id, even if it is delivered twice


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """One simulated endpoint as the provider file describes it: where it listens and how it behaves.

    Made by :func:`load_config` / :func:`parse_config`, which report a bad field as
    ``file:line: field: message``.
    """

    name: str
    path: str = "/hooks"
    port: int | None = None
    behaviour: Behaviour = OK
    verify_get: Behaviour = OK
    auth: AuthCheck | None = None
    signing_secret: str | None = None
    signature_tolerance: float | None = None
    schema: SchemaCheck | None = None
    results_callback: ResultsCallback | None = None


@dataclass(frozen=True)
class ProvidersConfig:
    """A parsed provider file: its endpoints by name, and the file they came from (``source``)."""

    endpoints: dict[str, EndpointConfig]
    source: str = "<config>"


# --------------------------------------------------------------------------- entry points


def load_config(path: str | os.PathLike[str]) -> ProvidersConfig:
    """Read a providers YAML file; errors name the file, line and field."""
    data, lines = load_file(path, error=ProviderConfigError, what="the providers file")
    if data is None:
        raise ProviderConfigError("the file is empty; the providers config must be a mapping with 'endpoints'",
                                  source=os.fspath(path), line=1)
    return parse_config(data, source=os.fspath(path), lines=lines)


def parse_config(data: Any, *, source: str = "<config>", lines: Lines | None = None) -> ProvidersConfig:
    """Validate the ``{endpoints: {...}}`` structure (already parsed) into a :class:`ProvidersConfig`.

    ``lines`` maps key paths (relative to ``data``) to line numbers; see :func:`dispatchsim.yamlfile.load_yaml`.
    """
    return _Parser(source, lines or {}).config(data)


def parse_behaviour(data: Any, *, source: str = "<behaviour>", lines: Lines | None = None) -> Behaviour:
    """Validate one behaviour (the value of ``behaviour:``), e.g. for ``set_behaviour``."""
    parser = _Parser(source, lines or {})
    with parser.found.guard():
        behaviour = parser.behaviour(data, (), allow_refuse=True)
    parser.raise_found()
    return behaviour


# --------------------------------------------------------------------------- the parser

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENDPOINT_KEYS = {"path", "port", "behaviour", "verify_get", "auth", "signing_secret", "signature_tolerance",
                  "schema", "results_callback"}
_RESPOND_KEYS = {"status", "body", "content_type", "headers", "latency", "retry_after", "retry_after_date",
                 "location"}
_FAULT_KEYS = {
    "hang": set(),
    "headers_then_stall": {"status", "headers"},
    "slow_body": {"status", "headers", "body", "chunk", "interval"},
    "truncated": {"status", "headers", "body", "send"},
    "garbage": {"data"},
    "reset": set(),
    "close": set(),
    REFUSE: set(),
}
_COMPOSITES = {"mix": {"mix"}, "sequence": {"sequence", "cycle"}, "windows": {"windows", "else"}}


class _Parser:
    """Validates a providers config; it goes on after a mistake, so one run reports every problem."""

    def __init__(self, source: str, lines: Lines) -> None:
        self.source = source
        self.lines = lines
        self.found = Collector()
        #: the unknown keys found in each mapping, by its path (a missing key may be one of them misspelt)
        self.unknown: dict[Path, list[Any]] = {}

    def fail(self, path: Path, message: str) -> ProviderConfigError:
        line = None
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                line = self.lines[path[:n]]
                break
        return ProviderConfigError(message, source=self.source, line=line, field=_dotted(path) or None)

    def raise_found(self) -> None:
        """Every problem found, top to bottom."""
        self.found.errors.sort(key=lambda e: e.line or 0)
        self.found.raise_if_any(ProviderConfigError)

    def mapping(self, value: Any, path: Path, allowed: set[str], what: str) -> dict[str, Any]:
        """``value``'s known keys. An unknown key is one more problem of the file, put in :attr:`found`
        rather than raised, so the caller checks the known keys all the same; it is left out of what is
        returned, so nothing reports it a second time."""
        if not isinstance(value, dict):
            raise self.fail(path, f"{what} must be a mapping, got {_kind(value)}")
        unknown = [key for key in value if key not in allowed]
        if not unknown:
            return value
        self.found.errors.extend(self.fail(path + (key,), f"unknown key {key!r} in {what}; allowed: "
                                                          f"{', '.join(sorted(allowed))}") for key in unknown)
        self.unknown.setdefault(path, []).extend(unknown)
        return {key: v for key, v in value.items() if key in allowed}

    def required(self, value: dict[str, Any], path: Path, key: str, message: str) -> Any:
        """``value[key]`` of the mapping at ``path``; when missing, the problem, unless an unknown key
        written there is probably ``key`` misspelt (:class:`ReportedAlready`: that key said it already)."""
        if key in value:
            return value[key]
        if misspelt(key, self.unknown.get(path, ())):
            raise ReportedAlready()
        raise self.fail(path, message)

    def each(self, value: dict[str, Any], path: Path, checks: Mapping[str, Any]) -> dict[str, Any]:
        """``checks[key](value[key], path + (key,))`` for each key present, each on its own: the problems
        of all of them are raised together."""
        found = Collector()
        out: dict[str, Any] = {}
        for key, check in checks.items():
            if key in value:
                with found.guard():
                    out[key] = check(value[key], path + (key,))
        found.raise_if_any(ProviderConfigError)
        return out

    def parts(self, value: dict[str, Any], path: Path, checks: Mapping[str, Any], missing: str) -> dict[str, Any]:
        """Like :meth:`each`, every key of ``checks`` required (a missing one is one more problem)."""
        found = Collector()
        for key in checks:
            with found.guard():
                self.required(value, path, key, missing)
        got: dict[str, Any] = {}
        with found.guard():
            got = self.each(value, path, checks)
        found.raise_if_any(ProviderConfigError)
        return got

    # ---- top level

    def config(self, data: Any) -> ProvidersConfig:
        out: dict[str, EndpointConfig] = {}
        with self.found.guard():
            out = self.endpoints(data)
        self.raise_found()
        return ProvidersConfig(out, self.source)

    def endpoints(self, data: Any) -> dict[str, EndpointConfig]:
        top = self.mapping(data, (), {"endpoints"}, "the providers config")
        endpoints = self.required(top, (), "endpoints", "missing required key 'endpoints'")
        if not isinstance(endpoints, dict) or not endpoints:
            raise self.fail(("endpoints",), "endpoints must be a non-empty mapping of name -> endpoint")
        out: dict[str, EndpointConfig] = {}
        for name, spec in endpoints.items():
            path: Path = ("endpoints", name)
            with self.found.guard():
                if not isinstance(name, str) or not _NAME.match(name):
                    raise self.fail(path, f"endpoint name {name!r} must be letters, digits, '_', '.', '-'")
                out[name] = self.endpoint(name, spec if spec is not None else {}, path)
        owners: dict[int, str] = {}  # port -> the endpoint that has it first
        for name, endpoint in out.items():
            if endpoint.port and endpoint.port in owners:  # said where, and whose it is ("two endpoints" before)
                self.found.errors.append(self.fail(("endpoints", name, "port"), f"port {endpoint.port} is endpoint "
                                                   f"{owners[endpoint.port]}'s too: give each endpoint its own"))
            elif endpoint.port:
                owners[endpoint.port] = name
        return out

    def endpoint(self, name: str, spec: Any, path: Path) -> EndpointConfig:
        spec = self.mapping(spec, path, _ENDPOINT_KEYS, f"endpoint {name!r}")
        kw: dict[str, Any] = {"name": name}
        for key, value in spec.items():
            with self.found.guard():
                kw[key] = self.endpoint_field(key, value, path + (key,))
        return EndpointConfig(**kw)

    def endpoint_field(self, key: str, value: Any, path: Path) -> Any:
        if key == "path":
            if not isinstance(value, str) or not value.startswith("/") or "?" in value:
                raise self.fail(path, f"must be an absolute URL path like /hooks, got {value!r}")
            return value
        if key == "port":
            return self.integer(value, path, 0, 65535)
        if key in ("behaviour", "verify_get"):
            return self.behaviour(value, path, allow_refuse=key == "behaviour")
        if key == "auth":
            return self.auth(value, path)
        if key == "signing_secret":
            return self.string(value, path)
        if key == "signature_tolerance":
            return self.duration(value, path)
        if key == "schema":
            req = self.mapping(value, path, {"required"}, "schema").get("required", [])
            if not isinstance(req, list) or not all(isinstance(x, str) and x for x in req):
                raise self.fail(path + ("required",), "must be a list of field names (dotted paths allowed)")
            return SchemaCheck(required=tuple(req))
        return self.callback(value, path)  # results_callback, the last of _ENDPOINT_KEYS

    def auth(self, value: Any, path: Path) -> AuthCheck:
        if not isinstance(value, dict) or value.get("type") not in ("api_key", "bearer", "basic"):
            raise self.fail(path + ("type",), "auth.type must be one of api_key, bearer, basic")
        kind = value["type"]
        allowed = {"api_key": {"type", "header", "value"}, "bearer": {"type", "token"},
                   "basic": {"type", "username", "password"}}[kind]
        value = self.mapping(value, path, allowed, f"{kind} auth")
        checks = {"header": self.string, "value": self.string, "token": self.string, "username": self.string,
                  "password": lambda v, p: self.string(v, p, allow_empty=True)}
        got = self.parts(value, path, {key: checks[key] for key in sorted(allowed - {"type", "header"})},
                         f"{kind} auth needs {' and '.join(repr(k) for k in sorted(allowed - {'type', 'header'}))}")
        if "header" in value:
            got.update(self.each(value, path, {"header": self.string}))
        if kind == "api_key":
            return AuthCheck(type=kind, header=got.get("header", "X-Api-Key"), value=got["value"])
        if kind == "bearer":
            return AuthCheck(type=kind, value=got["token"])
        return AuthCheck(type=kind, username=got["username"], password=got["password"])

    def callback(self, value: Any, path: Path) -> ResultsCallback:
        allowed = {"url", "delay", "api_key", "header", "status", "result", "once"}
        spec = self.mapping(value, path, allowed, "results_callback")
        found = Collector()  # each key is checked on its own
        with found.guard():
            self.required(spec, path, "url", "results_callback needs 'url'")
        kw: dict[str, Any] = {}
        with found.guard():
            kw = self.each(spec, path, {"url": self.url, "delay": self.duration, "api_key": self.string,
                                        "header": self.string, "status": self.string, "result": self.result,
                                        "once": self.flag})
        found.raise_if_any(ProviderConfigError)
        return ResultsCallback(**kw)

    def url(self, value: Any, path: Path) -> str:
        url = self.string(value, path)
        if not re.match(r"^https?://", url):
            raise self.fail(path, f"must be an http(s) URL, got {url!r}")
        return url

    def result(self, value: Any, path: Path) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping (sent as the result object)")
        return value

    def flag(self, value: Any, path: Path) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false")
        return value

    # ---- behaviours

    def behaviour(self, value: Any, path: Path, *, allow_refuse: bool) -> Behaviour:
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"status": value}
        elif isinstance(value, str) and value in FAULTS:
            value = {"fault": value}
        if not isinstance(value, dict):
            raise self.fail(path, f"a behaviour must be a mapping, a status code or a fault name, got {_kind(value)}")
        composite = [k for k in _COMPOSITES if k in value]
        if len(composite) > 1:
            raise self.fail(path, f"choose one of mix, sequence, windows (got {', '.join(composite)})")
        if composite:
            kind = composite[0]
            value = self.mapping(value, path, _COMPOSITES[kind], kind)
            if kind == "mix":
                return self.mix(value["mix"], path + ("mix",))
            if kind == "sequence":
                return self.sequence(value, path)
            return self.windows(value, path, allow_refuse=allow_refuse)
        if "fault" in value:
            return self.fault(value, path, allow_refuse=allow_refuse)
        return self.respond(value, path)

    def _entries(self, value: Any, path: Path, extra: set[str], what: str) -> list[tuple[dict, Path]]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"{what} must be a non-empty list")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, int) and not isinstance(item, bool):
                item = {"status": item}
            elif isinstance(item, str) and item in FAULTS:
                item = {"fault": item}
            if not isinstance(item, dict):
                raise self.fail(path + (i,), f"each {what} entry must be a mapping, got {_kind(item)}")
            out.append((item, path + (i,)))
        return out

    @staticmethod
    def _rest(item: dict, extra: set[str]) -> dict:
        return {k: v for k, v in item.items() if k not in extra}

    def mix(self, value: Any, path: Path) -> Mix:
        entries = self._entries(value, path, {"p"}, "mix")
        fixed: list[float | None] = []
        for item, ipath in entries:
            if "p" in item:
                p = item["p"]
                if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
                    raise self.fail(ipath + ("p",), f"p must be a probability between 0 and 1, got {p!r}")
                fixed.append(float(p))
            else:
                fixed.append(None)
        total = sum(p for p in fixed if p is not None)
        free = fixed.count(None)
        if total > 1 + 1e-9:
            raise self.fail(path, f"probabilities sum to {total:g}, more than 1")
        if not free and abs(total - 1) > 1e-9:
            raise self.fail(path, f"probabilities sum to {total:g}; give one entry no 'p' to take the rest")
        rest = (1 - total) / free if free else 0.0
        found = Collector()  # each entry is checked on its own
        choices = []
        for p, (item, ipath) in zip(fixed, entries):
            with found.guard():
                choices.append((p if p is not None else rest,
                                self.behaviour(self._rest(item, {"p"}), ipath, allow_refuse=False)))
        found.raise_if_any(ProviderConfigError)
        return Mix(choices=tuple(choices))

    def sequence(self, value: dict, path: Path) -> Sequence:
        entries = self._entries(value["sequence"], path + ("sequence",), {"times"}, "sequence")
        found = Collector()  # each entry, its times and its behaviour, and cycle: each on its own
        steps = []
        for item, ipath in entries:
            times = 1
            with found.guard():
                times = self.integer(item.get("times", 1), ipath + ("times",), 1, None)
            with found.guard():
                steps.append((times, self.behaviour(self._rest(item, {"times"}), ipath, allow_refuse=False)))
        cycle = False
        with found.guard():
            cycle = self.flag(value.get("cycle", False), path + ("cycle",))
        found.raise_if_any(ProviderConfigError)
        return Sequence(steps=tuple(steps), cycle=cycle)

    def windows(self, value: dict, path: Path, *, allow_refuse: bool) -> Windows:
        entries = self._entries(value["windows"], path + ("windows",), {"from", "to"}, "windows")
        found = Collector()  # each window's times and behaviour, and else: each on its own
        windows = []
        for item, ipath in entries:
            with found.guard():
                windows.append(self.window(item, ipath, allow_refuse=allow_refuse))
        otherwise: Behaviour = OK
        with found.guard():
            if "else" in value:
                otherwise = self.behaviour(value["else"], path + ("else",), allow_refuse=allow_refuse)
        found.raise_if_any(ProviderConfigError)
        return Windows(windows=tuple(windows), otherwise=otherwise)

    def window(self, item: dict[str, Any], path: Path, *, allow_refuse: bool) -> Window:
        found = Collector()
        start, end = 0.0, None
        with found.guard():
            start = self.duration(item.get("from", 0), path + ("from",))
            end = self.duration(item["to"], path + ("to",)) if "to" in item else None
            if end is not None and end <= start:
                raise self.fail(path + ("to",), "'to' must be later than 'from'")
        behaviour: Behaviour = OK
        with found.guard():
            inner = self._rest(item, {"from", "to"})
            if not inner:
                raise self.fail(path, "a window needs a behaviour (e.g. status: 503 or fault: refuse)")
            behaviour = self.behaviour(inner, path, allow_refuse=allow_refuse)
        found.raise_if_any(ProviderConfigError)
        return Window(start=start, end=end, behaviour=behaviour)

    def respond(self, value: dict, path: Path) -> Respond:
        value = self.mapping(value, path, _RESPOND_KEYS, "a response")
        kw = self.each(value, path, {  # each key is checked on its own
            "status": self.status, "body": self.body, "content_type": self.string, "headers": self.headers,
            "latency": self.latency, "retry_after": self.retry_after, "retry_after_date": self.duration,
            "location": self.string})
        if "body" in kw:
            kw["body"], content_type = kw["body"]
            kw.setdefault("content_type", content_type)
        return Respond(**kw)

    def status(self, value: Any, path: Path) -> int:
        return self.integer(value, path, 200, 599)

    def retry_after(self, value: Any, path: Path) -> str:
        """Seconds (``120``, ``2m``, rounded up) or an HTTP-date string, sent as written."""
        try:
            return str(int(-(-parse_duration(value) // 1)))
        except ValueError:
            if not isinstance(value, str) or not value.strip():
                raise self.fail(path, f"must be seconds (120, 2m) or an HTTP-date string, got {value!r}") from None
            return value.strip()

    def fault(self, value: dict, path: Path, *, allow_refuse: bool) -> Fault:
        kind = value["fault"]
        if kind not in FAULTS:
            raise self.fail(path + ("fault",), f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
        if kind == REFUSE and not allow_refuse:
            raise self.fail(path + ("fault",), "refuse closes the whole port, so it can only be an endpoint's "
                                               "entire behaviour or a time window's behaviour (not in a mix, "
                                               "a sequence or verify_get)")
        allowed = {"fault"} | _FAULT_KEYS[kind] | (set() if kind == REFUSE else {"latency"})
        value = self.mapping(value, path, allowed, f"fault {kind}")
        kw = self.each(value, path, {  # each key is checked on its own
            "status": self.status, "headers": self.headers, "latency": self.latency, "body": self.fault_body,
            "chunk": lambda v, p: self.integer(v, p, 1, None), "interval": self.duration,
            "send": lambda v, p: self.integer(v, p, 0, None),
            "data": lambda v, p: self.string(v, p).encode("utf-8")})
        fault = Fault(kind=kind, **kw)
        if fault.send is not None and fault.send >= len(fault.body):
            raise self.fail(path + ("send",), f"must be less than the body length ({len(fault.body)} bytes)")
        return fault

    def fault_body(self, value: Any, path: Path) -> bytes:
        body, _ = self.body(value, path)
        if not body:
            raise self.fail(path, "must not be empty for this fault")
        return body

    def latency(self, value: Any, path: Path) -> Latency:
        if not isinstance(value, dict):
            return Latency(kind="fixed", a=self.duration(value, path))
        if len(value) != 1:
            raise self.fail(path, "latency needs exactly one of fixed, uniform, normal, lognormal")
        kind, spec = next(iter(value.items()))
        sub = path + (kind,)
        if kind == "fixed":
            return Latency(kind=kind, a=self.duration(spec, sub))
        if kind == "uniform":
            if not isinstance(spec, list) or len(spec) != 2:
                raise self.fail(sub, "uniform latency is [low, high], e.g. [100ms, 2s]")
            lo, hi = self.duration(spec[0], sub + (0,)), self.duration(spec[1], sub + (1,))
            if hi < lo:
                raise self.fail(sub, "high must not be below low")
            return Latency(kind=kind, a=lo, b=hi)
        if kind == "normal":
            s = self.mapping(spec, sub, {"mean", "stddev"}, "normal latency")
            got = self.parts(s, sub, {"mean": self.duration, "stddev": self.duration},
                             "normal latency needs mean and stddev")
            return Latency(kind=kind, a=got["mean"], b=got["stddev"])
        if kind == "lognormal":
            s = self.mapping(spec, sub, {"median", "sigma"}, "lognormal latency")
            got = self.parts(s, sub, {"median": self.duration, "sigma": self.sigma},
                             "lognormal latency needs median (a duration) and sigma (a number)")
            return Latency(kind=kind, a=got["median"], b=got["sigma"])
        raise self.fail(sub, f"unknown latency distribution {kind!r}; one of fixed, uniform, normal, lognormal")

    # ---- scalars

    def sigma(self, value: Any, path: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise self.fail(path, f"must be a number >= 0, got {value!r}")
        return float(value)

    def body(self, value: Any, path: Path) -> tuple[bytes, str | None]:
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), "application/json"
        if value is None:
            return b"", None
        if isinstance(value, str):
            return value.encode("utf-8"), None
        raise self.fail(path, f"body must be a string or a mapping/list (sent as JSON), got {_kind(value)}")

    def headers(self, value: Any, path: Path) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise self.fail(path, "headers must be a mapping of name -> value")
        out = []
        for k, v in value.items():
            if not isinstance(k, str) or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", k):
                raise self.fail(path + (k,), f"invalid header name {k!r}")
            if isinstance(v, (dict, list)) or v is None or "\n" in str(v) or "\r" in str(v):
                raise self.fail(path + (k,), "header value must be a single-line string")
            out.append((k, str(v)))
        return tuple(out)

    def integer(self, value: Any, path: Path, lo: int, hi: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise self.fail(path, f"must be an integer {rng}, got {value!r}")
        return value

    def string(self, value: Any, path: Path, *, allow_empty: bool = False) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (not value and not allow_empty):
            raise self.fail(path, f"must be a non-empty string, got {_kind(value)}")
        return value

    def duration(self, value: Any, path: Path) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None


def check_host(host: str) -> str:
    """Endpoints bind to an IP address, never a name (``localhost`` may resolve to ::1 first)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ProviderConfigError(f"host must be an IP address such as 127.0.0.1, got {host!r}",
                                  source="<EndpointSet>", field="host") from None
    return host


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}" if isinstance(value, (str, int, float, bool)) else type(value).__name__
