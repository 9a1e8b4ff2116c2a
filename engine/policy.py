"""Retry and ordering policies: small frozen values with pure decisions."""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any, Literal

from .errors import ConfigError

JitterMode = Literal["none", "full", "equal"]

#: Documented bounds (docs/retries.md): a policy outside them is refused, naming the field, because a
#: delay of a year or a NaN would leave a delivery that neither follows its policy nor ends.
MAX_DELAY = 30 * 86400.0      #: any single wait (base, cap, schedule entries, Retry-After ceiling)
MAX_AGE = 365 * 86400.0       #: max_age
MAX_ATTEMPTS = 10_000         #: max_attempts
MAX_SCHEDULE = 1_000          #: entries in a schedule
MAX_FACTOR = 100.0            #: factor
MAX_TIMEOUT = 3600.0          #: connect / total timeouts
MAX_CONCURRENCY = 1_000       #: unordered attempts in flight per endpoint


def bad_number(value: Any, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> bool:
    """True when ``value`` is not a finite number in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return True
    if not math.isfinite(value):
        return True
    return value < lo or value > hi or (lo_open and value == lo)


def check_numbers(what: str, cls: type, values: dict[str, Any]) -> None:
    """Refuse text where a number of seconds (or a count) is expected, naming the field."""
    for f in fields(cls):
        default = f.default
        val = values.get(f.name)
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if f.name in ("max_attempts", "max_age", "retry_after_ceiling", "after_failures", "after"):
            numeric = True
        if numeric and val is not None and (isinstance(val, bool) or not isinstance(val, (int, float))):
            raise ConfigError(f"{f.name} must be a number (seconds for times), got {val!r}", field=what)


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
    #: why it ends when not retrying: ``exhausted`` or ``permanent_status``
    kind: str = ""
    reason: str = ""


#: base, factor and cap of every policy that has a schedule instead (see RetryPolicy.__post_init__)
_DEFAULT_SHAPE = {"base": 60.0, "factor": 2.0, "cap": 3600.0}


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When to try again after a failure, and when to stop.

    Either exponential (``base * factor**(n-1)`` capped at ``cap``) or an explicit ``schedule`` of
    delays: ``schedule[n-1]`` is the wait after failed attempt *n*; past its end the policy gives up,
    or keeps using the last delay with ``repeat_last``. A budget (``max_attempts``, ``max_age``)
    makes it end in FAILED; without one it never gives up (Reteno).
    """

    base: float = 60.0
    factor: float = 2.0
    cap: float = 3600.0
    #: explicit delays in seconds after failed attempt 1, 2, …; replaces base/factor/cap when set.
    schedule: tuple[float, ...] | None = None
    repeat_last: bool = False
    #: total tries (the first one included) before FAILED; ``None`` = never give up
    #: (with a schedule and no ``repeat_last``: the schedule's length + 1).
    max_attempts: int | None = 10
    #: seconds since the budget started (creation or force retry) after which no retry is scheduled.
    max_age: float | None = None
    jitter: JitterMode = "none"
    seed: int = 0
    #: upper bound for a ``Retry-After`` that is longer than the backoff (default: ``cap``).
    retry_after_ceiling: float | None = None
    #: response statuses that end the delivery FAILED at once (reason ``permanent_status``).
    permanent_statuses: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.schedule is not None:
            if isinstance(self.schedule, list):
                object.__setattr__(self, "schedule", tuple(self.schedule))
            # base/factor/cap play no part beside a schedule: keep one canonical form (so a stored policy
            # reads back equal), but the cap still bounds Retry-After unless a ceiling is given
            if self.retry_after_ceiling is None and not bad_number(self.cap, 0, MAX_DELAY):
                object.__setattr__(self, "retry_after_ceiling", float(self.cap))
            for name in ("base", "factor", "cap"):
                object.__setattr__(self, name, _DEFAULT_SHAPE[name])
            if (not isinstance(self.schedule, tuple) or not self.schedule or len(self.schedule) > MAX_SCHEDULE
                    or any(bad_number(d, 0, MAX_DELAY) for d in self.schedule)):
                problems.append(f"schedule must be a list of 1 to {MAX_SCHEDULE} delays, each 0 to "
                                f"{MAX_DELAY:g} seconds")
        else:
            if bad_number(self.base, 0, MAX_DELAY, lo_open=True):
                problems.append(f"base must be a number of seconds > 0 and <= {MAX_DELAY:g}")
            if bad_number(self.factor, 1, MAX_FACTOR):
                problems.append(f"factor must be a number from 1 to {MAX_FACTOR:g}")
            if bad_number(self.cap, 0, MAX_DELAY) or (not bad_number(self.base, 0, MAX_DELAY)
                                                       and self.cap < self.base):
                problems.append(f"cap must be a number of seconds >= base and <= {MAX_DELAY:g}")
            if self.repeat_last:
                problems.append("repeat_last needs a schedule (exponential backoff already repeats its cap)")
        if not isinstance(self.repeat_last, bool):
            problems.append("repeat_last must be true or false")
        elif (self.repeat_last and isinstance(self.schedule, tuple) and self.schedule and self.schedule[-1] == 0
              and self.max_attempts is None):
            # every retry at the instant of the failure, for ever: on the virtual clock time never moves
            # (a run never ends), on a real one the endpoint gets a request per round trip
            problems.append("repeat_last with a last delay of 0 retries at once without end: give the last delay "
                            "a length or set max_attempts")
        if self.max_attempts is not None and bad_number(self.max_attempts, 1, MAX_ATTEMPTS, integer=True):
            problems.append(f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS} (or null for never give up)")
        if self.max_age is not None and bad_number(self.max_age, 0, MAX_AGE, lo_open=True):
            problems.append(f"max_age must be a number of seconds > 0 and <= {MAX_AGE:g} (or null)")
        if self.jitter not in ("none", "full", "equal"):
            problems.append("jitter must be one of none, full, equal")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            problems.append("seed must be a whole number")
        if self.retry_after_ceiling is not None and bad_number(self.retry_after_ceiling, 0, MAX_DELAY):
            problems.append(f"retry_after_ceiling must be a number of seconds from 0 to {MAX_DELAY:g} (or null)")
        if isinstance(self.permanent_statuses, list):
            object.__setattr__(self, "permanent_statuses", tuple(self.permanent_statuses))
        if not isinstance(self.permanent_statuses, tuple) or any(
                bad_number(c, 100, 599, integer=True) or 200 <= c < 300 for c in self.permanent_statuses):
            problems.append("permanent_statuses must be HTTP status codes (100-599) outside 2xx")
        if problems:
            raise ConfigError("; ".join(problems), field="retry")

    @property
    def budget(self) -> int | None:
        """Total tries before FAILED (``None``: unlimited)."""
        if self.schedule is not None and not self.repeat_last:
            limit = len(self.schedule) + 1
            return limit if self.max_attempts is None else min(limit, self.max_attempts)
        return self.max_attempts

    def delay_for(self, attempt: int, *, delivery_key: str = "") -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1), jitter included.

        The jitter is drawn from a generator seeded by the policy's ``seed``, ``delivery_key`` and the
        attempt number, so the same delivery gets the same delays on every run.
        """
        rng = random.Random(f"{self.seed}:{delivery_key}:{attempt}") if self.jitter != "none" else None
        if self.schedule is not None:
            d = self.schedule[min(attempt, len(self.schedule)) - 1]
            if rng is None:
                return float(d)
            return delay(1, base=max(d, 1e-9), factor=1, cap=max(d, 1e-9), jitter=self.jitter, rng=rng) if d else 0.0
        return delay(attempt, base=self.base, factor=self.factor, cap=self.cap, jitter=self.jitter, rng=rng)

    def decide(self, *, attempt: int, now: float, budget_started_at: float,
               retry_after: float | None = None, status: int | None = None, delivery_key: str = "") -> Decision:
        """After failed attempt ``attempt`` (1-based, counted within the current budget)."""
        if status is not None and status in self.permanent_statuses:
            return Decision(retry=False, kind="permanent_status",
                            reason=f"HTTP {status} is configured as a permanent failure")
        budget = self.budget
        if budget is not None and attempt >= budget:
            return Decision(retry=False, kind="exhausted", reason=f"exhausted: {attempt} of {budget} attempts failed")
        d = self.delay_for(attempt, delivery_key=delivery_key)
        if retry_after is not None and retry_after > d:
            ceiling = self.retry_after_ceiling if self.retry_after_ceiling is not None else self.cap
            d = max(d, min(retry_after, ceiling))
        at = now + d
        if self.max_age is not None and at - budget_started_at > self.max_age:
            return Decision(retry=False, kind="exhausted",
                            reason=f"exhausted: next try would exceed max_age {self.max_age:g}s")
        return Decision(retry=True, at=at, delay=d)

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data (the form configurations store and the API returns)."""
        out = asdict(self)
        out["schedule"] = list(self.schedule) if self.schedule is not None else None
        out["permanent_statuses"] = list(self.permanent_statuses)
        return out


