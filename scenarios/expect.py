"""Expectations: each kind is one class that parses its value from the file and checks a finished run.

To add one, write a class here with ``key`` (the name under ``expect:``), ``parse`` and ``check``, and add
it to :data:`EXPECTATIONS`: the table is what the parser accepts and the order the report lists checks in.
Classes with ``key = None`` are not written in files; they hold for every run (e.g. "the run finished").
"""
from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from dispatchsim.engine import LIFECYCLE, Status
from dispatchsim.engine.clock import fmt_offset, iso, parse_iso
from dispatchsim.providers.recorder import Receipt, receipt

from dispatchsim.errors import Collector, ReportedAlready, misspelt

from .errors import ScenarioError
from .parsing import KeyPath, ParseContext, Reader

if TYPE_CHECKING:
    from .runner import RunResult
    from .spec import Scenario

STATUSES = tuple(s.value for s in LIFECYCLE)


@dataclass(frozen=True)
class Check:
    """One expectation, checked: what was expected, what the run showed, and the file line it came from."""

    name: str
    ok: bool
    expected: str
    observed: str
    line: int | None = None


@dataclass(frozen=True, kw_only=True)
class Expectation(ABC):
    """One kind of expectation: its parse (from the file) and its check (against a finished run)."""

    key: ClassVar[str | None]  #: its name under ``expect:``; None for one that every run is checked against
    #: what its check reads that a run keeps only when asked: ``"events"`` (the event log), ``"records"``
    #: (the endpoints' records, not only their receipts); a run asked not to keep them keeps them for it
    reads: ClassVar[frozenset[str]] = frozenset()
    line: int | None = field(default=None, compare=False)  #: where the file states it

    @classmethod
    @abstractmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        """Validate the value written under ``expect: <key>``; errors name ``file:line: key``."""

    @classmethod
    def implied(cls, scenario: Scenario) -> Expectation | None:
        """For ``key = None`` kinds: the expectation every run of ``scenario`` is held to, if any."""
        return None

    @abstractmethod
    def check(self, r: RunResult) -> list[Check]:
        """The checks this expectation makes on a finished run (passing or not)."""

    def result(self, name: str, ok: Any, expected: Any, observed: Any) -> Check:
        return Check(name, bool(ok), str(expected), str(observed), self.line)


# ---------------------------------------------------------------------------------------------- the kinds


@dataclass(frozen=True, kw_only=True)
class Finished(Expectation):
    """Every run must go idle within its duration: work left over is a failure of its own."""

    key: ClassVar[str | None] = None

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        raise TypeError(f"{cls.__name__} is implied by every run; a scenario file never writes it")

    @classmethod
    def implied(cls, scenario: Scenario) -> Expectation:
        return cls()

    def check(self, r: RunResult) -> list[Check]:
        if r.idle:
            return []
        return [Check("finished", False, f"idle within duration {fmt_offset(r.scenario.duration)}",
                      f"work left at {fmt_offset(r.elapsed)}: {r.counts}", None)]


@dataclass(frozen=True, kw_only=True)
class _Flag(Expectation):
    """``key: true`` switches the check on; ``false`` states nothing."""

    on: bool

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        return cls(on=ctx.reader.boolean(value, path), line=ctx.reader.line(path))


@dataclass(frozen=True, kw_only=True)
class AllDelivered(_Flag):
    key: ClassVar[str | None] = "all_delivered"

    def check(self, r: RunResult) -> list[Check]:
        if not self.on:
            return []
        counts = r.counts
        return [self.result("all_delivered", counts[Status.DISPATCHED.value] == len(r.deliveries) and r.deliveries,
                            f"all {len(r.deliveries)} deliveries DISPATCHED", _fmt_counts(counts))]


