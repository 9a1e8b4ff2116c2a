"""What happened in one run, in the shape the invariants read: deliveries, attempts, arrivals, events.

A :class:`History` is built from what any user can see — the engine's public views (``deliveries()``,
``attempts()``, ``config_view()``), the events it logs, and the simulated providers' :class:`Recorder`
— never from the store's tables, so the invariants keep meaning the same thing when the store changes.
The same shape comes out of a finished scenario run (:meth:`History.from_run`), which is how
``dispatchsim explore`` and :func:`dispatchsim.testing.simulate` check their examples.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from dispatchsim.engine.clock import parse_iso
from dispatchsim.engine.config import build_snapshot
from dispatchsim.engine.health import CircuitBreaker
from dispatchsim.engine.policy import OrderingPolicy, RetryPolicy


@dataclass(frozen=True, kw_only=True)
class ConfigRules:
    """The policies one configuration promised: what the invariants hold its deliveries to."""

    retry: RetryPolicy
    ordering: OrderingPolicy
    circuit_breaker: CircuitBreaker | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> ConfigRules:
        """From configuration fields as given to ``Engine.add_config`` (or a scenario's configuration)."""
        snap, _ = build_snapshot({**{k: v for k, v in fields.items() if k in (
            "retry", "ordering", "timeouts", "circuit_breaker", "auto_disable")},
            "endpoint_url": "http://127.0.0.1:1/rules"})
        return cls(retry=snap.retry, ordering=snap.ordering, circuit_breaker=snap.circuit_breaker)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    id: int
    webhook_id: str
    config_id: str
    queue: str
    status: str  #: READY | RETRYING | DISPATCHED | FAILED
    attempts: int
    failed_reason: str | None
    created_at: float
    dispatched_at: float | None


@dataclass(frozen=True, kw_only=True)
class Attempt:
    delivery_id: int
    number: int
    started_at: float
    finished_at: float | None  #: None while in flight (or cut by a crash and not yet marked)
    outcome: str | None  #: SUCCESS, HTTP_ERROR, TIMEOUT, CONNECT_ERROR, PROTOCOL_ERROR, INTERRUPTED, …
    status_code: int | None
    retry_after: float | None
    next_attempt_at: float | None


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """One request as the receiving endpoint saw it."""

    seq: int  #: arrival order over all simulated endpoints
    endpoint: str
    at: float
    webhook_id: str | None
    payload_id: str | None  #: the payload's ``id`` (the activity id), when it has one
    acknowledged: bool  #: a complete 2xx reached the sender


@dataclass(frozen=True, kw_only=True)
class Event:
    """One engine event (``delivery.failed``, ``circuit.opened`` …) with its clock time."""

    at: float
    name: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class History:
    """A run, read back: everything the invariants in :mod:`dispatchsim.testing.invariants` look at."""

    deliveries: tuple[Delivery, ...]
    attempts: tuple[Attempt, ...]  #: replays (manual re-sends of a DISPATCHED delivery) left out
    arrivals: tuple[Arrival, ...]
    events: tuple[Event, ...]
    configs: Mapping[str, ConfigRules]
    started_at: float
    finished_at: float
    idle: bool  #: the final drain ended with nothing left to do
    #: deliveries the run was meant to create (activities x matching configurations), when known
    expected_deliveries: int | None = None
    #: (from, to): the engine was down (crashed, not yet restarted); nothing can be sent then
    downtimes: tuple[tuple[float, float], ...] = ()
    #: the run as a scenario file, when it came from one (printed with a failed invariant)
    scenario_yaml: str | None = field(default=None, compare=False)

    # -- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, *, deliveries: Iterable[Mapping[str, Any]], attempts: Iterable[Mapping[str, Any]],
              events: Iterable[Mapping[str, Any]], records: Iterable[Any], configs: Mapping[str, ConfigRules],
              started_at: float, finished_at: float, idle: bool, expected_deliveries: int | None = None,
              downtimes: Iterable[tuple[float, float]] = (), scenario_yaml: str | None = None) -> History:
        """From the engine's delivery and attempt views, its event dicts and the recorder's records."""
        return cls(
            deliveries=tuple(_delivery(d) for d in deliveries),
            attempts=tuple(_attempt(a) for a in attempts if not a.get("replay")),
            arrivals=tuple(_arrival(r) for r in records if r.method not in ("GET", "HEAD")),
            events=tuple(Event(at=parse_iso(e["ts"]), name=str(e.get("event")),
                               fields={k: v for k, v in e.items() if k not in ("ts", "event", "level")})
                         for e in events if e.get("ts")),
            configs=dict(configs), started_at=started_at, finished_at=finished_at, idle=idle,
            expected_deliveries=expected_deliveries, downtimes=tuple(downtimes), scenario_yaml=scenario_yaml)

    @classmethod
    async def capture(cls, engine: Any, recorder: Any, *, events: Iterable[Mapping[str, Any]],
                      started_at: float, idle: bool, expected_deliveries: int | None = None,
                      downtimes: Iterable[tuple[float, float]] = ()) -> History:
        """From a live engine (public calls only), the events it sent to a ``subscribe``d list, and a
        :class:`~dispatchsim.providers.Recorder`."""
        deliveries = [d.to_json() for d in await engine.deliveries()]  # the views the API shows
        configs = {cid: ConfigRules.from_fields(await engine.config_view(cid))
                   for cid in {d["config_id"] for d in deliveries}}
        attempts = [a.to_json() for a in await engine.attempts()]
        return cls.build(deliveries=deliveries, attempts=attempts, events=list(events), records=recorder.records,
                         configs=configs, started_at=started_at, finished_at=engine.clock.now(), idle=idle,
                         expected_deliveries=expected_deliveries, downtimes=downtimes)

    @classmethod
    def from_run(cls, result: Any, *, expected_deliveries: int | None = None,
                 scenario_yaml: str | None = None) -> History:
        """From a finished scenario run (:class:`dispatchsim.scenarios.RunResult`)."""
        configs = {c.id: ConfigRules.from_fields(c.fields) for c in result.scenario.configurations}
        downtimes = [(result.t0 + ev.at, result.t0 + ev.at + ev.action.restart_after)
                     for ev in result.scenario.timeline if ev.kind == "crash"]
        return cls.build(deliveries=result.deliveries, attempts=result.attempts,
                         events=(json.loads(line) for line in result.events), records=result.recorder.records,
                         configs=configs, started_at=result.t0, finished_at=result.finished_at, idle=result.idle,
                         expected_deliveries=expected_deliveries, downtimes=downtimes, scenario_yaml=scenario_yaml)

    # -- reading ----------------------------------------------------------------------------

    def delivery(self, delivery_id: int) -> Delivery:
        for d in self.deliveries:
            if d.id == delivery_id:
                return d
        raise KeyError(delivery_id)

    def attempts_of(self, delivery_id: int) -> list[Attempt]:
        """The tries of one delivery, in order."""
        return self._by_delivery.get(delivery_id, [])

    @cached_property
    def _by_delivery(self) -> dict[int, list[Attempt]]:
        out: dict[int, list[Attempt]] = {}
        for a in sorted(self.attempts, key=lambda a: (a.delivery_id, a.number)):
            out.setdefault(a.delivery_id, []).append(a)
        return out

    def named(self, *names: str) -> list[Event]:
        return [e for e in self.events if e.name in names]

    def force_retries(self) -> dict[int, list[float]]:
        """delivery id -> times it was force-retried (the manual way out of FAILED)."""
        out: dict[int, list[float]] = {}
        for e in self.named("delivery.force_retry"):
            out.setdefault(int(e.fields["delivery_id"]), []).append(e.at)
        return out

    def ordered(self, d: Delivery) -> bool:
        rules = self.configs.get(d.config_id)
        return rules is not None and rules.ordering.ordered

    def offset(self, t: float) -> str:
        """A clock time as an offset from the start, ``+1h02m03s``: how explanations name moments."""
        from dispatchsim.engine.clock import fmt_offset

        return fmt_offset(t - self.started_at)