#: Named presets, each mirroring a documented sender so a team can rehearse the one it will face.
PRESETS: dict[str, RetryPolicy] = {
    # Reteno webhooks doc: "1 minute, 2 minutes, 4 minutes, 8 minutes, and up to 1 request per hour";
    # it never gives up.
    "reteno": RetryPolicy(max_attempts=None),
    # Reten dispatch doc: READY -> RETRYING -> FAILED "all retries exhausted, requires manual
    # intervention". Budget (ours; the doc gives none): 10 tries, ~4 h 03 m of backoff.
    "reten": RetryPolicy(max_attempts=10),
    # Svix "Retry Schedule" doc: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h -> Failed.
    "svix": RetryPolicy(schedule=(5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0), max_attempts=None,
                        retry_after_ceiling=36000.0),
    # Convoy "Retry Schedule" doc, linear strategy: a fixed `duration` between attempts, `retry_count`
    # total attempts. Values here: duration 10 s, retry_count 10 (set yours with overrides).
    "convoy_linear": RetryPolicy(base=10.0, factor=1.0, cap=10.0, max_attempts=10),
    # Convoy exponential strategy: duration * 2^n, capped by max_retry_seconds (Convoy adds < 5 s of
    # jitter, which is left out here so schedules are exact). duration 10 s, cap 7200 s, 10 attempts.
    "convoy_exponential": RetryPolicy(base=10.0, factor=2.0, cap=7200.0, max_attempts=10),
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
        raise ConfigError(f"expected a preset name or a mapping, got {type(data).__name__}", field="retry")
    values = dict(data)
    preset = values.pop("preset", None)
    if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
        raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})", field="retry")
    known = {f.name for f in fields(RetryPolicy)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)} (known: preset, {', '.join(sorted(known))})",
                          field="retry")
    start = PRESETS[preset].to_dict() if preset else DEFAULT_RETRY.to_dict()
    if "schedule" in values and values["schedule"] is not None and "max_attempts" not in values:
        start["max_attempts"] = None  # the schedule's length is the budget unless said otherwise
    check_numbers("retry", RetryPolicy, values)
    # base/factor/cap that differ from the starting point while a schedule gives the delays would be ignored:
    # refuse them (a stored policy carries every field, unchanged ones included, and is accepted as is)
    exponential = sorted(k for k in ("base", "factor", "cap") if k in values and values[k] != start[k])
    start.update(values)
    if start.get("schedule") is not None and exponential:
        origin = "this policy" if "schedule" in values else f"preset {preset or 'reten'}"
        raise ConfigError(f"{', '.join(exponential)} shape exponential backoff, but {origin} has a schedule of "
                          f"delays; give one or the other (schedule: null to use {exponential[0]})", field="retry")
    for key in ("schedule", "permanent_statuses"):
        if isinstance(start.get(key), list):
            start[key] = tuple(start[key])
    if start.get("schedule") is not None and not isinstance(start["schedule"], tuple):
        raise ConfigError("schedule must be a list of delays in seconds", field="retry")
    if not isinstance(start.get("permanent_statuses"), tuple):
        raise ConfigError("permanent_statuses must be a list of HTTP status codes", field="retry")
    return RetryPolicy(**start)


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
            raise ConfigError(f"mode must be ordered, partitioned or none, not {self.mode!r}", field="ordering")
        if self.on_exhausted not in ("skip", "block"):
            raise ConfigError(f"on_exhausted must be skip or block, not {self.on_exhausted!r}", field="ordering")
        if self.mode == "partitioned" and not self.partition_key:
            raise ConfigError("mode partitioned needs partition_key (e.g. commerceExternalId)", field="ordering")
        if bad_number(self.concurrency, 1, MAX_CONCURRENCY, integer=True):
            raise ConfigError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}", field="ordering")
        if self.partition_key is not None and (not isinstance(self.partition_key, str) or not self.partition_key.strip()):
            raise ConfigError("partition_key must be a payload field name such as commerceExternalId", field="ordering")

    @cached_property
    def ordered(self) -> bool:
        """True when deliveries of one queue are sent one at a time, in order (asked twice per attempt:
        worked out once per policy, then an attribute; not a field, so not in :meth:`to_dict`)."""
        return self.mode != "none"

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data (the form configurations store and the API returns)."""
        return asdict(self)


def ordering_policy_from(data: OrderingPolicy | dict[str, Any] | str | None) -> OrderingPolicy:
    """Build from a mode name or a mapping (None: ordered); ConfigError naming ``ordering`` otherwise."""
    if data is None:
        return OrderingPolicy()
    if isinstance(data, OrderingPolicy):
        return data
    if isinstance(data, str):
        data = {"mode": data}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mode name or a mapping, got {type(data).__name__}", field="ordering")
    known = {f.name for f in fields(OrderingPolicy)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})",
                          field="ordering")
    check_numbers("ordering", OrderingPolicy, data)
    return OrderingPolicy(**data)


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Per-configuration HTTP timeouts in seconds."""

    connect: float = 5.0
    total: float = 30.0

    def __post_init__(self) -> None:
        if (bad_number(self.connect, 0, MAX_TIMEOUT, lo_open=True) or bad_number(self.total, 0, MAX_TIMEOUT, lo_open=True)
                or not self.connect <= self.total):
            raise ConfigError(f"need 0 < connect <= total <= {MAX_TIMEOUT:g} (seconds)", field="timeouts")

    def to_dict(self) -> dict[str, Any]:
        """The timeouts as JSON-ready data, in seconds."""
        return asdict(self)


