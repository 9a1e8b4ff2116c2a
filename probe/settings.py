"""What a probe may send, and where: bounded counts, a capped rate, loopback unless confirmed."""
from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from dispatchsim.engine.config import Auth
from dispatchsim.engine.errors import DispatchsimError
from dispatchsim.engine.redact import REDACTED


class ProbeError(DispatchsimError):
    """The probe cannot run with these settings."""


class RemoteNotConfirmed(ProbeError):
    """The target is not a loopback address; confirm with --yes (library: allow_remote=True)."""


#: Limits for a target that is not this machine: a probe must never look like a load test.
REMOTE_CAPS = {"rate": 5.0, "concurrency": 4, "burst": 50, "ordered": 20}
#: Limits for loopback targets.
LOCAL_CAPS = {"rate": 100.0, "concurrency": 50, "burst": 500, "ordered": 200}


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """How a probe run talks to the endpoint: credentials, timeouts (seconds), load and time budget.

    Build one with :meth:`build`, which checks every value; the secrets in it are redacted from
    every report.
    """

    auth: Auth = Auth()
    secret: str | None = None  #: Standard Webhooks signing secret (``whsec_…`` or raw)
    connect_timeout: float = 5.0
    timeout: float = 10.0  #: total per request: the sender's timeout the endpoint must answer within
    ordered: int = 10  #: deliveries of one queue sent one after the other
    burst: int = 20  #: concurrent deliveries …
    rate: float = 10.0  #: … started at this many per second …
    concurrency: int = 10  #: … with at most this many in flight (a receiver that serialises work shows here)
    max_body: int = 64 * 1024  #: bytes of the max-size payload
    slow_body: float = 3.0  #: seconds over which the slow body trickles in
    callback_wait: float = 10.0  #: seconds after the last check to wait for deliveries to show as processed
    settle: float = 1.0  #: then this much longer, for late duplicates
    status_url: str | None = None  #: ``https://…/deliveries/{id}`` answering ``{"processed": n}``
    max_time: float = 300.0  #: the whole probe's time budget, seconds
    check_time: float = 60.0  #: each check's own deadline: a hanging check fails alone
    only: tuple[str, ...] = ()  #: run only these checks
    skip: tuple[str, ...] = ()  #: do not run these checks
    payloads: tuple[dict[str, Any], ...] = ()  #: the team's own payloads: every check starts from them
    seed: int = 0  #: payload ids and contents
    allow_remote: bool = False  #: a non-loopback target is probed only when True
    mapping: dict[str, Any] | None = None  #: the provider's payload mapping (payloads are sent mapped)

    @classmethod
    def build(cls, **kw: Any) -> ProbeSettings:
        """Settings from keyword values (as the CLI and :func:`run_probe` take them), checked.

        Raises ProbeError naming an unknown setting or every invalid value.
        """
        unknown = sorted(set(kw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ProbeError(f"unknown probe setting(s): {', '.join(unknown)}")
        wrong = _kind_problems(kw)  # before any comparison: a text timeout failed as a TypeError inside
        if wrong:
            raise ProbeError("invalid probe settings: " + "; ".join(wrong))
        if "auth" in kw:
            kw["auth"] = Auth.parse(kw["auth"])
        for name in ("only", "skip", "payloads"):
            if name in kw:
                kw[name] = tuple(kw[name] or ())
        if "connect_timeout" not in kw and "timeout" in kw:
            kw["connect_timeout"] = min(cls.connect_timeout, kw["timeout"])
        settings = cls(**kw)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check every value at once; raises ProbeError listing all the problems found."""
        problems = []
        if not 0 < self.connect_timeout <= self.timeout:
            problems.append("need 0 < connect_timeout <= timeout")
        for name in ("ordered", "burst", "concurrency"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("rate", "max_time", "check_time"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        for name in ("slow_body", "callback_wait", "settle"):
            if getattr(self, name) < 0:
                problems.append(f"{name} cannot be negative")
        if not 1024 <= self.max_body <= 16 * 1024 * 1024:
            problems.append("max_body must be between 1 KiB and 16 MiB")
        if self.status_url is not None and "{id}" not in self.status_url:
            problems.append("status_url must contain {id} (replaced by the payload id)")
        if not all(isinstance(p, dict) for p in self.payloads):
            problems.append("payloads must be JSON objects")
        if problems:
            raise ProbeError("invalid probe settings: " + "; ".join(problems))

    def capped(self, loopback: bool) -> tuple[ProbeSettings, list[str]]:
        """These settings within the caps for the target; notes say what was lowered."""
        caps = LOCAL_CAPS if loopback else REMOTE_CAPS
        changes: dict[str, Any] = {}
        notes = []
        for name, cap in caps.items():
            if getattr(self, name) > cap:
                changes[name] = type(getattr(self, name))(cap)
                notes.append(f"{name} capped at {cap} for a {'loopback' if loopback else 'remote'} target")
        return replace(self, **changes), notes

    def public(self) -> dict[str, Any]:
        """The settings as they may appear in a report (credentials out)."""
        out = asdict(self)
        out["auth"] = self.auth.type if self.auth.type == "none" else f"{self.auth.type} ({REDACTED})"
        out["secret"] = REDACTED if self.secret else None
        out["payloads"] = len(self.payloads)
        out["only"], out["skip"] = list(self.only), list(self.skip)
        return out


#: Settings by the kind of value they take (the others: auth, an Auth or its dict; mapping, a dict or None).
_NUMBERS = ("connect_timeout", "timeout", "rate", "slow_body", "callback_wait", "settle", "max_time", "check_time")
_COUNTS = ("ordered", "burst", "concurrency", "max_body", "seed")
_TEXTS = ("secret", "status_url")
_LISTS = ("only", "skip", "payloads")


def _kind_problems(kw: dict[str, Any]) -> list[str]:
    """Every setting given a value of the wrong kind, named with what it takes."""
    out = []
    for name, value in kw.items():
        if name in _NUMBERS and (isinstance(value, bool) or not isinstance(value, (int, float))
                                 or not math.isfinite(value)):
            out.append(f"{name} must be a finite number of seconds (or per second), got {value!r}")
        elif name in _COUNTS and (isinstance(value, bool) or not isinstance(value, int)):
            out.append(f"{name} must be a whole number, got {value!r}")
        elif name in _TEXTS and value is not None and not isinstance(value, str):
            out.append(f"{name} must be text or None, got {type(value).__name__}")
        elif name in _LISTS and value is not None and not isinstance(value, (list, tuple)):
            out.append(f"{name} must be a list{' of check names' if name != 'payloads' else ''}, got "
                       f"{type(value).__name__}")
        elif name == "allow_remote" and not isinstance(value, bool):
            out.append(f"allow_remote must be True or False, got {value!r}")
        elif name == "mapping" and value is not None and not isinstance(value, dict):
            out.append(f"mapping must be a compiled mapping (a dict) or None, got {type(value).__name__}")
    return out


def check_target(url: str) -> bool:
    """Validate the URL; True when its host is this machine (loopback)."""
    if not isinstance(url, str):
        raise ProbeError(f"url: must be text such as http://127.0.0.1:8080/hooks, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ProbeError(f"not a usable URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ProbeError(f"the probe needs an http:// or https:// URL with a host, got {url.split('?')[0]!r}")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