@dataclass(frozen=True, kw_only=True)
class _Tally(Expectation):
    """A count per name (status, notification kind, provider): ``{name: n}``."""

    counts: dict[str, int]
    what: ClassVar[str]

    @classmethod
    @abstractmethod
    def allowed(cls, ctx: ParseContext) -> set[str] | frozenset[str] | None:
        """The names this tally may count (None: any; the file's list of them is itself invalid)."""

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        P = ctx.reader
        value = P.mapping(value, path, cls.allowed(ctx), cls.what)
        return cls(counts=P.each(value, lambda k, n: P.integer(n, path + (k,))), line=P.line(path))

    @abstractmethod
    def observed(self, r: RunResult, name: str) -> int:
        """How many of ``name`` the run shows."""

    def check(self, r: RunResult) -> list[Check]:
        out = []
        for name, n in self.counts.items():
            got = self.observed(r, name)
            out.append(self.result(f"{self.key}.{name}", got == n, *self.texts(n, got)))
        return out

    def texts(self, expected: int, got: int) -> tuple[str, str]:
        return str(expected), str(got)


@dataclass(frozen=True, kw_only=True)
class Counts(_Tally):
    """Deliveries per status at the end."""

    key: ClassVar[str | None] = "counts"
    what: ClassVar[str] = "counts per status"

    @classmethod
    def allowed(cls, ctx: ParseContext) -> set[str]:
        return set(STATUSES)

    def observed(self, r: RunResult, name: str) -> int:
        return r.counts[name]


@dataclass(frozen=True, kw_only=True)
class Order(Expectation):
    """``strict``: every ordered queue acknowledged its deliveries in creation order."""

    key: ClassVar[str | None] = "order"
    mode: str

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        if value not in ("strict", "none"):
            raise ctx.reader.fail(path, "expected strict (every queue acknowledged in creation order) or none")
        return cls(mode=value, line=ctx.reader.line(path))

    def check(self, r: RunResult) -> list[Check]:
        if self.mode != "strict":
            return []
        violations = order_violations(r)
        return [self.result("order", not violations, "every queue acknowledged in creation order",
                            "in order" if not violations else "; ".join(violations[:3]))]


@dataclass(frozen=True, kw_only=True)
class MaxDuplicates(Expectation):
    """At most N extra acknowledgements of one delivery (a timeout after the receiver answered)."""

    key: ClassVar[str | None] = "max_duplicates"
    limit: int

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        return cls(limit=ctx.reader.integer(value, path), line=ctx.reader.line(path))

    def check(self, r: RunResult) -> list[Check]:
        dups = duplicates(r)
        return [self.result("max_duplicates", dups <= self.limit,
                            f"<= {self.limit} deliveries acknowledged more than once (extra acknowledgements)",
                            f"{dups} extra acknowledgements")]


@dataclass(frozen=True, kw_only=True)
class Duplicates(Expectation):
    """Exactly this many extra copies ``received`` by the receiver and/or ``acknowledged`` to the sender."""

    key: ClassVar[str | None] = "duplicates"
    counts: dict[str, int]

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        P = ctx.reader
        value = P.mapping(value, path, {"received", "acknowledged"}, "duplicate counts")
        return cls(counts=P.each(value, lambda k, n: P.integer(n, path + (k,))), line=P.line(path))

    def check(self, r: RunResult) -> list[Check]:
        out = []
        for kind in ("received", "acknowledged"):
            if kind in self.counts:
                got = duplicates(r, acknowledged=kind == "acknowledged")
                out.append(self.result(f"duplicates.{kind}", got == self.counts[kind],
                                       f"{self.counts[kind]} extra {kind} copies", f"{got} extra {kind} copies"))
        return out


