"""Prometheus text exposition of the store's metrics (``GET /metrics``)."""
from __future__ import annotations

from dispatchsim.engine import Metrics


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(m: Metrics, *, extra: dict[str, float] | None = None) -> str:
    """Prometheus text exposition format 0.0.4."""
    out = ["# HELP dispatchsim_deliveries Deliveries by status.", "# TYPE dispatchsim_deliveries gauge"]
    out += [f'dispatchsim_deliveries{{status="{s}"}} {n}' for s, n in sorted(m.deliveries.items())]
    out += ["# HELP dispatchsim_attempts_total Attempts by outcome.", "# TYPE dispatchsim_attempts_total counter"]
    out += [f'dispatchsim_attempts_total{{outcome="{_esc(o)}"}} {n}' for o, n in sorted(m.attempts.items())]
    out += ["# HELP dispatchsim_queue_depth Pending (READY or RETRYING) deliveries per queue.",
            "# TYPE dispatchsim_queue_depth gauge"]
    out += [f'dispatchsim_queue_depth{{queue="{_esc(q)}"}} {n}' for q, n in sorted(m.queue_depth.items())]
    out += ["# HELP dispatchsim_pending_deliveries Pending deliveries, all queues.",
            "# TYPE dispatchsim_pending_deliveries gauge", f"dispatchsim_pending_deliveries {sum(m.queue_depth.values())}",
            "# HELP dispatchsim_in_flight Attempts holding a lease.", "# TYPE dispatchsim_in_flight gauge",
            f"dispatchsim_in_flight {m.in_flight}",
            "# HELP dispatchsim_attempt_latency_seconds Latency of finished attempts.",
            "# TYPE dispatchsim_attempt_latency_seconds histogram"]
    out += [f'dispatchsim_attempt_latency_seconds_bucket{{le="{b:g}"}} {n}' for b, n in m.latency_buckets]
    out += [f'dispatchsim_attempt_latency_seconds_bucket{{le="+Inf"}} {m.latency_count}',
            f"dispatchsim_attempt_latency_seconds_sum {m.latency_sum:.6f}",
            f"dispatchsim_attempt_latency_seconds_count {m.latency_count}"]
    for name, value in (extra or {}).items():
        out += [f"# TYPE {name} gauge", f"{name} {value:g}"]
    return "\n".join(out) + "\n"