def timeouts_from(data: Timeouts | dict[str, Any] | None) -> Timeouts:
    """Build from a mapping of connect/total seconds (None: the defaults); ConfigError otherwise."""
    if data is None:
        return Timeouts()
    if isinstance(data, Timeouts):
        return data
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with connect/total seconds", field="timeouts")
    unknown = sorted(set(data) - {"connect", "total"})
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)} (known: connect, total)", field="timeouts")
    check_numbers("timeouts", Timeouts, data)
    return Timeouts(**data)


MAX_BATCH_SIZE = 1000


@dataclass(frozen=True, kw_only=True)
class BatchPolicy:
    """How an account's message events are grouped into one POSTed JSON array.

    A batch is formed when ``size`` events wait or the oldest has waited ``max_wait`` seconds, and
    only once the account's previous batch has left its queue: events that arrive during an outage
    then go out in full batches after it, not one tiny batch each.
    """

    size: int = 100
    max_wait: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 1 <= self.size <= MAX_BATCH_SIZE:
            raise ConfigError(f"an integer from 1 to {MAX_BATCH_SIZE}", field="webhook.batch_size")
        if not isinstance(self.max_wait, (int, float)) or isinstance(self.max_wait, bool) \
                or not 0 <= self.max_wait <= 86400:
            raise ConfigError("seconds from 0 to 86400", field="webhook.max_wait")

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data."""
        return asdict(self)


def batch_policy_from(data: BatchPolicy | dict[str, Any] | None) -> BatchPolicy | None:
    if data is None or isinstance(data, BatchPolicy):
        return data
    if not isinstance(data, dict) or set(data) - {"size", "max_wait"}:
        raise ConfigError("expected a mapping with size and max_wait", field="batching")
    return BatchPolicy(**data)