@dataclass(frozen=True, kw_only=True)
class AttemptsPerDelivery(Expectation):
    """Attempts of every delivery (or of one): ``{min, max, exactly, delivery}``."""

    key: ClassVar[str | None] = "attempts_per_delivery"
    bounds: dict[str, int]

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        P = ctx.reader
        value = P.mapping(value, path, {"max", "min", "exactly", "delivery"}, "attempts per delivery")
        return cls(bounds=P.each(value, lambda k, n: P.integer(n, path + (k,), lo=1)), line=P.line(path))

    def check(self, r: RunResult) -> list[Check]:
        spec = self.bounds
        n, lo, hi = _attempts_spread(r, spec.get("delivery"))
        got = "no deliveries" if not n else f"{lo}" if lo == hi else f"{lo}..{hi}"
        label = f"delivery {spec['delivery']}" if "delivery" in spec else "every delivery"
        out = []
        if "exactly" in spec:
            out.append(self.result(self.key, bool(n) and lo == hi == spec["exactly"],
                                   f"{label}: exactly {spec['exactly']}", got))
        if "max" in spec:
            out.append(self.result(self.key, not n or hi <= spec["max"], f"{label}: at most {spec['max']}", got))
        if "min" in spec:
            out.append(self.result(self.key, bool(n) and lo >= spec["min"], f"{label}: at least {spec['min']}", got))
        return out


@dataclass(frozen=True, kw_only=True)
class RetryDelays(Expectation):
    """The first waits between one delivery's attempts: ``[1m, 2m, 4m]`` or ``{delivery, delays}``."""

    key: ClassVar[str | None] = "retry_delays"
    delivery: int
    delays: list[float]

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        P = ctx.reader
        spec = P.mapping(value if isinstance(value, dict) else {"delays": value}, path, {"delivery", "delays"},
                         "retry delays")
        found = Collector()  # the delivery and each delay are checked on their own
        delivery, delays = 1, []
        with found.guard():
            delivery = P.integer(spec.get("delivery", 1), path + ("delivery",), lo=1)
        with found.guard():
            items = P.required(spec, path, "delays", "expected a list of delays such as [1m, 2m, 4m, 8m]")
            if not isinstance(items, list) or not items:
                raise P.fail(path, "expected a list of delays such as [1m, 2m, 4m, 8m]")
            delays = P.each_item(items, lambda i, d: P.duration(d, path + ("delays", i)))
        found.raise_if_any(ScenarioError)
        return cls(delivery=delivery, delays=delays, line=P.line(path))

    def check(self, r: RunResult) -> list[Check]:
        got = retry_delays(r, self.delivery)
        want = self.delays
        return [self.result("retry_delays", [round(g, 3) for g in got[:len(want)]] == [round(w, 3) for w in want],
                            f"delivery {self.delivery}: {', '.join(fmt_offset(w)[1:] for w in want)}",
                            ", ".join(fmt_offset(g)[1:] for g in got) or "no retries")]


@dataclass(frozen=True, kw_only=True)
class DeliveredBy(Expectation):
    """Every delivery DISPATCHED by this offset from the start."""

    key: ClassVar[str | None] = "delivered_by"
    by: float

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        return cls(by=ctx.reader.duration(value, path), line=ctx.reader.line(path))

    def check(self, r: RunResult) -> list[Check]:
        limit = r.t0 + self.by
        last, late = _delivered_by(r, limit + 1e-6)
        return [self.result("delivered_by", not late, f"all DISPATCHED by {fmt_offset(self.by)}",
                            f"last at {fmt_offset(last - r.t0)}" if last and not late
                            else f"late or missing: {late}")]


FAILED_REASONS = ("exhausted", "permanent_status", "mapping_error")


def _ids(P: Reader, value: list[Any], path: KeyPath) -> list[int]:
    """Delivery ids, each checked on its own."""
    return P.each_item(value, lambda i, x: P.integer(x, path + (i,), lo=1))


