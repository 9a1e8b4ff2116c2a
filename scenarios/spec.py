"""The scenario file format: strict parsing with file:line:key errors, before anything runs."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from dispatchsim.engine.clock import VIRTUAL_EPOCH, parse_iso
from dispatchsim.engine.config import build_snapshot
from dispatchsim.engine.errors import ConfigError
from dispatchsim.providers import ProviderConfigError, ProvidersConfig, parse_behaviour, parse_config, yaml_with_lines
from dispatchsim.providers.durations import parse_duration

Lines = dict[tuple, int]
STATUSES = ("READY", "RETRYING", "DISPATCHED", "FAILED")


class ScenarioError(ValueError):
    """The scenario file is invalid; nothing was run.

    The message names the file, the line, the key and what was expected.
    """

    def __init__(self, message: str, *, source: str, line: int | None = None, key: str | None = None) -> None:
        self.source, self.line, self.key = source, line, key
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True)
class ConfigSpec:
    id: str
    tenant: str
    provider: str
    channel: str
    fields: dict[str, Any]  #: engine configuration fields (auth, retry, ordering, mapping, …) without endpoint_url
    active: bool = True
    activation: str = "ok"  #: "ok" or "refused": what the verification GET is expected to do
    line: int | None = None


@dataclass(frozen=True)
class Event:
    at: float
    kind: str  #: create | endpoint | activate | deactivate | edit | force_retry | skip | crash
    args: dict[str, Any]
    line: int | None = None
    index: int = 0  #: position in the timeline (stable sort)


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    description: str = ""
    seed: int = 0
    clock: str = "virtual"
    duration: float = 48 * 3600.0
    start: float = VIRTUAL_EPOCH
    simulated: ProvidersConfig | None = None
    external: dict[str, str] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)
    configurations: list[ConfigSpec] = field(default_factory=list)
    #: Reteno message-event webhooks: account (tenant) -> {provider, batch_size, max_wait, …}
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeline: list[Event] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)
    expect_lines: dict[str, int] = field(default_factory=dict)
    base_dir: Path = Path(".")


TOP_KEYS = {"name", "description", "seed", "clock", "duration", "start", "providers", "tenants",
            "configurations", "accounts", "timeline", "expect"}
ACCOUNT_KEYS = {"provider", "batch_size", "max_wait", "retry", "auth", "signing_secret", "timeouts"}
MESSAGE_KEYS = {"account", "count", "every", "status", "fields"}
CONFIG_KEYS = {"id", "tenant", "provider", "channel", "auth", "signing_secret", "mapping", "retry", "ordering",
               "timeouts", "circuit_breaker", "auto_disable", "active", "activation"}
#: configuration fields whose values are durations: written 30s / 10m / 6h in scenario files
DURATION_FIELDS = {"retry": ("base", "cap", "max_age", "retry_after_ceiling"), "timeouts": ("connect", "total"),
                   "circuit_breaker": ("window", "cooldown"), "auto_disable": ("after",)}
EVENT_KINDS = {"create", "endpoint", "activate", "deactivate", "edit", "force_retry", "skip", "crash", "replay",
               "message_events"}
CREATE_KEYS = {"tenant", "channel", "count", "every", "rate", "for", "cron", "until", "activity", "generate"}
EXPECT_KEYS = {"all_delivered", "counts", "order", "max_duplicates", "attempts_per_delivery", "retry_delays",
               "delivered_by", "failed", "mapping_shape", "no_secrets_in_logs", "activation_refused",
               "received", "notifications", "inactive", "events_received", "duplicates"}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
MAX_GENERATED = 200_000


class _P:
    """Parsing helpers that know where each key lives."""

    def __init__(self, source: str, lines: Lines) -> None:
        self.source, self.lines = source, lines

    def line(self, path: tuple) -> int | None:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def fail(self, path: tuple, message: str) -> ScenarioError:
        key = ""
        for part in path:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        return ScenarioError(message, source=self.source, line=self.line(path), key=key or None)

    def mapping(self, value: Any, path: tuple, allowed: set[str], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping ({what}), got {_kind(value)}")
        for key in value:
            if key not in allowed:
                raise self.fail(path + (key,), f"unknown key {key!r} in {what} (expected one of: "
                                               f"{', '.join(sorted(allowed))})")
        return value

    def duration(self, value: Any, path: tuple) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None

    def integer(self, value: Any, path: tuple, lo: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise self.fail(path, f"expected an integer >= {lo}, got {value!r}")
        return value

    def string(self, value: Any, path: tuple) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value}"}.get(
        type(value), f"{type(value).__name__} {value!r}")


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    return parse_scenario(text, source=str(path), base_dir=p.parent)


def parse_scenario(text: str, *, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    try:
        data, lines = yaml_with_lines(text, source=source)
    except ProviderConfigError as exc:
        raise ScenarioError(str(exc).split(": ", 1)[-1], source=source, line=exc.line) from None
    P = _P(source, lines)
    if data is None:
        raise ScenarioError("the file is empty; a scenario needs at least name, providers, configurations",
                            source=source, line=1)
    P.mapping(data, (), TOP_KEYS, "a scenario")
    if "name" not in data:
        raise P.fail((), "missing required key 'name'")
    name = P.string(data["name"], ("name",))
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise P.fail(("description",), "expected a string")
    seed = P.integer(data.get("seed", 0), ("seed",))
    duration = P.duration(data.get("duration", "48h"), ("duration",))
    if duration <= 0:
        raise P.fail(("duration",), "must be > 0")
    start = VIRTUAL_EPOCH
    if "start" in data:
        try:
            start = parse_iso(str(data["start"]))
        except ValueError:
            raise P.fail(("start",), f"expected an ISO-8601 timestamp, got {data['start']!r}") from None

    simulated, external = _providers(P, data.get("providers"))
    clock = data.get("clock")
    if clock not in (None, "virtual", "real"):
        raise P.fail(("clock",), f"expected virtual or real, got {clock!r}")
    if external and clock == "virtual":
        raise P.fail(("clock",), f"provider(s) {', '.join(sorted(external))} are external URLs, which only work "
                                 "on the real clock: use clock: real (or remove clock:)")
    clock = clock or ("real" if external else "virtual")

    tenants = _tenants(P, data.get("tenants"))
    providers = set(external) | set(simulated.endpoints if simulated else ())
    accounts = _accounts(P, data.get("accounts"), tenants, providers)
    configs = _configs(P, data.get("configurations"), tenants, providers, base_dir or Path("."),
                       required=not accounts)
    timeline = _timeline(P, data.get("timeline", []), tenants, {c.id for c in configs},
                         set(simulated.endpoints) if simulated else set(), duration, set(accounts))
    expect, expect_lines = _expect(P, data.get("expect", {}), providers, {c.id for c in configs})
    return Scenario(name=name, source=source, description=description, seed=seed, clock=clock, duration=duration,
                    start=start, simulated=simulated, external=external, tenants=tenants, configurations=configs,
                    accounts=accounts,
                    timeline=timeline, expect=expect, expect_lines=expect_lines, base_dir=base_dir or Path("."))


def _providers(P: _P, value: Any) -> tuple[ProvidersConfig | None, dict[str, str]]:
    if value is None:
        raise P.fail((), "missing required key 'providers' (simulated endpoints or external URLs)")
    if not isinstance(value, dict) or not value:
        raise P.fail(("providers",), "expected a mapping of provider name -> endpoint settings")
    simulated: dict[str, Any] = {}
    external: dict[str, str] = {}
    for name, spec in value.items():
        if isinstance(spec, dict) and "url" in spec:
            if set(spec) != {"url"}:
                extra = sorted(set(spec) - {"url"})
                raise P.fail(("providers", name, extra[0]), "an external provider takes only url: "
                                                            "behaviours apply to simulated endpoints")
            url = spec["url"]
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise P.fail(("providers", name, "url"), f"expected an http(s) URL, got {url!r}")
            external[name] = url
        else:
            simulated[name] = spec if spec is not None else {}
    config = None
    if simulated:
        sub_lines = {("endpoints",) + p[1:]: n for p, n in P.lines.items() if p[:1] == ("providers",)}
        try:
            config = parse_config({"endpoints": simulated}, source=P.source, lines=sub_lines)
        except ProviderConfigError as exc:
            key = (exc.field or "").replace("endpoints.", "providers.", 1)
            raise ScenarioError(str(exc).split(": ", 2)[-1] if exc.field else str(exc), source=P.source,
                                line=exc.line, key=key or None) from None
    return config, external


def _tenants(P: _P, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        out = {}
        for i, t in enumerate(value):
            out[P.string(t, ("tenants", i))] = t
        return out
    if isinstance(value, dict):
        return {P.string(k, ("tenants", k)): (v if isinstance(v, str) else k) for k, v in value.items()}
    raise P.fail(("tenants",), f"expected a list of tenant ids, got {_kind(value)}")


def _accounts(P: _P, value: Any, tenants: dict[str, str], providers: set[str]) -> dict[str, dict[str, Any]]:
    """Reteno message-event webhooks, one per account (an account is a tenant)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise P.fail(("accounts",), "expected a mapping of account (tenant) id -> {provider, batch_size, max_wait}")
    from dispatchsim.engine.events import WebhookSettings

    out = {}
    for acc, spec in value.items():
        path = ("accounts", acc)
        P.mapping(spec, path, ACCOUNT_KEYS, "an account's message-event webhook")
        if tenants and acc not in tenants:
            raise P.fail(path, f"unknown tenant {acc!r} (tenants: {', '.join(tenants)}); an account is a tenant")
        tenants.setdefault(acc, acc)
        provider = P.string(spec.get("provider"), path + ("provider",))
        if provider not in providers:
            raise P.fail(path + ("provider",), f"unknown provider {provider!r} (providers: {', '.join(sorted(providers))})")
        webhook = {k: v for k, v in spec.items() if k != "provider"}
        if isinstance(webhook.get("max_wait"), str):
            webhook["max_wait"] = P.duration(webhook["max_wait"], path + ("max_wait",))
        webhook = _durations(P, webhook, path)
        try:
            WebhookSettings.parse({**webhook, "url": "http://127.0.0.1:1/check"})
        except ConfigError as exc:
            raise P.fail(path, str(exc)) from None
        out[acc] = {"provider": provider, "webhook": webhook}
    return out


