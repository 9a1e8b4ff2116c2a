"""``GET /metrics`` through ``prometheus_client``: counters and histograms updated as things happen.

Nothing is counted per scrape: the engine's events (one per transition, through
:meth:`Engine.subscribe`) and the dispatcher's attempt observations feed the metrics as they occur,
so a scrape costs the same with ten deliveries or ten million. Each serve process has its own
registry (counters start at zero with the process, as Prometheus expects of counters).
"""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dispatchsim.engine import LATENCY_BUCKETS

CONTENT_TYPE = CONTENT_TYPE_LATEST
# no ``*_created`` series (a wall-clock timestamp per counter): half the exposition, nothing a rate() needs
disable_created_metrics()
#: seconds between an attempt's due time and its start
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
#: events that end an attempt, by the delivery status they leave
_FINISHED = {"delivery.dispatched": "DISPATCHED", "delivery.retrying": "RETRYING", "delivery.failed": "FAILED"}


class ServeMetrics:
    """The metrics of one serve process; :meth:`attach` it to the engine, :meth:`render` per scrape."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.activities = Counter("dispatchsim_activities", "Activities created.", registry=r)
        self.deliveries = Counter("dispatchsim_deliveries", "Deliveries created (one per activity and "
                                  "matching active configuration, or per batch of message events).", registry=r)
        self.transitions = Counter("dispatchsim_delivery_transitions", "Deliveries entering a status after an "
                                   "attempt (DISPATCHED, RETRYING, FAILED).", ["status"], registry=r)
        self.attempts = Counter("dispatchsim_attempts", "HTTP attempts finished, by outcome class.", ["outcome"],
                                registry=r)
        self.operator = Counter("dispatchsim_operator_actions", "Manual actions (force retry, skip, replay, "
                                "recover).", ["action"], registry=r)
        self.events = Counter("dispatchsim_message_events_queued", "Reteno message events accepted.", registry=r)
        self.latency = Histogram("dispatchsim_attempt_latency_seconds", "Latency of HTTP attempts.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Histogram("dispatchsim_dispatch_lag_seconds", "How late an attempt started after it was due.",
                             buckets=LAG_BUCKETS, registry=r)
        self.requests = Counter("dispatchsim_http_requests", "API requests answered, by method, route and status.",
                                ["method", "route", "status"], registry=r)
        self.in_flight = Gauge("dispatchsim_in_flight", "Attempts in flight in this process.", registry=r)

    def attach(self, engine: Any) -> None:
        """Follow ``engine``: its events and its dispatcher's attempts (and its in-flight count, read live)."""
        engine.subscribe(self.on_event)
        engine.dispatcher.observers.append(self.on_attempt)
        self.in_flight.set_function(lambda: engine.dispatcher.in_flight)

    def on_event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "delivery.created":
            self.deliveries.inc()
        elif name in _FINISHED:
            self.transitions.labels(_FINISHED[name]).inc()
        elif name in ("delivery.force_retry", "delivery.skipped", "delivery.replayed"):
            self.operator.labels(name.split(".", 1)[1]).inc()
        elif name == "recovery.force_retry":
            self.operator.labels("recover").inc()
        elif name == "events.queued":
            self.events.inc(int(event.get("count") or 0))

    def on_attempt(self, seen: Any) -> None:
        self.attempts.labels(seen.outcome).inc()
        if seen.latency is not None:
            self.latency.observe(seen.latency)
        self.lag.observe(seen.lag)

    def on_activities(self, n: int) -> None:
        self.activities.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