@dataclass(frozen=True, kw_only=True)
class Failed(Expectation):
    """The FAILED set: a count, a list of delivery ids, or ``{count, deliveries, reason}``."""

    key: ClassVar[str | None] = "failed"
    count: int | None = None
    deliveries: list[int] | None = None
    reason: str | None = None

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        P = ctx.reader
        line = P.line(path)
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(count=value, line=line)
        if isinstance(value, list):
            return cls(deliveries=_ids(P, value, path), line=line)
        if not isinstance(value, dict):
            raise P.fail(path, "expected a count, a list of delivery ids, or {count, deliveries, reason}")
        value = P.mapping(value, path, {"count", "deliveries", "reason"}, "the FAILED set")
        found = Collector()  # each key is checked on its own
        count = deliveries = reason = None
        with found.guard():
            count = P.integer(value["count"], path + ("count",)) if "count" in value else None
        with found.guard():
            if "deliveries" in value:
                if not isinstance(value["deliveries"], list):
                    raise P.fail(path + ("deliveries",), "expected a list of delivery ids")
                deliveries = _ids(P, value["deliveries"], path + ("deliveries",))
        with found.guard():
            reason = value.get("reason")
            if "reason" in value and reason not in FAILED_REASONS:
                raise P.fail(path + ("reason",), f"expected one of {', '.join(FAILED_REASONS)}, got {reason!r}")
        with found.guard():
            if "count" not in value and "deliveries" not in value:
                if misspelt("count", P.unknown.get(path, ())) or misspelt("deliveries", P.unknown.get(path, ())):
                    raise ReportedAlready()
                raise P.fail(path, "give count and/or deliveries (and optionally reason)")
        found.raise_if_any(ScenarioError)
        return cls(count=count, deliveries=deliveries, reason=reason, line=line)

    def check(self, r: RunResult) -> list[Check]:
        failed = [d["id"] for d in r.deliveries if d["status"] == Status.FAILED.value]
        out = []
        if self.count is not None:
            out.append(self.result("failed", len(failed) == self.count, f"{self.count} FAILED",
                                   f"{len(failed)} FAILED {failed[:10]}"))
        if self.deliveries is not None:
            out.append(self.result("failed", failed == sorted(self.deliveries), f"FAILED {self.deliveries}",
                                   f"FAILED {failed}"))
        if self.reason is not None:
            reasons = sorted({d["failed_reason"] for d in r.deliveries if d["status"] == Status.FAILED.value})
            out.append(self.result("failed.reason", reasons == [self.reason],
                                   f"every FAILED delivery failed with {self.reason}", f"reasons: {reasons or 'none'}"))
        return out


@dataclass(frozen=True, kw_only=True)
class MappingShape(Expectation):
    """What the bodies one provider received look like: ``{provider, has, lacks, array, equals}``."""

    key: ClassVar[str | None] = "mapping_shape"
    reads: ClassVar[frozenset[str]] = frozenset({"records"})
    spec: dict[str, Any]

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        P = ctx.reader
        value = P.mapping(value, path, {"provider", "has", "lacks", "array", "equals"}, "a mapping shape")
        found = Collector()  # each key is checked on its own
        with found.guard():
            P.known(P.string(P.required(value, path, "provider"), path + ("provider",)), path + ("provider",),
                    ctx.providers, "provider")
        for key in ("has", "lacks"):  # dotted paths into the received bodies
            with found.guard():
                if key in value:
                    if not isinstance(value[key], list):
                        raise P.fail(path + (key,), "expected a list of dotted paths such as [task.title, customer.id]")
                    P.each_item(value[key], lambda i, item: P.string(item, path + (key, i)))
        with found.guard():
            if "array" in value:
                P.boolean(value["array"], path + ("array",))
        found.raise_if_any(ScenarioError)
        return cls(spec=dict(value), line=P.line(path))

    def check(self, r: RunResult) -> list[Check]:
        spec, line = self.spec, self.line
        has, lacks = spec.get("has", []), spec.get("lacks", [])
        first: Any = None
        seen = 0
        all_arrays = True
        missing = dict.fromkeys(has, 0)  # bodies without the path
        present = dict.fromkeys(lacks, 0)  # bodies with it
        for x in r.recorder.records:  # one pass, one body decoded at a time
            if x.endpoint != spec["provider"] or x.method != "POST":
                continue
            body = x.json
            if not seen:
                first = body
            seen += 1
            all_arrays = all_arrays and isinstance(body, list)
            item = body[0] if isinstance(body, list) and body else body
            for path in missing:
                missing[path] += not _has(item, path)
            for path in present:
                present[path] += _has(item, path)
        name = f"mapping_shape.{spec['provider']}"
        if not seen:
            return [Check(name, False, "at least one POST received", "none received", line)]
        out = []
        if "array" in spec:
            out.append(Check(name + ".array", all_arrays == bool(spec["array"]), f"array: {spec['array']}",
                             f"first body is {type(first).__name__}", line))
        for path in has:
            out.append(Check(f"{name}.has.{path}", missing[path] == 0, f"every body has {path}",
                             f"missing in {missing[path]} of {seen}", line))
        for path in lacks:
            out.append(Check(f"{name}.lacks.{path}", present[path] == 0, f"no body has {path}",
                             f"present in {present[path]} of {seen}", line))
        if "equals" in spec:
            out.append(Check(name + ".equals", first == spec["equals"], str(spec["equals"]), str(first), line))
        return out


