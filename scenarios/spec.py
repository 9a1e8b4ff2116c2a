"""The scenario file format: strict parsing with file:line:key errors, before anything runs."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dispatchsim.engine.clock import VIRTUAL_EPOCH, iso, parse_iso
from dispatchsim.engine.errors import ConfigError
from dispatchsim.engine.redact import check_http_url
from dispatchsim.errors import Collector, ReportedAlready
from dispatchsim.mapping import MappingSpecError, load_mapping_file
from dispatchsim.providers import ProviderConfigError, ProvidersConfig, parse_config
from dispatchsim.yamlfile import file_path, load_yaml, read_text

from .actions import ACTIONS, Action
from .errors import ScenarioError
from .expect import Expectation
from .expect import kinds as expectation_kinds
from .external import DEFAULT_MAX_RATE, DEFAULT_MAX_REQUESTS, MAX_RATE, MAX_REQUESTS, ExternalProvider
from .parsing import CONFIG_KEYS, KeyPath, ParseContext, Reader, kind_of


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
    """A parsed scenario file: what to set up, what happens when, and what must hold at the end.

    Made by :func:`load_scenario` / :func:`parse_scenario`, which report a bad field as
    ``file:line: field: message`` before anything runs.
    Times are in seconds of the scenario clock.
    """

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
#: The longest simulated time a scenario may ask for: a year, hourly retries included, runs in seconds; a
#: mistyped duration (``48000h``) with a receiver that never recovers would run for ever.
MAX_DURATION = 366 * 86400.0
#: The latest instant a run may end at: the year after it leaves room for retries scheduled past the end,
#: and later times (year 10000) cannot be written as dates.
LATEST_END = datetime(9999, 1, 1, tzinfo=timezone.utc).timestamp()
TOP_KEYS = {"name", "description", "seed", "clock", "duration", "start", "providers", "tenants",
            "configurations", "accounts", "timeline", "expect"}
ACCOUNT_KEYS = {"provider", "batch_size", "max_wait", "retry", "auth", "signing_secret", "timeouts", "circuit_breaker",
                "auto_disable"}


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; every problem in it is reported at once (:class:`ScenarioError`)."""
    p = Path(file_path(path, "the scenario"))
    text = read_text(p, error=ScenarioError)
    return parse_scenario(text, source=str(path), base_dir=p.parent)


