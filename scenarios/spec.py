"""The scenario file format: strict parsing with file:line:key errors, before anything runs."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from dispatchsim.engine.clock import VIRTUAL_EPOCH, parse_iso
from dispatchsim.engine.errors import ConfigError
from dispatchsim.providers import ProviderConfigError, ProvidersConfig, parse_config, yaml_with_lines

from .actions import ACTIONS, Action
from .errors import ScenarioError
from .expect import BY_KEY, Expectation
from .external import DEFAULT_MAX_RATE, DEFAULT_MAX_REQUESTS, MAX_RATE, MAX_REQUESTS, ExternalProvider
from .parsing import CONFIG_KEYS, ParseContext, Reader, kind_of


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
    """One timeline event: an action (one of :data:`.actions.ACTIONS`) at a simulated offset."""

    at: float
    action: Action
    line: int | None = None
    index: int = 0  #: position in the timeline (stable sort)

    @property
    def kind(self) -> str:
        return self.action.key


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
    #: per external provider: its URL with the hard caps on request rate and count
    external_limits: dict[str, ExternalProvider] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)
    configurations: list[ConfigSpec] = field(default_factory=list)
    #: Reteno message-event webhooks: account (tenant) -> {provider, batch_size, max_wait, …}
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeline: list[Event] = field(default_factory=list)
    #: the expectations the file states, by their key under ``expect:`` (see :data:`.expect.EXPECTATIONS`)
    expect: dict[str, Expectation] = field(default_factory=dict)
    base_dir: Path = Path(".")


EXTERNAL_KEYS = {"url", "max_rate", "max_requests"}
TOP_KEYS = {"name", "description", "seed", "clock", "duration", "start", "providers", "tenants",
            "configurations", "accounts", "timeline", "expect"}
ACCOUNT_KEYS = {"provider", "batch_size", "max_wait", "retry", "auth", "signing_secret", "timeouts", "circuit_breaker",
                "auto_disable"}
EVENT_KINDS = set(ACTIONS)
EXPECT_KEYS = set(BY_KEY)


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
    P = Reader(source, lines)
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

    simulated, external, limits = _providers(P, data.get("providers"))
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
    ctx = ParseContext(reader=P, tenants=tenants, configs=frozenset(c.id for c in configs),
                       providers=frozenset(providers),
                       endpoints=frozenset(simulated.endpoints) if simulated else frozenset(),
                       accounts=frozenset(accounts), duration=duration)
    timeline = _timeline(ctx, data.get("timeline", []))
    expect = _expect(ctx, data.get("expect", {}))
    return Scenario(name=name, source=source, description=description, seed=seed, clock=clock, duration=duration,
                    start=start, simulated=simulated, external=external, external_limits=limits, tenants=tenants,
                    configurations=configs, accounts=accounts, timeline=timeline, expect=expect, base_dir=base_dir or Path("."))


def _providers(P: Reader, value: Any) -> tuple[ProvidersConfig | None, dict[str, str], dict[str, ExternalProvider]]:
    if value is None:
        raise P.fail((), "missing required key 'providers' (simulated endpoints or external URLs)")
    if not isinstance(value, dict) or not value:
        raise P.fail(("providers",), "expected a mapping of provider name -> endpoint settings")
    simulated: dict[str, Any] = {}
    external: dict[str, str] = {}
    limits: dict[str, ExternalProvider] = {}
    for name, spec in value.items():
        if isinstance(spec, dict) and "url" in spec:
            extra = sorted(set(spec) - EXTERNAL_KEYS)
            if extra:
                raise P.fail(("providers", name, extra[0]), "an external provider takes only url, max_rate and "
                                                            "max_requests: behaviours apply to simulated endpoints")
            url = spec["url"]
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise P.fail(("providers", name, "url"), f"expected an http(s) URL, got {url!r}")
            external[name] = url
            limits[name] = ExternalProvider(name, url, _max_rate(P, name, spec.get("max_rate", DEFAULT_MAX_RATE)),
                                            _max_requests(P, name, spec.get("max_requests", DEFAULT_MAX_REQUESTS)))
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
                                line=exc.line, field=key or None) from None
    return config, external, limits


def _max_rate(P: Reader, name: str, value: Any) -> float:
    """``5``, ``5/s`` or ``300/m``: requests per second to that URL, at most."""
    rate: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
    elif isinstance(value, str) and "/" in value:
        number, _, unit = value.partition("/")
        per = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip())
        try:
            rate = float(number) / per if per else None
        except ValueError:
            rate = None
    if rate is None or not 0 < rate <= MAX_RATE:
        raise P.fail(("providers", name, "max_rate"), f"expected a rate above 0 and at most {MAX_RATE:g}/s "
                                                      f"(e.g. 5/s), got {value!r}")
    return rate


def _max_requests(P: Reader, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REQUESTS:
        raise P.fail(("providers", name, "max_requests"), f"expected a whole number from 1 to {MAX_REQUESTS}, "
                                                          f"got {value!r}")
    return value


def _tenants(P: Reader, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        out = {}
        for i, t in enumerate(value):
            out[P.string(t, ("tenants", i))] = t
        return out
    if isinstance(value, dict):
        return {P.string(k, ("tenants", k)): (v if isinstance(v, str) else k) for k, v in value.items()}
    raise P.fail(("tenants",), f"expected a list of tenant ids, got {kind_of(value)}")


def _accounts(P: Reader, value: Any, tenants: dict[str, str], providers: set[str]) -> dict[str, dict[str, Any]]:
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
        webhook = P.durations(webhook, path)
        try:
            WebhookSettings.parse({**webhook, "url": "http://127.0.0.1:1/check"})
        except ConfigError as exc:
            raise P.fail(path, str(exc)) from None
        out[acc] = {"provider": provider, "webhook": webhook}
    return out


def _configs(P: Reader, value: Any, tenants: dict[str, str], providers: set[str], base: Path,
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
        fields = P.durations({k: v for k, v in spec.items() if k in (
            "auth", "signing_secret", "mapping", "retry", "ordering", "timeouts", "circuit_breaker", "auto_disable")},
            path)
        if isinstance(fields.get("mapping"), str):
            fields["mapping"] = _mapping_file(P, base / fields["mapping"], path + ("mapping",))
        P.config_fields(fields, path)
        active = spec.get("active", True)
        if not isinstance(active, bool):
            raise P.fail(path + ("active",), "expected true or false")
        activation = spec.get("activation", "ok")
        if activation not in ("ok", "refused"):
            raise P.fail(path + ("activation",), "expected ok or refused (what the verification GET should do)")
        out.append(ConfigSpec(id=cid, tenant=tenant, provider=provider, channel=channel, fields=fields,
                              active=active, activation=activation, line=P.line(path)))
    return out


def _mapping_file(P: Reader, path: Path, where: tuple) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise P.fail(where, f"cannot read mapping file {str(path)!r}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise P.fail(where, f"mapping file {str(path)!r} is not valid YAML/JSON: {exc}") from None


def _timeline(ctx: ParseContext, value: Any) -> list[Event]:
    P = ctx.reader
    if not isinstance(value, list):
        raise P.fail(("timeline",), f"expected a list of events, got {kind_of(value)}")
    events: list[Event] = []
    for i, ev in enumerate(value):
        path = ("timeline", i)
        P.mapping(ev, path, EVENT_KINDS | {"at"}, "a timeline event")
        if "at" not in ev:
            raise P.fail(path, "missing required key 'at' (a simulated time such as 10m or 2h30m)")
        at = P.duration(ev["at"], path + ("at",))
        if at > ctx.duration:
            raise P.fail(path + ("at",), f"{ev['at']} is after the scenario's duration")
        kinds = [k for k in ev if k != "at"]
        if len(kinds) != 1:
            raise P.fail(path, f"expected exactly one action besides 'at' (one of: {', '.join(sorted(EVENT_KINDS))}),"
                               f" got {', '.join(kinds) or 'none'}")
        kind = kinds[0]
        action = ACTIONS[kind].parse(ev[kind], path + (kind,), replace(ctx, at=at))
        events.append(Event(at=at, action=action, line=P.line(path), index=i))
    return sorted(events, key=lambda e: (e.at, e.index))


def _expect(ctx: ParseContext, value: Any) -> dict[str, Expectation]:
    if value is None:
        return {}
    path = ("expect",)
    ctx.reader.mapping(value, path, EXPECT_KEYS, "the expectations")
    return {key: BY_KEY[key].parse(v, path + (key,), ctx) for key, v in value.items()}