@dataclass(frozen=True, kw_only=True)
class NoSecretsInLogs(_Flag):
    """No configured credential appears in the event log, the attempts or what providers recorded."""

    key: ClassVar[str | None] = "no_secrets_in_logs"
    reads: ClassVar[frozenset[str]] = frozenset({"events", "records"})

    def check(self, r: RunResult) -> list[Check]:
        if not self.on:
            return []
        secrets = [s for s in r.secrets if s]
        texts = itertools.chain(r.events, r.recorder.lines(), (str(a.get("error")) for a in r.attempts))
        found = {s for text in texts for s in secrets if s in text}
        leaked = [s[:3] + "…" for s in r.secrets if s in found]
        return [self.result("no_secrets_in_logs", not leaked and r.secrets,
                            f"none of {len(r.secrets)} secrets in events, attempts or the provider record",
                            "none found" if not leaked else f"found: {leaked}")]


@dataclass(frozen=True, kw_only=True)
class _ConfigList(Expectation):
    """A list of configuration ids the file declared."""

    ids: list[str]
    what: ClassVar[str]

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        P = ctx.reader
        if not isinstance(value, list):
            raise P.fail(path, f"expected a list of configuration ids{cls.what}")
        return cls(ids=P.each_item(value, lambda i, c: P.config_ref(c, path + (i,), ctx.configs)), line=P.line(path))


@dataclass(frozen=True, kw_only=True)
class ActivationRefused(_ConfigList):
    """Exactly these configurations had their verification GET refused."""

    key: ClassVar[str | None] = "activation_refused"
    what: ClassVar[str] = ""

    def check(self, r: RunResult) -> list[Check]:
        return [self.result("activation_refused", sorted(r.refused) == sorted(self.ids),
                            f"refused: {sorted(self.ids)}",
                            "; ".join(f"{k}: {v.split('failed: ', 1)[-1]}" for k, v in sorted(r.refused.items()))
                            or "none refused")]


@dataclass(frozen=True, kw_only=True)
class DeclaredActivation(Expectation):
    """A configuration's own ``activation: refused`` (or an unexpected refusal) is an expectation too."""

    key: ClassVar[str | None] = None
    configs: tuple[tuple[str, str, int | None], ...]  #: (id, declared activation, line)

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        raise TypeError(f"{cls.__name__} is implied by every run; a scenario file never writes it")

    @classmethod
    def implied(cls, scenario: Scenario) -> Expectation:
        return cls(configs=tuple((c.id, c.activation, c.line) for c in scenario.configurations))

    def check(self, r: RunResult) -> list[Check]:
        out = []
        for cid, activation, line in self.configs:
            refused = cid in r.refused
            if activation == "refused" or refused:
                out.append(Check(f"activation.{cid}", (activation == "refused") == refused, f"activation {activation}",
                                 f"refused: {r.refused[cid].split('failed: ', 1)[-1]}" if refused else "activated",
                                 line))
        return out


@dataclass(frozen=True, kw_only=True)
class Notifications(_Tally):
    """Notifications per kind (auto-disable, circuit opened/closed)."""

    key: ClassVar[str | None] = "notifications"
    what: ClassVar[str] = "notification counts per kind"

    @classmethod
    def allowed(cls, ctx: ParseContext) -> set[str]:
        return {"config.auto_disabled", "circuit.opened", "circuit.closed"}

    def observed(self, r: RunResult, name: str) -> int:
        return sum(1 for x in r.notifications if x["kind"] == name)