def _configs(P: _P, value: Any, tenants: dict[str, str], providers: set[str], base: Path,
             required: bool = True) -> list[ConfigSpec]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value:
        raise P.fail(("configurations",), "expected a non-empty list of dispatch configurations")
    out: list[ConfigSpec] = []
    seen: set[str] = set()
    for i, spec in enumerate(value):
        path = ("configurations", i)
        P.mapping(spec, path, CONFIG_KEYS, "a dispatch configuration")
        for key in ("id", "tenant", "provider"):
            if key not in spec:
                raise P.fail(path, f"missing required key {key!r}")
        cid = P.string(spec["id"], path + ("id",))
        if cid in seen:
            raise P.fail(path + ("id",), f"duplicate configuration id {cid!r}")
        seen.add(cid)
        tenant = P.string(spec["tenant"], path + ("tenant",))
        if tenants and tenant not in tenants:
            raise P.fail(path + ("tenant",), f"unknown tenant {tenant!r} (tenants: {', '.join(tenants)})")
        tenants.setdefault(tenant, tenant)
        provider = P.string(spec["provider"], path + ("provider",))
        if provider not in providers:
            raise P.fail(path + ("provider",), f"unknown provider {provider!r} (providers: "
                                               f"{', '.join(sorted(providers))})")
        channel = P.string(spec.get("channel", "SALESMAN"), path + ("channel",))
        fields = _durations(P, {k: v for k, v in spec.items() if k in (
            "auth", "signing_secret", "mapping", "retry", "ordering", "timeouts", "circuit_breaker", "auto_disable")},
            path)
        if isinstance(fields.get("mapping"), str):
            fields["mapping"] = _mapping_file(P, base / fields["mapping"], path + ("mapping",))
        _check_config_fields(P, fields, path)
        active = spec.get("active", True)
        if not isinstance(active, bool):
            raise P.fail(path + ("active",), "expected true or false")
        activation = spec.get("activation", "ok")
        if activation not in ("ok", "refused"):
            raise P.fail(path + ("activation",), "expected ok or refused (what the verification GET should do)")
        out.append(ConfigSpec(id=cid, tenant=tenant, provider=provider, channel=channel, fields=fields,
                              active=active, activation=activation, line=P.line(path)))
    return out


