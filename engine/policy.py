"""Retry and ordering policies: small frozen values with pure decisions."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from .errors import ConfigError

JitterMode = Literal["none", "full", "equal"]


def delay(attempt: int, *, base: float, factor: float, cap: float,
          jitter: JitterMode = "none", rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``base * factor**(attempt-1)`` capped at ``cap``: with the defaults 1, 2, 4, 8 … minutes,
    then hourly. ``full`` jitter draws from [0, d]; ``equal`` from [d/2, d].
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    exp = min(attempt - 1, 64)  # beyond 2**64 the cap always wins; avoids float overflow
    d = min(cap, base * factor ** exp)
    if jitter == "none" or rng is None:
        return d
    if jitter == "full":
        return rng.uniform(0, d)
    return d / 2 + rng.uniform(0, d / 2)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do after a failed attempt."""

    retry: bool
    at: float | None = None  #: when to try again (clock seconds) if ``retry``
    delay: float | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Reteno-style exponential backoff; a budget (attempts / age) makes it end in FAILED."""

    base: float = 60.0
    factor: float = 2.0
    cap: float = 3600.0
    #: total tries (the first one included) before FAILED; ``None`` = never give up.
    max_attempts: int | None = 10
    #: seconds since the budget started (creation or force retry) after which no retry is scheduled.
    max_age: float | None = None
    jitter: JitterMode = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.base <= 0:
            problems.append("base must be > 0 seconds")
        if self.factor < 1:
            problems.append("factor must be >= 1")
        if self.cap < self.base:
            problems.append("cap must be >= base")
        if self.max_attempts is not None and self.max_attempts < 1:
            problems.append("max_attempts must be >= 1 (or null for never give up)")
        if self.max_age is not None and self.max_age <= 0:
            problems.append("max_age must be > 0 seconds (or null)")
        if self.jitter not in ("none", "full", "equal"):
            problems.append("jitter must be one of none, full, equal")
        if problems:
            raise ConfigError("retry policy: " + "; ".join(problems))

    def delay_for(self, attempt: int, *, delivery_key: str = "") -> float:
        rng = random.Random(f"{self.seed}:{delivery_key}:{attempt}") if self.jitter != "none" else None
        return delay(attempt, base=self.base, factor=self.factor, cap=self.cap,
                     jitter=self.jitter, rng=rng)

    def decide(self, *, attempt: int, now: float, budget_started_at: float,
               retry_after: float | None = None, delivery_key: str = "") -> Decision:
        """After failed attempt ``attempt`` (1-based, counted within the current budget)."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return Decision(retry=False, reason=f"exhausted: {attempt} of {self.max_attempts} attempts failed")
        d = self.delay_for(attempt, delivery_key=delivery_key)
        if retry_after is not None and retry_after > d:
            d = min(retry_after, max(self.cap, d))
        at = now + d
        if self.max_age is not None and at - budget_started_at > self.max_age:
            return Decision(retry=False, reason=f"exhausted: next try would exceed max_age {self.max_age:g}s")
        return Decision(retry=True, at=at, delay=d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Named presets. ``reteno``: the webhooks seed, never gives up. ``reten``: the dispatch seed,
#: ends FAILED ("requires manual intervention") after 10 tries (~4 h of backoff: 1+2+4+8+16+32+60+60+60 min).
PRESETS: dict[str, RetryPolicy] = {
    "reteno": RetryPolicy(max_attempts=None),
    "reten": RetryPolicy(max_attempts=10),
}
DEFAULT_RETRY = PRESETS["reten"]


def retry_policy_from(data: RetryPolicy | dict[str, Any] | str | None) -> RetryPolicy:
    """Build from a preset name, or a dict (optionally ``preset:`` plus overrides)."""
    if data is None:
        return DEFAULT_RETRY
    if isinstance(data, RetryPolicy):
        return data
    if isinstance(data, str):
        data = {"preset": data}
    if not isinstance(data, dict):
        raise ConfigError(f"retry policy: expected a preset name or a mapping, got {type(data).__name__}")
    values = dict(data)
    preset = values.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"retry policy: unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    known = {f.name for f in fields(RetryPolicy)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"retry policy: unknown field(s) {', '.join(unknown)} (known: preset, {', '.join(sorted(known))})")
    start = asdict(PRESETS[preset]) if preset else asdict(DEFAULT_RETRY)
    start.update(values)
    try:
        return RetryPolicy(**start)
    except TypeError as exc:  # pragma: no cover - guarded by the unknown check
        raise ConfigError(f"retry policy: {exc}") from None


OrderingMode = Literal["ordered", "partitioned", "none"]


@dataclass(frozen=True, kw_only=True)
class OrderingPolicy:
    """How deliveries of one configuration queue up.

    ``ordered``: one queue per configuration, one attempt in flight, creation order.
    ``partitioned``: one ordered queue per value of ``partition_key`` (a payload field).
    ``none``: concurrent, at most ``concurrency`` attempts in flight per endpoint.
    """

    mode: OrderingMode = "ordered"
    on_exhausted: Literal["skip", "block"] = "skip"
    partition_key: str | None = None
    concurrency: int = 10

    def __post_init__(self) -> None:
        if self.mode not in ("ordered", "partitioned", "none"):
            raise ConfigError(f"ordering: mode must be ordered, partitioned or none, not {self.mode!r}")
        if self.on_exhausted not in ("skip", "block"):
            raise ConfigError(f"ordering: on_exhausted must be skip or block, not {self.on_exhausted!r}")
        if self.mode == "partitioned" and not self.partition_key:
            raise ConfigError("ordering: mode partitioned needs partition_key (e.g. commerceExternalId)")
        if self.concurrency < 1:
            raise ConfigError("ordering: concurrency must be >= 1")

    @property
    def ordered(self) -> bool:
        return self.mode != "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ordering_policy_from(data: OrderingPolicy | dict[str, Any] | str | None) -> OrderingPolicy:
    if data is None:
        return OrderingPolicy()
    if isinstance(data, OrderingPolicy):
        return data
    if isinstance(data, str):
        data = {"mode": data}
    if not isinstance(data, dict):
        raise ConfigError(f"ordering: expected a mode name or a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(OrderingPolicy)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"ordering: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return OrderingPolicy(**data)


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Per-configuration HTTP timeouts in seconds."""

    connect: float = 5.0
    total: float = 30.0

    def __post_init__(self) -> None:
        if not (0 < self.connect <= self.total):
            raise ConfigError("timeouts: need 0 < connect <= total (seconds)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timeouts_from(data: Timeouts | dict[str, Any] | None) -> Timeouts:
    if data is None:
        return Timeouts()
    if isinstance(data, Timeouts):
        return data
    if not isinstance(data, dict):
        raise ConfigError("timeouts: expected a mapping with connect/total seconds")
    unknown = sorted(set(data) - {"connect", "total"})
    if unknown:
        raise ConfigError(f"timeouts: unknown field(s) {', '.join(unknown)} (known: connect, total)")
    return Timeouts(**data)