@dataclass(frozen=True, kw_only=True)
class Inactive(_ConfigList):
    """Exactly these configurations are inactive at the end."""

    key: ClassVar[str | None] = "inactive"
    what: ClassVar[str] = " (inactive at the end)"

    def check(self, r: RunResult) -> list[Check]:
        return [self.result("inactive", sorted(r.inactive) == sorted(self.ids),
                            f"inactive at the end: {sorted(self.ids)}", f"inactive: {sorted(r.inactive)}")]


@dataclass(frozen=True, kw_only=True)
class EventsReceived(_Tally):
    """Message events acknowledged in batches, per provider."""

    key: ClassVar[str | None] = "events_received"
    reads: ClassVar[frozenset[str]] = frozenset({"records"})
    what: ClassVar[str] = "message events acknowledged per provider"

    @classmethod
    def allowed(cls, ctx: ParseContext) -> frozenset[str] | None:
        return ctx.providers

    def observed(self, r: RunResult, name: str) -> int:
        return sum(len(x.json) for x in r.recorder.records if x.endpoint == name and x.method == "POST"
                   and x.acknowledged and isinstance(x.json, list))

    def texts(self, expected: int, got: int) -> tuple[str, str]:
        return f"{expected} message events acknowledged in batches", f"{got} acknowledged"


@dataclass(frozen=True, kw_only=True)
class Received(_Tally):
    """POST requests received per provider (every copy, acknowledged or not)."""

    key: ClassVar[str | None] = "received"
    what: ClassVar[str] = "requests received per provider"

    @classmethod
    def allowed(cls, ctx: ParseContext) -> frozenset[str] | None:
        return ctx.providers

    def observed(self, r: RunResult, name: str) -> int:
        return _tally(r).posts.get(name, 0)

    def texts(self, expected: int, got: int) -> tuple[str, str]:
        return f"{expected} POSTs", f"{got} POSTs"


#: Every expectation kind, in the order a report lists their checks.
EXPECTATIONS: tuple[type[Expectation], ...] = (
    Finished, AllDelivered, Counts, Order, MaxDuplicates, Duplicates, AttemptsPerDelivery, RetryDelays, DeliveredBy,
    Failed, MappingShape, NoSecretsInLogs, ActivationRefused, DeclaredActivation, Notifications, Inactive,
    EventsReceived, Received,
)


def kinds() -> dict[str, type[Expectation]]:
    """The kinds a file can state, by their key under ``expect:``; read from :data:`EXPECTATIONS` on each
    call, so the table stays the one place a kind is registered."""
    return {cls.key: cls for cls in EXPECTATIONS if cls.key is not None}


def expectations(scenario: Scenario) -> Iterator[Expectation]:
    """The expectations a run of ``scenario`` is held to: the implied ones and those the file states,
    in :data:`EXPECTATIONS` order."""
    for cls in EXPECTATIONS:
        exp = scenario.expect.get(cls.key) if cls.key is not None else cls.implied(scenario)
        if exp is not None:
            yield exp


def evaluate(r: RunResult) -> list[Check]:
    """Every check of the run, in :data:`EXPECTATIONS` order."""
    return [check for exp in expectations(r.scenario) for check in exp.check(r)]


def reads(scenario: Scenario) -> frozenset[str]:
    """What the checks of ``scenario`` read that a run keeps only when asked (see :attr:`Expectation.reads`):
    the run keeps it even when no report asks for it."""
    return frozenset().union(*(exp.reads for exp in expectations(scenario)))


# ---------------------------------------------------------------------------------------------- helpers


def _t(value: str | None) -> float | None:
    return parse_iso(value) if value else None


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no deliveries"