def _durations(P: _P, fields: dict[str, Any], path: tuple) -> dict[str, Any]:
    """Turn durations written as text (``5m``, ``1h30m``) into the seconds the engine takes."""
    out = dict(fields)
    for key, names in DURATION_FIELDS.items():
        value = out.get(key)
        if not isinstance(value, dict):
            continue
        value = dict(value)
        for name in names:
            if isinstance(value.get(name), str):
                value[name] = P.duration(value[name], path + (key, name))
        if key == "retry" and isinstance(value.get("schedule"), list):
            value["schedule"] = [P.duration(d, path + (key, "schedule", i)) for i, d in enumerate(value["schedule"])]
        out[key] = value
    return out


def _check_config_fields(P: _P, fields: dict[str, Any], path: tuple) -> None:
    """Validate configuration fields now, before anything runs (the URL is a stand-in)."""
    stand_in = {"endpoint_url": "http://127.0.0.1:1/check"}
    try:
        build_snapshot({**fields, **stand_in})
    except ConfigError as exc:
        raise P.fail(path + (_config_key(str(exc)),), str(exc)) from None
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
            raise P.fail(path + (key, texts[0]), f"expected a number (seconds for times), got "
                                                 f"{value[texts[0]]!r}") from None
        raise P.fail(path + (key,), f"invalid value: {exc}") from None