def _t(value: Any) -> float | None:
    if value is None:
        return None
    return parse_iso(value) if isinstance(value, str) else float(value)


def _delivery(d: Mapping[str, Any]) -> Delivery:
    return Delivery(id=int(d["id"]), webhook_id=str(d["webhook_id"]), config_id=str(d["config_id"]),
                    queue=str(d["queue"]), status=str(d["status"]), attempts=int(d["attempts"]),
                    failed_reason=d.get("failed_reason"), created_at=_t(d["created_at"]) or 0.0,
                    dispatched_at=_t(d.get("dispatched_at")))


def _attempt(a: Mapping[str, Any]) -> Attempt:
    return Attempt(delivery_id=int(a["delivery_id"]), number=int(a["number"]), started_at=_t(a["started_at"]) or 0.0,
                   finished_at=_t(a.get("finished_at")), outcome=a.get("outcome"), status_code=a.get("status_code"),
                   retry_after=a.get("retry_after"), next_attempt_at=_t(a.get("next_attempt_at")))


def _arrival(r: Any) -> Arrival:
    body = r.json
    payload_id = str(body["id"]) if isinstance(body, dict) and body.get("id") is not None else None
    return Arrival(seq=r.seq, endpoint=r.endpoint, at=r.at, webhook_id=r.headers.get("webhook-id"),
                   payload_id=payload_id, acknowledged=r.acknowledged)