def _attempts_spread(r: Any, delivery_id: int | None) -> tuple[int, int | None, int | None]:
    """(deliveries, fewest attempts, most attempts) of every delivery or of one: by the run's database
    when it has one (no row read), else from its rows."""
    reader = getattr(r, "reader", None)
    if reader is not None:
        return reader.attempts_spread(delivery_id)
    values = [d["attempts"] for d in r.deliveries if delivery_id is None or d["id"] == delivery_id]
    return len(values), min(values, default=None), max(values, default=None)


def _delivered_by(r: Any, limit: float) -> tuple[float | None, list[int]]:
    """When the last delivery was DISPATCHED, and the first ten (by id) not DISPATCHED by ``limit``,
    with times as the rows show them (to the millisecond). By the run's database when it has one:
    the late ones are looked for among those DISPATCHED after ``limit`` less 2 ms (rounding moves a
    time by less), so only they are read, not every delivery."""
    late: list[int] = []  # the first ten, enough to show
    reader = getattr(r, "reader", None)
    if reader is None:
        last = None
        for d in r.deliveries:
            at = _t(d["dispatched_at"])
            if at is not None and (last is None or at > last):
                last = at
            if (d["status"] != Status.DISPATCHED.value or at > limit) and len(late) < 10:
                late.append(d["id"])
        return last, late
    stored = reader.last_dispatched_at()
    for did, status, at in reader.not_dispatched_by(limit - 0.002):
        if status != Status.DISPATCHED.value or _t(iso(at)) > limit:
            late.append(did)
            if len(late) == 10:
                break
    return None if stored is None else _t(iso(stored)), late