_TEXT_FIELDS = {"preset", "jitter", "mode", "on_exhausted", "partition_key", "type", "header", "value", "token",
                "username", "password"}


def _config_key(message: str) -> str:
    for key in ("auth", "signing_secret", "mapping", "retry", "ordering", "timeouts", "circuit_breaker",
                "auto_disable"):
        if message.startswith(key) or message.startswith(f"{key} ") or message.startswith(f"{key}:") \
                or message.startswith(f"{key}."):
            return key
    if message.startswith("retry policy"):
        return "retry"
    return "configuration"


def _mapping_file(P: _P, path: Path, where: tuple) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise P.fail(where, f"cannot read mapping file {str(path)!r}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise P.fail(where, f"mapping file {str(path)!r} is not valid YAML/JSON: {exc}") from None


def _timeline(P: _P, value: Any, tenants: dict[str, str], configs: set[str], endpoints: set[str],
              duration: float, accounts: set[str] = frozenset()) -> list[Event]:
    if not isinstance(value, list):
        raise P.fail(("timeline",), f"expected a list of events, got {_kind(value)}")
    events: list[Event] = []
    for i, ev in enumerate(value):
        path = ("timeline", i)
        P.mapping(ev, path, EVENT_KINDS | {"at"}, "a timeline event")
        if "at" not in ev:
            raise P.fail(path, "missing required key 'at' (a simulated time such as 10m or 2h30m)")
        at = P.duration(ev["at"], path + ("at",))
        if at > duration:
            raise P.fail(path + ("at",), f"{ev['at']} is after the scenario's duration")
        kinds = [k for k in ev if k != "at"]
        if len(kinds) != 1:
            raise P.fail(path, f"expected exactly one action besides 'at' (one of: {', '.join(sorted(EVENT_KINDS))}),"
                               f" got {', '.join(kinds) or 'none'}")
        kind = kinds[0]
        arg = ev[kind]
        apath = path + (kind,)
        if kind == "create":
            args = _create(P, arg, apath, tenants, duration - at)
        elif kind == "endpoint":
            P.mapping(arg, apath, {"name", "behaviour"}, "an endpoint change")
            name = P.string(arg.get("name"), apath + ("name",))
            if name not in endpoints:
                raise P.fail(apath + ("name",), f"unknown simulated endpoint {name!r} (simulated: "
                                                f"{', '.join(sorted(endpoints)) or 'none'})")
            if "behaviour" not in arg:
                raise P.fail(apath, "missing required key 'behaviour'")
            try:
                parse_behaviour(arg["behaviour"], source=P.source)
            except ProviderConfigError as exc:
                raise P.fail(apath + ("behaviour",), str(exc).split(": ", 1)[-1]) from None
            args = {"name": name, "behaviour": arg["behaviour"]}
        elif kind in ("activate", "deactivate"):
            args = {"config": _config_ref(P, arg, apath, configs)}
        elif kind == "edit":
            P.mapping(arg, apath, {"config"} | (CONFIG_KEYS - {"id", "tenant", "provider", "channel", "active",
                                                               "activation"}), "a configuration edit")
            cid = _config_ref(P, arg.get("config"), apath + ("config",), configs)
            changes = _durations(P, {k: v for k, v in arg.items() if k != "config"}, apath)
            _check_config_fields(P, changes, apath)
            args = {"config": cid, "changes": changes}
        elif kind in ("force_retry", "skip"):
            if arg in (None, "all"):
                args = {"config": None}
            elif isinstance(arg, str):
                args = {"config": _config_ref(P, arg, apath, configs)}
            else:
                allowed = {"config", "reason", "since", "until"} if kind == "force_retry" else {"config"}
                P.mapping(arg, apath, allowed, f"a {kind}")
                args = {"config": _config_ref(P, arg["config"], apath + ("config",), configs)
                        if arg.get("config") is not None else None, "reason": arg.get("reason")}
                for key in ("since", "until"):  # creation time range, as offsets from the scenario start
                    if key in arg:
                        args[key] = P.duration(arg[key], apath + (key,))
        elif kind == "message_events":
            args = _message_events(P, arg, apath, accounts)
        elif kind == "replay":
            P.mapping(arg, apath, {"delivery"}, "a replay")
            args = {"delivery": P.integer(arg.get("delivery"), apath + ("delivery",), lo=1)}
        else:  # crash
            if arg is None:
                arg = {}
            P.mapping(arg, apath, {"restart_after"}, "a crash")
            args = {"restart_after": P.duration(arg.get("restart_after", 0), apath + ("restart_after",))}
        events.append(Event(at=at, kind=kind, args=args, line=P.line(path), index=i))
    return sorted(events, key=lambda e: (e.at, e.index))


def _message_events(P: _P, arg: Any, path: tuple, accounts: set[str]) -> dict[str, Any]:
    from dispatchsim.engine.events import EVENT_STATUSES, validate_event

    P.mapping(arg, path, MESSAGE_KEYS, "a batch of message events")
    if not accounts:
        raise P.fail(path, "no accounts: add a top-level 'accounts:' with the message-event webhook")
    account = arg.get("account")
    if account is None and len(accounts) == 1:
        account = next(iter(accounts))
    if account not in accounts:
        raise P.fail(path + ("account",), f"unknown account {account!r} (accounts: {', '.join(sorted(accounts))})")
    status = arg.get("status", "DELIVERED")
    if status != "mixed" and status not in EVENT_STATUSES:
        raise P.fail(path + ("status",), f"expected one of {', '.join(EVENT_STATUSES)} or mixed, got {status!r}")
    fields = arg.get("fields", {})
    if not isinstance(fields, dict):
        raise P.fail(path + ("fields",), "expected a mapping of the seed's event parameters")
    if fields:
        _, problems = validate_event({"activityStatus": "DELIVERED", **fields}, now=0.0, where="fields")
        problems = [p for p in problems if "only sent with" not in p]
        if problems:
            raise P.fail(path + ("fields",), "; ".join(problems))
    count = P.integer(arg.get("count", 1), path + ("count",), lo=1)
    every = P.duration(arg.get("every", 0), path + ("every",))
    return {"account": account, "status": status, "fields": fields, "offsets": [k * every for k in range(count)]}


def _config_ref(P: _P, value: Any, path: tuple, configs: set[str]) -> str:
    cid = P.string(value, path)
    if cid not in configs:
        raise P.fail(path, f"unknown configuration {cid!r} (configurations: {', '.join(sorted(configs))})")
    return cid


def _create(P: _P, arg: Any, path: tuple, tenants: dict[str, str], room: float) -> dict[str, Any]:
    if arg is None:
        arg = {}
    P.mapping(arg, path, CREATE_KEYS, "an activity generator")
    tenant = arg.get("tenant")
    if tenant is None:
        if len(tenants) != 1:
            raise P.fail(path, "missing 'tenant' (required when the scenario has several tenants)")
        tenant = next(iter(tenants))
    elif tenant not in tenants:
        raise P.fail(path + ("tenant",), f"unknown tenant {tenant!r} (tenants: {', '.join(tenants)})")
    channel = P.string(arg.get("channel", "SALESMAN"), path + ("channel",))
    activity = arg.get("activity", {})
    if not isinstance(activity, dict):
        raise P.fail(path + ("activity",), "expected a mapping of activity fields (seed payload names)")
    generate = arg.get("generate", True)
    if not isinstance(generate, bool):
        raise P.fail(path + ("generate",), "expected true or false")
    modes = [k for k in ("count", "rate", "cron") if k in arg]
    if len(modes) > 1:
        raise P.fail(path, f"use one of count, rate, cron — not {' and '.join(modes)}")
    offsets: list[float]
    if "rate" in arg:
        m = _RATE.match(str(arg["rate"]))
        if not m:
            raise P.fail(path + ("rate",), f"expected a rate like 5/s or 30/m, got {arg['rate']!r}")
        per_second = float(m.group(1)) / _RATE_UNITS[m.group(2)]
        if "for" not in arg:
            raise P.fail(path, "a rate needs 'for' (how long, e.g. for: 10m)")
        span = P.duration(arg["for"], path + ("for",))
        n = int(round(span * per_second))
        if per_second <= 0 or n > MAX_GENERATED:
            raise P.fail(path + ("rate",), f"makes {n} activities; the limit is {MAX_GENERATED}")
        offsets = [k / per_second for k in range(n)]
    elif "cron" in arg:
        offsets = _cron(P, arg, path, room)
    else:
        n = P.integer(arg.get("count", 1), path + ("count",), lo=1)
        if n > MAX_GENERATED:
            raise P.fail(path + ("count",), f"at most {MAX_GENERATED} activities per event")
        every = P.duration(arg.get("every", 0), path + ("every",))
        offsets = [k * every for k in range(n)]
    for key in ("for", "until", "every"):
        if key in arg and key not in {"rate": ("for",), "cron": ("until",)}.get(modes[0] if modes else "", ()) \
                and not (key == "every" and not modes or key == "every" and modes == ["count"]):
            raise P.fail(path + (key,), f"'{key}' does not apply here")
    return {"tenant": tenant, "channel": channel, "activity": activity, "generate": generate, "offsets": offsets}


def _cron(P: _P, arg: dict, path: tuple, room: float) -> list[float]:
    """Fire times of a crontab expression, computed with APScheduler's trigger (on the scenario's clock)."""
    from datetime import datetime, timedelta, timezone

    from apscheduler.triggers.cron import CronTrigger

    expr = arg["cron"]
    try:
        trigger = CronTrigger.from_crontab(str(expr), timezone=timezone.utc)
    except ValueError as exc:
        raise P.fail(path + ("cron",), f"not a crontab expression ({exc}); e.g. '*/15 * * * *'") from None
    until = P.duration(arg["until"], path + ("until",)) if "until" in arg else room
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)  # offsets only; the real start is added at run time
    out: list[float] = []
    prev = None
    now = t0 - timedelta(microseconds=1)
    while True:
        nxt = trigger.get_next_fire_time(prev, now)
        if nxt is None:
            break
        off = (nxt - t0).total_seconds()
        if off > until:
            break
        out.append(off)
        if len(out) > MAX_GENERATED:
            raise P.fail(path + ("cron",), f"fires more than {MAX_GENERATED} times before 'until'")
        prev, now = nxt, nxt
    return out