def parse_scenario(text: str, *, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Validate a scenario's YAML text. The parser goes on after a mistake, so a :class:`ScenarioError`
    carries every problem found (``errors``), each as ``file:line: key: message``."""
    data, lines = load_yaml(text, source=source, error=ScenarioError)
    if data is None:
        raise ScenarioError("the file is empty; a scenario needs at least name, providers, configurations",
                            source=source, line=1)
    if not isinstance(data, dict):
        raise ScenarioError(f"expected a mapping of scenario keys (name, providers, configurations, …), got "
                            f"{kind_of(data)}", source=source, line=lines.get((), 1))
    P = Reader(source, lines)
    guard = P.found.guard
    with guard():
        P.mapping(data, (), TOP_KEYS, "a scenario")
    name, description, seed, duration, start = _header(P, data)
    simulated, external, limits = None, {}, {}
    with guard():
        simulated, external, limits = _providers(P, data.get("providers"))
    clock = data.get("clock")
    with guard():
        if clock not in (None, "virtual", "real"):
            raise P.fail(("clock",), f"expected virtual or real, got {clock!r}")
        if external and clock == "virtual":
            raise P.fail(("clock",), f"provider(s) {', '.join(sorted(external))} are external URLs, which only "
                                     "work on the real clock: use clock: real (or remove clock:)")
    clock = clock if clock in ("virtual", "real") else ("real" if external else "virtual")

    raw = data.get("providers")
    ctx = ParseContext(reader=P, tenants={}, duration=duration,
                       providers=frozenset(raw) if isinstance(raw, dict) else None,
                       endpoints=frozenset(k for k, v in raw.items() if not (isinstance(v, dict) and "url" in v))
                       if isinstance(raw, dict) else None,
                       urls=dict(external))  # the valid ones: an invalid URL is refused where it is declared
    with guard():
        ctx.tenants.update(_tenants(P, data.get("tenants")))
    accounts: dict[str, dict[str, Any]] = {}
    with guard():
        accounts = _accounts(ctx, data.get("accounts"))
    raw = data.get("accounts")
    ctx = replace(ctx, accounts=frozenset(raw) if isinstance(raw, dict) else (frozenset() if raw is None else None))
    configs: list[ConfigSpec] = []
    with guard():
        configs = _configs(ctx, data.get("configurations"), base_dir or Path("."), required="accounts" not in data)
    raw = data.get("configurations")
    ctx = replace(ctx, configs=frozenset(c["id"] for c in raw if isinstance(c, dict) and isinstance(c.get("id"), str))
                  if isinstance(raw, list) else None)
    timeline: list[Event] = []
    with guard():
        timeline = _timeline(ctx, data.get("timeline", []))
    expect: dict[str, Expectation] = {}
    with guard():
        expect = _expect(ctx, data.get("expect", {}))
    P.found.errors.sort(key=lambda e: (e.source != source, e.line or 0))  # top to bottom, own file first
    P.found.raise_if_any(ScenarioError)
    return Scenario(name=name, source=source, description=description, seed=seed, clock=clock, duration=duration,
                    start=start, simulated=simulated, external=external, external_limits=limits, tenants=ctx.tenants,
                    configurations=configs, accounts=accounts, timeline=timeline, expect=expect,
                    base_dir=base_dir or Path("."))


def _header(P: Reader, data: dict[str, Any]) -> tuple[str, str, int, float, float]:
    """name, description, seed, duration and start; each checked on its own (defaults where wrong)."""
    guard = P.found.guard
    name, description, seed, duration, start = "", "", 0, 48 * 3600.0, VIRTUAL_EPOCH
    with guard():
        if "name" not in data:
            raise P.fail((), "missing required key 'name'")
        name = P.string(data["name"], ("name",))
    with guard():
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise P.fail(("description",), "expected a string")
    with guard():
        seed = P.integer(data.get("seed", 0), ("seed",))
    with guard():
        duration = P.duration(data.get("duration", "48h"), ("duration",))
        if duration <= 0:
            raise P.fail(("duration",), "must be > 0")
        if duration > MAX_DURATION:  # a typo (48000h): a run whose work never ends would never end either
            raise P.fail(("duration",), f"at most {MAX_DURATION // 86400:.0f}d of simulated time, got "
                                        f"{data['duration']!r}")
    if "start" in data:
        with guard():
            try:
                start = parse_iso(str(data["start"]))
            except ValueError:
                raise P.fail(("start",), f"expected an ISO-8601 timestamp, got {data['start']!r}") from None
            if 0 < duration <= MAX_DURATION and start + duration > LATEST_END:
                # times past the calendar's last year cannot be written: the run failed half-way, a traceback
                raise P.fail(("start",), f"{data['start']} plus the duration ends after {iso(LATEST_END)[:10]}, "
                                         "the latest a run may end (later times cannot be written as dates): "
                                         "start earlier")
    return name, description, seed, duration, start


def _providers(P: Reader, value: Any) -> tuple[ProvidersConfig | None, dict[str, str], dict[str, ExternalProvider]]:
    if value is None:
        raise P.fail((), "missing required key 'providers' (simulated endpoints or external URLs)")
    if not isinstance(value, dict) or not value:
        raise P.fail(("providers",), "expected a mapping of provider name -> endpoint settings")
    simulated: dict[str, Any] = {}
    external: dict[str, str] = {}
    limits: dict[str, ExternalProvider] = {}
    for name, spec in value.items():
        if not (isinstance(spec, dict) and "url" in spec):
            simulated[name] = spec if spec is not None else {}
            continue
        for key in sorted(set(spec) - EXTERNAL_KEYS, key=str):  # one more problem each: the others are checked
            P.found.errors.append(P.fail(("providers", name, key), "an external provider takes only url, max_rate "
                                                                   "and max_requests: behaviours apply to simulated "
                                                                   "endpoints"))
        found = Collector()  # the URL and each limit are checked on their own
        with found.guard():
            try:
                external[name] = check_http_url(spec["url"], field="url")
            except ConfigError as exc:
                raise P.fail(("providers", name, "url"), exc.message) from None
        rate, count = DEFAULT_MAX_RATE, DEFAULT_MAX_REQUESTS
        with found.guard():
            rate = _max_rate(P, name, spec.get("max_rate", DEFAULT_MAX_RATE))
        with found.guard():
            count = _max_requests(P, name, spec.get("max_requests", DEFAULT_MAX_REQUESTS))
        P.found.errors.extend(found.errors)
        if name in external and not found.errors:
            limits[name] = ExternalProvider(name, external[name], rate, count)
    config = None
    if simulated:
        sub_lines = {("endpoints",) + p[1:]: n for p, n in P.lines.items() if p[:1] == ("providers",)}
        try:
            config = parse_config({"endpoints": simulated}, source=P.source, lines=sub_lines)
        except ProviderConfigError as exc:
            raise ScenarioError.of([
                ScenarioError(e.message, source=P.source, line=e.line,
                              field=(e.field or "").replace("endpoints", "providers", 1) or None)
                for e in exc.errors]) from None
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
    if isinstance(value, list):  # each id checked on its own
        return {t: t for t in P.each_item(value, lambda i, t: P.identifier(t, ("tenants", i), "tenant"))}
    if isinstance(value, dict):
        def named(key: Any, name: Any) -> str:
            P.identifier(key, ("tenants", key), "tenant")
            return name if isinstance(name, str) else key

        return P.each(value, named)
    raise P.fail(("tenants",), f"expected a list of tenant ids, got {kind_of(value)}")


def _accounts(ctx: ParseContext, value: Any) -> dict[str, dict[str, Any]]:
    """Reteno message-event webhooks, one per account (an account is a tenant)."""
    P, tenants = ctx.reader, ctx.tenants
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise P.fail(("accounts",), "expected a mapping of account (tenant) id -> {provider, batch_size, max_wait}")
    out = {}
    for acc, spec in value.items():
        path = ("accounts", acc)
        with P.found.guard():
            spec = P.mapping(spec, path, ACCOUNT_KEYS, "an account's message-event webhook")
            found = Collector()  # the account, its provider and its settings are checked each on its own
            with found.guard():
                if tenants and acc not in tenants:
                    raise P.fail(path, f"unknown tenant {acc!r} (tenants: {', '.join(tenants)}); an account is a "
                                       "tenant")
            tenants.setdefault(acc, acc)
            provider = ""
            with found.guard():
                provider = P.known(P.string(P.required(spec, path, "provider"), path + ("provider",)),
                                   path + ("provider",), ctx.providers, "provider")
            webhook = {k: v for k, v in spec.items() if k != "provider"}
            with found.guard():
                if isinstance(webhook.get("max_wait"), str):
                    webhook["max_wait"] = P.duration(webhook["max_wait"], path + ("max_wait",))
                webhook = P.durations(webhook, path)
                # each setting on its own (the engine's check stops at the first), then all together
                P.each(webhook, lambda key, value: _webhook_settings(P, path, {key: value}))
                _webhook_settings(P, path, webhook)
            found.raise_if_any(ScenarioError)
            out[acc] = {"provider": provider, "webhook": webhook}
    return out


def _webhook_settings(P: Reader, path: KeyPath, webhook: dict[str, Any]) -> None:
    """The engine's check of an account's webhook settings, its problem at the line of the key at fault."""
    from dispatchsim.engine.events import WebhookSettings

    try:
        WebhookSettings.parse({**webhook, "url": "http://127.0.0.1:1/check"})
    except ConfigError as exc:  # its field is named as the API names it (webhook.batch_size)
        key = tuple((exc.field or "").removeprefix("webhook").lstrip(".").split(".")) if exc.field else ()
        raise P.fail(path + tuple(k for k in key if k), exc.message) from None


def _configs(ctx: ParseContext, value: Any, base: Path, required: bool = True) -> list[ConfigSpec]:
    P = ctx.reader
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value:
        raise P.fail(("configurations",), "expected a non-empty list of dispatch configurations")
    out: list[ConfigSpec] = []
    seen: set[str] = set()
    for i, spec in enumerate(value):
        with P.found.guard():
            config = _config(ctx, spec, ("configurations", i), base, seen)
            out.append(config)
    return out


def _config(ctx: ParseContext, spec: Any, path: KeyPath, base: Path, seen: set[str]) -> ConfigSpec:
    """One dispatch configuration; each of its keys is checked, so its mistakes are all reported."""
    P, tenants = ctx.reader, ctx.tenants
    found = Collector()
    spec = P.mapping(spec, path, CONFIG_KEYS, "a dispatch configuration")  # an unknown key: one more problem
    for key in ("id", "tenant", "provider"):
        with found.guard():
            P.required(spec, path, key)
    cid = tenant = provider = channel = ""
    with found.guard():
        cid = P.identifier(spec.get("id"), path + ("id",), "configuration") if "id" in spec else ""
        if cid in seen:
            raise P.fail(path + ("id",), f"duplicate configuration id {cid!r}")
        seen.add(cid)
    with found.guard():
        if "tenant" in spec:
            tenant = P.identifier(spec["tenant"], path + ("tenant",), "tenant")
            if tenants and tenant not in tenants:
                raise P.fail(path + ("tenant",), f"unknown tenant {tenant!r} (tenants: {', '.join(tenants)})")
            tenants.setdefault(tenant, tenant)
    with found.guard():
        if "provider" in spec:
            provider = P.known(P.string(spec["provider"], path + ("provider",)), path + ("provider",),
                               ctx.providers, "provider")
    with found.guard():
        channel = P.string(spec.get("channel", "SALESMAN"), path + ("channel",))
    fields: dict[str, Any] = {}
    for key in ("auth", "signing_secret", "mapping", "retry", "ordering", "timeouts", "circuit_breaker",
                "auto_disable"):
        if key not in spec:
            continue
        with found.guard():
            value = P.durations({key: spec[key]}, path)
            if key == "mapping" and isinstance(value["mapping"], str):
                value["mapping"] = _mapping_file(P, base / value["mapping"], path + ("mapping",))
            P.config_fields(value, path)
            fields.update(value)
    if not found.errors:
        with found.guard():
            # fields that are valid alone but not together, and with an external provider's URL
            P.config_fields(fields, path, url=ctx.urls.get(provider), url_path=("providers", provider, "url"))
    active, activation = True, "ok"
    with found.guard():
        active = P.boolean(spec.get("active", True), path + ("active",))
    with found.guard():
        activation = spec.get("activation", "ok")
        if activation not in ("ok", "refused"):
            raise P.fail(path + ("activation",), "expected ok or refused (what the verification GET should do)")
    found.raise_if_any(ScenarioError)
    return ConfigSpec(id=cid, tenant=tenant, provider=provider, channel=channel, fields=fields, active=active,
                      activation=activation, line=P.line(path))


def _mapping_file(P: Reader, path: Path, where: KeyPath) -> Any:
    """A mapping written in its own file; problems in that file name its own lines."""
    try:
        found = path.is_file()
    except OSError as exc:  # a name the system refuses (too long, ...): pathlib raises instead of answering
        raise P.fail(where, f"cannot read mapping file {str(path)!r}: {exc.strerror or exc}") from None
    if not found:
        raise P.fail(where, f"cannot read mapping file {str(path)!r}: no such file")
    try:
        spec, _ = load_mapping_file(path)
    except MappingSpecError as exc:
        raise ScenarioError.of(exc.errors) from None
    return spec


def _timeline(ctx: ParseContext, value: Any) -> list[Event]:
    P = ctx.reader
    if not isinstance(value, list):
        raise P.fail(("timeline",), f"expected a list of events, got {kind_of(value)}")
    events: list[Event] = []
    for i, ev in enumerate(value):
        with P.found.guard():
            events.append(_event(ctx, ev, i))
    return sorted(events, key=lambda e: (e.at, e.index))


def _event(ctx: ParseContext, ev: Any, i: int) -> Event:
    """One timeline event; its time and its action are checked each on its own."""
    P = ctx.reader
    path = ("timeline", i)
    ev = P.mapping(ev, path, set(ACTIONS) | {"at"}, "a timeline event")  # an unknown key: one more problem
    found = Collector()
    at = 0.0
    with found.guard():
        at = P.duration(P.required(ev, path, "at", "missing required key 'at' (a simulated time such as 10m or "
                                                   "2h30m)"), path + ("at",))
        if at > ctx.duration:
            raise P.fail(path + ("at",), f"{ev['at']} is after the scenario's duration")
    action: Action | None = None
    with found.guard():
        kinds = [k for k in ev if k != "at"]
        if not kinds and path in P.unknown:  # the action's name is the unknown key, reported already
            raise ReportedAlready()
        if len(kinds) != 1:
            raise P.fail(path, f"expected exactly one action besides 'at' (one of: {', '.join(sorted(ACTIONS))}),"
                               f" got {', '.join(kinds) or 'none'}")
        action = ACTIONS[kinds[0]].parse(ev[kinds[0]], path + (kinds[0],), replace(ctx, at=at))
    found.raise_if_any(ScenarioError)
    return Event(at=at, action=action, line=P.line(path), index=i)


def _expect(ctx: ParseContext, value: Any) -> dict[str, Expectation]:
    if value is None:
        return {}
    path = ("expect",)
    table = expectation_kinds()
    value = ctx.reader.mapping(value, path, set(table), "the expectations")  # an unknown kind: one more problem
    out: dict[str, Expectation] = {}
    for key, v in value.items():
        with ctx.reader.found.guard():
            out[key] = table[key].parse(v, path + (key,), ctx)
    return out
