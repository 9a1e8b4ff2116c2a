"""Dispatch configurations: validation and the snapshot deliveries keep.

A configuration is tenant x provider x channel -> endpoint, auth, mapping, policies.
Everything is validated before anything is stored; secrets live only in the snapshot
and leave it only as request headers.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from dispatchsim.errors import LocatedError

from .errors import ConfigError
from .health import AutoDisable, CircuitBreaker, auto_disable_from, circuit_breaker_from
from .health import to_dict as _health_dict
from .policy import (BatchPolicy, OrderingPolicy, RetryPolicy, Timeouts, batch_policy_from, ordering_policy_from,
                     retry_policy_from, timeouts_from)
from .redact import REDACTED, check_http_url, redact_url, url_secrets

#: An HTTP header name (RFC 9110 token); also the pattern the HTTP API documents.
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_TOKEN = re.compile(HEADER_NAME_PATTERN)
AUTH_TYPES = ("none", "api_key", "bearer", "basic")
#: For each auth type: (required fields, optional fields).
AUTH_FIELDS = {
    "none": ({"type"}, set()),
    "api_key": ({"type", "value"}, {"header"}),
    "bearer": ({"type", "token"}, set()),
    "basic": ({"type", "username", "password"}, set()),
}
_SECRET_FIELDS = ("value", "token", "password")


class ConfigKind(str, Enum):
    """What a configuration's deliveries carry."""

    #: Tenant x provider x channel: one delivery per matching activity.
    ACTIVITIES = "activities"
    #: An account's Reteno message-event webhook: one delivery per batch of events.
    MESSAGE_EVENTS = "message_events"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Auth:
    """How requests to an endpoint authenticate: none, an API-key header, a bearer token or basic auth.

    The secret fields (value, token, password) leave it only as request headers; ``to_dict`` shows them
    as ``***`` unless asked not to."""

    type: str = "none"
    header: str = "X-Api-Key"
    value: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, data: Auth | dict[str, Any] | None) -> Auth:
        """Check an ``auth`` object (the fields its type needs, no others, no control characters);
        ConfigError naming ``auth`` or ``auth.type`` otherwise."""
        if data is None:
            return cls()
        if isinstance(data, Auth):
            return data
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping with a type (none, api_key, bearer, basic)", field="auth")
        typ = data.get("type")
        if typ not in AUTH_TYPES:
            raise ConfigError(f"must be one of {', '.join(AUTH_TYPES)}, not {typ!r}", field="auth.type")
        required, optional = AUTH_FIELDS[typ]
        missing = sorted(required - set(data))
        unknown = sorted(set(data) - required - optional)
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown field(s) {', '.join(unknown)} for type {typ}")
        for key in required | optional:
            if key in data and key != "type" and (not isinstance(data[key], str) or not data[key]):
                problems.append(f"{key} must be a non-empty string")
            elif key in data and key != "type" and any(ord(ch) < 32 or ord(ch) == 127 for ch in data[key]):
                problems.append(f"{key} must not contain control characters (CR, LF, …)")
        header = data.get("header")
        if isinstance(header, str) and header and not _TOKEN.fullmatch(header):
            problems.append(f"header {header!r} is not a valid HTTP header name (letters, digits, '-', no spaces)")
        if typ == "basic" and ":" in str(data.get("username", "")):
            problems.append("username must not contain ':' (basic auth joins user:password)")
        if problems:
            raise ConfigError("; ".join(problems), field="auth")
        return cls(**data)

    def headers(self) -> dict[str, str]:
        """The request headers that carry the credential."""
        if self.type == "api_key":
            return {self.header: self.value or ""}
        if self.type == "bearer":
            return {"Authorization": f"Bearer {self.token}"}
        if self.type == "basic":
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def secret_headers(self) -> list[str]:
        """Names of the headers that carry the credential (hidden whole in reports)."""
        if self.type == "api_key":
            return [self.header]
        return ["Authorization"] if self.type in ("bearer", "basic") else []

    def secrets(self) -> list[str]:
        """Every secret value (and the basic-auth token built from them), for redaction."""
        vals = [getattr(self, f) for f in _SECRET_FIELDS if getattr(self, f)]
        if self.type == "basic":
            vals.append(self.headers()["Authorization"].split(" ", 1)[1])
        return vals

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The fields of its type, secrets as ``***`` when ``redact``."""
        required, optional = AUTH_FIELDS[self.type]
        out: dict[str, Any] = {}
        for key in sorted(required | optional):
            val = getattr(self, key)
            out[key] = REDACTED if (redact and key in _SECRET_FIELDS and val) else val
        return out


@dataclass(frozen=True)
class Snapshot:
    """Everything a delivery needs to be sent, frozen at the configuration version it was made with."""

    endpoint_url: str
    auth: Auth = field(default_factory=Auth)
    signing_secret: str | None = None
    mapping: dict[str, Any] | None = None
    mapping_digest: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ordering: OrderingPolicy = field(default_factory=OrderingPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    circuit_breaker: CircuitBreaker | None = None
    auto_disable: AutoDisable | None = None
    #: message-event webhooks only: how events are grouped into the arrays sent
    batching: BatchPolicy | None = None

    def secrets(self) -> list[str]:
        out = self.auth.secrets() + url_secrets(self.endpoint_url)
        if self.signing_secret:
            out.append(self.signing_secret)
        if self.auto_disable is not None and self.auto_disable.notify_secret:
            out.append(self.auto_disable.notify_secret)
        return out

    def to_dict(self, *, redact: bool) -> dict[str, Any]:
        return {
            "endpoint_url": redact_url(self.endpoint_url) if redact else self.endpoint_url,
            "auth": self.auth.to_dict(redact=redact),
            "signing_secret": (REDACTED if redact and self.signing_secret else self.signing_secret),
            "mapping": self.mapping,
            "mapping_digest": self.mapping_digest,
            "retry": self.retry.to_dict(),
            "ordering": self.ordering.to_dict(),
            "timeouts": self.timeouts.to_dict(),
            "circuit_breaker": _health_dict(self.circuit_breaker),
            "auto_disable": self._auto_disable_dict(redact),
            **({"batching": self.batching.to_dict()} if self.batching is not None else {}),
        }

    def _auto_disable_dict(self, redact: bool) -> dict[str, Any] | None:
        out = _health_dict(self.auto_disable)
        if out is not None and redact and out.get("notify_secret"):
            out["notify_secret"] = REDACTED
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            endpoint_url=data["endpoint_url"],
            auth=Auth.parse(data.get("auth")),
            signing_secret=data.get("signing_secret"),
            mapping=data.get("mapping"),
            mapping_digest=data.get("mapping_digest"),
            retry=retry_policy_from(data.get("retry")),
            ordering=ordering_policy_from(data.get("ordering")),
            timeouts=timeouts_from(data.get("timeouts")),
            circuit_breaker=circuit_breaker_from(data.get("circuit_breaker")),
            auto_disable=auto_disable_from(data.get("auto_disable")),
            batching=batch_policy_from(data.get("batching")),
        )


CONFIG_FIELDS = ("endpoint_url", "auth", "signing_secret", "mapping", "retry", "ordering", "timeouts",
                 "circuit_breaker", "auto_disable")

#: The keys each nested object of a configuration takes (auth's depend on its type: :meth:`Auth.parse` names
#: them), so a file reader can report an unknown one and still check the known ones.
SECTION_KEYS: dict[str, frozenset[str]] = {
    "retry": frozenset({"preset"} | {f.name for f in fields(RetryPolicy)}),
    "ordering": frozenset(f.name for f in fields(OrderingPolicy)),
    "timeouts": frozenset(f.name for f in fields(Timeouts)),
    "circuit_breaker": frozenset(f.name for f in fields(CircuitBreaker)),
    "auto_disable": frozenset(f.name for f in fields(AutoDisable)),
}


def check_signing_secret(secret: Any) -> str | None:
    """A signing secret: null, or non-empty text (``whsec_`` secrets are base64 after the prefix)."""
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigError("must be a non-empty string (e.g. whsec_<base64>) or null", field="signing_secret")
    if isinstance(secret, str) and secret.startswith("whsec_"):
        try:
            base64.b64decode(secret[6:], validate=True)
        except ValueError:
            raise ConfigError("whsec_ secrets must be base64 after the prefix", field="signing_secret") from None
    return secret


def build_snapshot(data: dict[str, Any]) -> tuple[Snapshot, list[str]]:
    """Validate the editable fields of a configuration; returns (snapshot, mapping warnings). Every field
    is checked, and a ConfigError carries the problems of all of them (``errors``), not the first only."""
    unknown = sorted(set(data) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"unknown configuration field(s): {', '.join(unknown)} (known: {', '.join(CONFIG_FIELDS)})")
    problems: list[LocatedError] = []

    def part(parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except ConfigError as exc:
            problems.extend(exc.errors)
            return None

    url = part(lambda: check_http_url(data.get("endpoint_url"), field="endpoint_url"))
    secret = part(lambda: check_signing_secret(data.get("signing_secret")))
    compiled = part(lambda: compile_mapping_spec(data.get("mapping")))
    parts = {name: part(lambda parse=parse, name=name: parse(data.get(name))) for name, parse in (
        ("auth", Auth.parse), ("retry", retry_policy_from), ("ordering", ordering_policy_from),
        ("timeouts", timeouts_from), ("circuit_breaker", circuit_breaker_from), ("auto_disable", auto_disable_from))}
    if problems:  # one problem: the error as its check raised it
        raise problems[0] if len(problems) == 1 else ConfigError.of(problems)
    mapping_spec, digest, warnings = compiled
    snap = Snapshot(endpoint_url=url, signing_secret=secret, mapping=mapping_spec, mapping_digest=digest, **parts)
    if snap.auto_disable is not None and snap.auto_disable.notify_url is not None:
        check_http_url(snap.auto_disable.notify_url, field="auto_disable.notify_url")
    if "@" in urlsplit(url).netloc and any(h.lower() == "authorization" for h in snap.auth.headers()):
        # the HTTP client would refuse every request: both would set the Authorization header
        raise ConfigError(f"credentials in the URL and auth type {snap.auth.type} both set the Authorization"
                          " header: keep one of them", field="endpoint_url")
    if REDACTED in snap.secrets():
        raise ConfigError("secrets are write-only: send the real value (reads show ***), or leave"
                          " auth/signing_secret out of the edit to keep them")
    return snap, warnings


def compile_mapping_spec(spec: Any) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """Compile (and so validate) a payload mapping; None means the seed payload as is."""
    if spec is None:
        return None, None, []
    import dispatchsim.mapping as mapping  # the engine uses mapping; never the other way round

    try:
        compiled = mapping.compile_mapping(spec)
    except mapping.MappingSpecError as exc:
        raise ConfigError(str(exc), field="mapping") from None
    return compiled.spec, compiled.digest, [str(w) for w in compiled.warnings]