def _has(obj: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False
        obj = obj[part]
    return True


def unordered_configs(scenario: Any) -> set[str]:
    """Configurations with ``ordering: none``: they promise no order, so order checks skip them."""
    out = set()
    for c in scenario.configurations:
        o = c.fields.get("ordering")
        if o == "none" or (isinstance(o, dict) and o.get("mode") == "none"):
            out.add(c.id)
    return out


#: records looked up in the run's database at a time (see :func:`_finder`)
_BATCH = 2000

_Found = dict[str, tuple[int, str, str]]


def _finder(r: Any) -> Callable[[list[str]], _Found]:
    """Looks up the deliveries of a batch of webhook-ids: ``wid -> (id, config_id, queue)``. By the
    run's database when it has one, so no dictionary of every delivery is built (at 100,000
    deliveries that was 12 MB); otherwise from its rows."""
    reader = getattr(r, "reader", None)
    if reader is not None:
        return reader.by_webhook_id
    known = {d["webhook_id"]: (d["id"], d["config_id"], d["queue"]) for d in r.deliveries}
    return lambda wids: known


def _resolved(r: Any, keyed: Iterable[tuple[Any, str | None]]) -> Iterator[tuple[Any, str, tuple[int, str, str] | None]]:
    """``(item, its delivery key, its delivery or None)`` for the items with a delivery key, in order,
    their deliveries looked up :data:`_BATCH` at a time."""
    find = _finder(r)
    batch: list[tuple[Any, str]] = []
    for item, key in itertools.chain(keyed, [(None, None)]):
        if key:
            batch.append((item, key))
        if batch and (item is None or len(batch) >= _BATCH):
            found = find([key for _, key in batch])
            for got, key in batch:
                yield got, key, found.get(key)
            batch = []


def _receipts(records: Any) -> Iterator[Receipt]:
    """The records' receipts: read without making the records when they are a recorder's file."""
    read = getattr(records, "receipts", None)
    return read() if read is not None else map(receipt, records)


def _flag(flags: bytearray, i: int) -> bool:
    """Set ``flags[i]`` (growing ``flags``); whether it was set before."""
    if i >= len(flags):
        flags.extend(bytes(i + 1 - len(flags)))
    was = flags[i]
    flags[i] = 1
    return bool(was)


@dataclass(frozen=True)
class RecordTally:
    """What the expectations ask of the simulated endpoints' records, from one pass over them.

    A long run's records are read back from a file (see ``providers.recorder.Records``), and each pass
    decodes every one of them: the order, duplicate and ``received`` checks made a pass each (three
    passes over 10,550 records in the 10k scenario). :attr:`RunResult.record_tally` keeps this one."""

    posts: dict[str, int]  #: POST requests received per endpoint name
    order: list[str]  #: see :func:`order_violations`
    extra_acknowledged: int  #: see :func:`duplicates`
    extra_received: int


def tally_records(r: Any) -> RecordTally:
    """One pass over ``r.recorder.records`` (in arrival order) for :class:`RecordTally`: per ordered
    queue, the first acknowledgement of each delivery must come in creation order (deliveries that went
    through a force retry are left out: by design they arrive late); extra copies of one delivery (same
    webhook-id) beyond the first, acknowledged ones (the sender saw a 2xx) and every reception that
    reached the receiver's handler, a delivery's copies counted by its id, other keys (a notification's)
    by name. What is kept per delivery is one byte (acknowledged yet) and two counters."""
    unordered = unordered_configs(r.scenario)
    posts: Counter[str] = Counter()
    seen = bytearray()
    last: dict[str, int] = {}
    order: list[str] = []
    acked, received = array("l"), array("l")
    acked_other: dict[str, int] = defaultdict(int)
    received_other: dict[str, int] = defaultdict(int)

    def counted(receipts: Iterable[Receipt]) -> Iterator[tuple[Receipt, str | None]]:
        for rec in receipts:
            if rec[1] == "POST":
                posts[rec[0]] += 1
            yield rec, rec[3]

    for (_, method, ack, _, by_header), key, hit in _resolved(r, counted(_receipts(r.recorder.records))):
        post = method == "POST"
        if hit is None:
            if post:
                received_other[key] += 1
                if ack:
                    acked_other[key] += 1
            continue
        did, cid, q = hit
        if post:
            _count(received, did)
            if ack:
                _count(acked, did)
        # with a webhook-id header, it is the delivery key
        if not ack or not by_header or cid in unordered or _flag(seen, did) or did in r.force_retried:
            continue
        if did < last.get(q, 0):
            order.append(f"queue {q}: delivery {did} acknowledged after {last[q]}")
        last[q] = max(last.get(q, 0), did)

    def extra(per_delivery: array[int], others: dict[str, int]) -> int:
        return sum(n - 1 for n in itertools.chain(per_delivery, others.values()) if n > 1)

    return RecordTally(posts=dict(posts), order=order, extra_acknowledged=extra(acked, acked_other),
                       extra_received=extra(received, received_other))


def _tally(r: Any) -> RecordTally:
    """The run's tally (kept by a :class:`RunResult`), or one made now for another kind of result."""
    kept = getattr(r, "record_tally", None)
    return kept if isinstance(kept, RecordTally) else tally_records(r)


def _count(counts: array[int], i: int) -> None:
    if i >= len(counts):
        counts.extend(itertools.repeat(0, i + 1 - len(counts)))
    counts[i] += 1


def order_violations(r: Any) -> list[str]:
    """Per ordered queue, the first acknowledgement of each delivery must come in creation order
    (see :func:`tally_records`)."""
    return _tally(r).order


def duplicates(r: Any, *, acknowledged: bool = True) -> int:
    """Extra copies of one delivery (same webhook-id) beyond the first: acknowledged ones (the sender
    saw a 2xx), or with ``acknowledged=False`` every reception that reached the receiver's handler
    (see :func:`tally_records`)."""
    t = _tally(r)
    return t.extra_acknowledged if acknowledged else t.extra_received


def retry_delays(r: Any, delivery_id: int) -> list[float]:
    """Wait between the end of each failed attempt and the start of the next (the backoff)."""
    attempts = [a for a in r.attempts_of(delivery_id) if a["outcome"] != "INTERRUPTED"]
    out = []
    for prev, nxt in zip(attempts, attempts[1:]):
        out.append(parse_iso(nxt["started_at"]) - parse_iso(prev["finished_at"]))
    return out


__all__ = ["Check", "EXPECTATIONS", "Expectation", "RecordTally", "evaluate", "kinds", "order_violations", "duplicates",
           "retry_delays"]