def _expect(P: _P, value: Any, providers: set[str], configs: set[str]) -> tuple[dict[str, Any], dict[str, int]]:
    if value is None:
        return {}, {}
    P.mapping(value, ("expect",), EXPECT_KEYS, "the expectations")
    out: dict[str, Any] = {}
    path = ("expect",)
    for key, v in value.items():
        kp = path + (key,)
        if key in ("all_delivered", "no_secrets_in_logs"):
            if not isinstance(v, bool):
                raise P.fail(kp, "expected true or false")
            out[key] = v
        elif key == "counts":
            P.mapping(v, kp, set(STATUSES), "counts per status")
            out[key] = {s: P.integer(n, kp + (s,)) for s, n in v.items()}
        elif key == "order":
            if v not in ("strict", "none"):
                raise P.fail(kp, "expected strict (every queue acknowledged in creation order) or none")
            out[key] = v
        elif key == "duplicates":
            P.mapping(v, kp, {"received", "acknowledged"}, "duplicate counts")
            out[key] = {k: P.integer(n, kp + (k,)) for k, n in v.items()}
        elif key == "max_duplicates":
            out[key] = P.integer(v, kp)
        elif key == "attempts_per_delivery":
            P.mapping(v, kp, {"max", "min", "exactly", "delivery"}, "attempts per delivery")
            out[key] = {k: P.integer(n, kp + (k,), lo=1) for k, n in v.items()}
        elif key == "retry_delays":
            spec = v if isinstance(v, dict) else {"delays": v}
            P.mapping(spec, kp, {"delivery", "delays"}, "retry delays")
            if not isinstance(spec.get("delays"), list) or not spec["delays"]:
                raise P.fail(kp, "expected a list of delays such as [1m, 2m, 4m, 8m]")
            out[key] = {"delivery": P.integer(spec.get("delivery", 1), kp + ("delivery",), lo=1),
                        "delays": [P.duration(d, kp + ("delays", i)) for i, d in enumerate(spec["delays"])]}
        elif key == "delivered_by":
            out[key] = P.duration(v, kp)
        elif key == "failed":
            if isinstance(v, int) and not isinstance(v, bool):
                out[key] = {"count": v}
            elif isinstance(v, list):
                out[key] = {"deliveries": [P.integer(x, kp + (i,), lo=1) for i, x in enumerate(v)]}
            elif isinstance(v, dict):
                P.mapping(v, kp, {"count", "deliveries", "reason"}, "the FAILED set")
                spec: dict[str, Any] = {}
                if "count" in v:
                    spec["count"] = P.integer(v["count"], kp + ("count",))
                if "deliveries" in v:
                    if not isinstance(v["deliveries"], list):
                        raise P.fail(kp + ("deliveries",), "expected a list of delivery ids")
                    spec["deliveries"] = [P.integer(x, kp + ("deliveries", i), lo=1)
                                          for i, x in enumerate(v["deliveries"])]
                if "reason" in v:
                    reasons = ("exhausted", "permanent_status", "mapping_error")
                    if v["reason"] not in reasons:
                        raise P.fail(kp + ("reason",), f"expected one of {', '.join(reasons)}, got {v['reason']!r}")
                    spec["reason"] = v["reason"]
                if "count" not in spec and "deliveries" not in spec:
                    raise P.fail(kp, "give count and/or deliveries (and optionally reason)")
                out[key] = spec
            else:
                raise P.fail(kp, "expected a count, a list of delivery ids, or {count, deliveries, reason}")
        elif key == "mapping_shape":
            P.mapping(v, kp, {"provider", "has", "lacks", "array", "equals"}, "a mapping shape")
            prov = P.string(v.get("provider"), kp + ("provider",))
            if prov not in providers:
                raise P.fail(kp + ("provider",), f"unknown provider {prov!r}")
            out[key] = dict(v)
        elif key == "activation_refused":
            if not isinstance(v, list):
                raise P.fail(kp, "expected a list of configuration ids")
            out[key] = [_config_ref(P, c, kp + (i,), configs) for i, c in enumerate(v)]
        elif key == "notifications":
            kinds = {"config.auto_disabled", "circuit.opened", "circuit.closed"}
            P.mapping(v, kp, kinds, "notification counts per kind")
            out[key] = {k: P.integer(n, kp + (k,)) for k, n in v.items()}
        elif key == "inactive":
            if not isinstance(v, list):
                raise P.fail(kp, "expected a list of configuration ids (inactive at the end)")
            out[key] = [_config_ref(P, c, kp + (i,), configs) for i, c in enumerate(v)]
        elif key == "events_received":
            P.mapping(v, kp, providers, "message events acknowledged per provider")
            out[key] = {p: P.integer(n, kp + (p,)) for p, n in v.items()}
        elif key == "received":
            P.mapping(v, kp, providers, "requests received per provider")
            out[key] = {p: P.integer(n, kp + (p,)) for p, n in v.items()}
    lines = {k: P.line(path + (k,)) or 0 for k in out}
    return out, lines
