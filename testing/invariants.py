"""The promises of retry and ordering, as plain functions over a :class:`~dispatchsim.testing.History`.

Each invariant returns ``None`` when it holds and a sentence saying what broke, where and when
(``"queue crm: delivery 3 acknowledged at +12m00s before delivery 2 (at +14m05s)"``) when it does
not, so a failing property reads like a bug report. :func:`check` runs several and raises one
``AssertionError`` listing every explanation (and the run as a scenario file, when there is one).

Time is the simulated clock; the engine's views carry milliseconds, hence :data:`TOLERANCE`.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from .history import Attempt, Delivery, History

#: seconds two clock readings may differ by and still be "the same moment" (views are in ms)
TOLERANCE = 2e-3

#: seconds a retry may start after it was due with nothing in the run to explain it (the late side
#: only: a check that runs the loop time past real round trips, as on PostgreSQL, may widen it
#: without hiding anything early or overlapping)
LATE_TOLERANCE = TOLERANCE

Invariant = Callable[[History], "str | None"]

_DONE = ("DISPATCHED", "FAILED")


def acknowledged_in_order(h: History) -> str | None:
    """Per ordered queue, the first acknowledgement of each delivery comes in creation order.

    Deliveries that were force-retried are left out: by design they come back late.
    """
    by_wid = {d.webhook_id: d for d in h.deliveries}
    retried = h.force_retries()
    seen: set[str] = set()
    last: dict[str, tuple[Delivery, float]] = {}
    for a in sorted(h.arrivals, key=lambda a: a.seq):
        d = by_wid.get(a.webhook_id or "")
        if not a.acknowledged or d is None or d.webhook_id in seen or not h.ordered(d) or d.id in retried:
            continue
        seen.add(d.webhook_id)
        prev = last.get(d.queue)
        if prev is not None and d.id < prev[0].id:
            return (f"queue {d.queue}: delivery {d.id} acknowledged at {h.offset(a.at)}, after delivery "
                    f"{prev[0].id} (acknowledged at {h.offset(prev[1])}) although it was created first")
        if prev is None or d.id > prev[0].id:
            last[d.queue] = (d, a.at)
    return None


def no_overtaking(h: History) -> str | None:
    """In an ordered queue nothing is tried while an earlier delivery is still waiting or retrying:
    "the following requests are postponed until the successful delivery of the first one"."""
    retried = h.force_retries()
    ended: dict[int, float] = {}
    for d in h.deliveries:
        tries = [a for a in h.attempts_of(d.id) if a.finished_at is not None]
        if d.status in _DONE and tries:
            ended[d.id] = tries[-1].finished_at  # type: ignore[assignment]
    queues: dict[str, list[Delivery]] = defaultdict(list)
    for d in sorted(h.deliveries, key=lambda d: d.id):
        if h.ordered(d) and d.id not in retried:
            queues[d.queue].append(d)
    for queue, ds in queues.items():
        barrier, blocker = float("-inf"), None  # when every earlier delivery of the queue was done
        for d in ds:
            for a in h.attempts_of(d.id):
                if blocker is not None and a.started_at < barrier - TOLERANCE:
                    state = (f"still {blocker.status}" if barrier == float("inf")
                             else f"not done yet (it ended at {h.offset(barrier)})")
                    return (f"queue {queue}: delivery {d.id} tried at {h.offset(a.started_at)} while "
                            f"delivery {blocker.id}, created before it, was {state}")
            end = ended.get(d.id, float("inf"))
            if end > barrier:
                barrier, blocker = end, d
    return None


def attempt_times_follow_policy(h: History) -> str | None:
    """After each failed try the next one is scheduled exactly as the retry policy says (backoff,
    schedule, seeded jitter, Retry-After and its ceiling), and it starts then — never earlier, and
    later only for a reason the run shows (a crash, an open circuit, a paused configuration, a
    force retry ahead of it in its queue)."""
    retried = h.force_retries()
    excuses = _late_excuses(h)
    for d in h.deliveries:
        rules = h.configs.get(d.config_id)
        if rules is None:
            continue
        k = 0
        budget_start = d.created_at
        pending = sorted(retried.get(d.id, []))
        prev: Attempt | None = None
        for a in h.attempts_of(d.id):
            if pending and pending[0] <= a.started_at + TOLERANCE:
                budget_start = pending.pop(0)
                k, prev = 0, None
            if a.outcome in (None, "INTERRUPTED"):
                prev = None  # a crash cut it: the restarted engine sends again at once
                continue
            if prev is not None and prev.next_attempt_at is not None:
                due = prev.next_attempt_at
                if a.started_at < due - TOLERANCE:
                    return (f"delivery {d.id}: try {a.number} started at {h.offset(a.started_at)}, before it was "
                            f"due at {h.offset(due)}")
                if a.started_at > due + max(TOLERANCE, LATE_TOLERANCE) and not excuses(d, due, a.started_at):
                    return (f"delivery {d.id}: try {a.number} was due at {h.offset(due)} but started only at "
                            f"{h.offset(a.started_at)}, and nothing in the run (crash, open circuit, pause) "
                            "explains the wait")
            k += 1
            if a.next_attempt_at is not None and a.finished_at is not None:
                want = rules.retry.decide(attempt=k, now=a.finished_at, budget_started_at=budget_start,
                                          retry_after=a.retry_after, status=a.status_code,
                                          delivery_key=d.webhook_id)
                if not want.retry:
                    return (f"delivery {d.id}: after failed try {a.number} at {h.offset(a.finished_at)} the "
                            f"policy gives up ({want.reason}), yet a retry was scheduled for "
                            f"{h.offset(a.next_attempt_at)}")
                if abs(a.next_attempt_at - (want.at or 0.0)) > TOLERANCE:
                    return (f"delivery {d.id}: after failed try {a.number} (ended {h.offset(a.finished_at)}) the "
                            f"next was scheduled for {h.offset(a.next_attempt_at)}; the policy says "
                            f"{h.offset(want.at or 0.0)} (a wait of {want.delay:g}s)")
            prev = a
    return None


def _late_excuses(h: History) -> Callable[[Delivery, float, float], bool]:
    """Whether something in the run explains a try starting after it was due."""
    crashes = [e.at for e in h.named("attempt.interrupted", "event_batch.interrupted")]
    restarts = sorted({a.finished_at for a in h.attempts if a.outcome == "INTERRUPTED" and a.finished_at})
    circuit: dict[str, list[float]] = defaultdict(list)
    for e in h.named("circuit.opened", "circuit.half_open"):
        circuit[str(e.fields.get("config_id"))].append(e.at)
    paused: dict[str, list[float]] = defaultdict(list)
    for e in h.named("config.deactivated", "config.auto_disabled"):
        paused[str(e.fields.get("config_id"))].append(e.at)
    queue_retries = [(int(e.fields["delivery_id"]), str(e.fields.get("queue")), e.at)
                     for e in h.named("delivery.force_retry")]

    def excused(d: Delivery, due: float, started: float) -> bool:
        def between(times: Iterable[float]) -> bool:
            return any(due - TOLERANCE <= t <= started + TOLERANCE for t in times)

        down = any(a <= started + TOLERANCE and b >= due - TOLERANCE for a, b in h.downtimes)
        return (down or between(crashes) or between(restarts) or between(circuit[d.config_id])
                or between(paused[d.config_id])
                or any(q == d.queue and did < d.id and t <= started + TOLERANCE for did, q, t in queue_retries))

    return excused


def nothing_lost(h: History) -> str | None:
    """Every delivery the engine announced (``delivery.created``) still exists, as many as the run
    should have made (unless a configuration was paused, which stops new ones), and every
    DISPATCHED one really reached the endpoint (a 2xx is on record for its ``webhook-id``) —
    across crashes and restarts too."""
    have = {d.id for d in h.deliveries}
    for e in h.named("delivery.created"):
        if int(e.fields["delivery_id"]) not in have:
            return f"delivery {e.fields['delivery_id']}, created at {h.offset(e.at)}, is gone"
    paused = h.named("config.deactivated", "config.auto_disabled")
    if h.expected_deliveries is not None and not paused and len(h.deliveries) != h.expected_deliveries:
        return (f"{h.expected_deliveries} deliveries should exist (activities x matching configurations), "
                f"found {len(h.deliveries)}")
    acked = {a.webhook_id for a in h.arrivals if a.acknowledged}
    for d in h.deliveries:
        if d.status == "DISPATCHED" and d.webhook_id not in acked:
            return (f"delivery {d.id} is DISPATCHED but the endpoint never acknowledged webhook-id "
                    f"{d.webhook_id}")
    return None


def all_settled(h: History) -> str | None:
    """Once the endpoint recovers and the engine drains, every delivery ends DISPATCHED or FAILED
    (or waits behind a queue head that its policy blocks, or in a paused configuration)."""
    if not h.idle:
        return f"the run did not drain: work was left at {h.offset(h.finished_at)}"
    blocked = {d.queue: d.id for d in h.deliveries if d.status == "FAILED"
               and h.configs.get(d.config_id) is not None and h.configs[d.config_id].ordering.on_exhausted == "block"
               and h.ordered(d)}
    paused = {str(e.fields.get("config_id")) for e in h.named("config.deactivated", "config.auto_disabled")}
    for d in h.deliveries:
        if d.status not in _DONE and not (d.queue in blocked and blocked[d.queue] < d.id) \
                and d.config_id not in paused:
            return f"delivery {d.id} is still {d.status} after the drain ({d.attempts} tries)"
    return None


def duplicates_share_webhook_id(h: History) -> str | None:
    """A payload that reaches an endpoint more than once always carries the same ``webhook-id``, and
    one ``webhook-id`` always carries the same payload: receivers can drop duplicates by that id."""
    wid_of: dict[tuple[str, str], str] = {}
    payload_of: dict[str, str] = {}
    for a in h.arrivals:
        if a.payload_id is None or a.webhook_id is None:
            continue
        key = (a.endpoint, a.payload_id)
        first = wid_of.setdefault(key, a.webhook_id)
        if first != a.webhook_id:
            return (f"endpoint {a.endpoint}: payload {a.payload_id} arrived with webhook-id {first} and again at "
                    f"{h.offset(a.at)} with {a.webhook_id}")
        other = payload_of.setdefault(a.webhook_id, a.payload_id)
        if other != a.payload_id:
            return f"webhook-id {a.webhook_id} carried payload {other} and, at {h.offset(a.at)}, {a.payload_id}"
    return None


def failed_only_by_policy(h: History) -> str | None:
    """A delivery is FAILED only when its policy says so (its budget of tries used up, its
    ``max_age`` reached, a status it names as permanent, a payload its mapping rejects), and nothing
    leaves FAILED without a manual force retry."""
    retried = h.force_retries()
    failed_at: dict[int, list[float]] = defaultdict(list)
    for e in h.named("delivery.failed"):
        failed_at[int(e.fields["delivery_id"])].append(e.at)
    for d in h.deliveries:
        rules = h.configs.get(d.config_id)
        tries = [a for a in h.attempts_of(d.id) if a.outcome not in (None, "INTERRUPTED")]
        since = max([t for t in retried.get(d.id, [])] or [d.created_at])
        budgeted = [a for a in tries if a.started_at >= since - TOLERANCE]
        if d.status == "FAILED" and rules is not None:
            last = budgeted[-1] if budgeted else None
            if d.failed_reason == "permanent_status":
                if last is None or last.status_code not in rules.retry.permanent_statuses:
                    code = last.status_code if last else None
                    return f"delivery {d.id} FAILED as permanent_status, but its last answer was {code}"
            elif d.failed_reason == "exhausted":
                budget = rules.retry.budget
                aged = rules.retry.max_age is not None and last is not None and last.finished_at is not None
                if budget is not None and len(budgeted) < budget and not aged:
                    return (f"delivery {d.id} FAILED (exhausted) after {len(budgeted)} tries; its policy allows "
                            f"{budget}")
                if budget is None and not aged:
                    return f"delivery {d.id} FAILED (exhausted) under a policy that never gives up"
            elif d.failed_reason != "mapping_error":
                return f"delivery {d.id} FAILED for an unknown reason {d.failed_reason!r}"
        for t in failed_at.get(d.id, []):
            later = [a for a in tries if a.started_at > t + TOLERANCE]
            if later and not any(t <= r <= later[0].started_at + TOLERANCE for r in retried.get(d.id, [])):
                return (f"delivery {d.id} FAILED at {h.offset(t)} yet was tried again at "
                        f"{h.offset(later[0].started_at)} without a force retry")
    return None


def no_overdue_retry(h: History) -> str | None:
    """After a drain no retry is left waiting for a moment that has already passed."""
    if not h.idle:
        return None
    paused = {str(e.fields.get("config_id")) for e in h.named("config.deactivated", "config.auto_disabled")}
    due: dict[int, float] = {}
    for a in sorted(h.attempts, key=lambda a: (a.delivery_id, a.number)):
        due[a.delivery_id] = a.next_attempt_at if a.next_attempt_at is not None else due.get(a.delivery_id, 0.0)
    for d in h.deliveries:
        if d.status == "RETRYING" and d.config_id not in paused and due.get(d.id, 0.0) < h.finished_at - TOLERANCE:
            return (f"delivery {d.id} is RETRYING, due at {h.offset(due[d.id])}, but the drain ended at "
                    f"{h.offset(h.finished_at)} without trying it")
    return None


def nothing_sent_while_circuit_open(h: History) -> str | None:
    """While a configuration's circuit is open (from ``circuit.opened`` until its cool-down lets one
    probe through) no request for it starts."""
    config_of = {d.id: d.config_id for d in h.deliveries}
    open_from: dict[str, float] = {}
    intervals: list[tuple[str, float, float]] = []
    for e in sorted(h.named("circuit.opened", "circuit.half_open", "circuit.closed"), key=lambda e: e.at):
        cid = str(e.fields.get("config_id"))
        if e.name == "circuit.opened":
            open_from[cid] = e.at
        elif cid in open_from:
            intervals.append((cid, open_from.pop(cid), e.at))
    intervals += [(cid, t, h.finished_at) for cid, t in open_from.items()]
    for a in h.attempts:
        cid = config_of.get(a.delivery_id)
        for icid, t0, t1 in intervals:
            if icid == cid and t0 + TOLERANCE < a.started_at < t1 - TOLERANCE:
                return (f"configuration {cid}: delivery {a.delivery_id} try {a.number} sent at "
                        f"{h.offset(a.started_at)} while its circuit was open ({h.offset(t0)} .. {h.offset(t1)})")
    return None


def one_attempt_at_a_time(h: History) -> str | None:
    """Never two tries of one delivery at once, and at most one try in flight per ordered queue."""
    by_key: dict[str, list[tuple[float, float, Attempt]]] = defaultdict(list)
    queue_of = {d.id: (d.queue if h.ordered(d) else f"#{d.id}") for d in h.deliveries}
    for a in h.attempts:
        end = a.finished_at if a.finished_at is not None else h.finished_at
        by_key[queue_of.get(a.delivery_id, f"#{a.delivery_id}")].append((a.started_at, end, a))
    for key, spans in by_key.items():
        spans.sort(key=lambda s: s[0])
        for (s0, e0, a0), (s1, _e1, a1) in zip(spans, spans[1:]):
            if s1 < e0 - TOLERANCE and a0.outcome != "INTERRUPTED":
                what = f"delivery {a0.delivery_id}" if key.startswith("#") else f"queue {key}"
                return (f"{what}: try {a1.number} of delivery {a1.delivery_id} started at {h.offset(s1)} while try "
                        f"{a0.number} of delivery {a0.delivery_id} was in flight ({h.offset(s0)} .. {h.offset(e0)})")
    return None


def finished_within(seconds: float) -> Invariant:
    """An invariant: every delivery is DISPATCHED or FAILED within ``seconds`` of the run's start."""
    def finished_within_bound(h: History) -> str | None:
        for d in h.deliveries:
            tries = [a for a in h.attempts_of(d.id) if a.finished_at is not None]
            end = tries[-1].finished_at if tries and d.status in _DONE else None
            if end is None:
                return f"delivery {d.id} is still {d.status}; everything should be done by {h.offset(h.started_at + seconds)}"
            if end > h.started_at + seconds + TOLERANCE:
                return (f"delivery {d.id} ended {d.status} at {h.offset(end)}, later than the bound "
                        f"{h.offset(h.started_at + seconds)}")
        return None

    finished_within_bound.__doc__ = f"Every delivery ends within {seconds:g} s of the start."
    return finished_within_bound


#: Every invariant that holds for any run without a time bound; :func:`check`'s default.
ALL: tuple[Invariant, ...] = (acknowledged_in_order, no_overtaking, attempt_times_follow_policy, nothing_lost,
                              all_settled, duplicates_share_webhook_id, failed_only_by_policy, no_overdue_retry,
                              nothing_sent_while_circuit_open, one_attempt_at_a_time)


def _resolve(invariants: tuple[Invariant | str, ...]) -> tuple[Invariant, ...]:
    """The invariants to run: each given as a function or by the name of one in :data:`ALL`
    (``"nothing_lost"``); an unknown name is refused before anything runs, naming the known ones."""
    if not invariants:
        return ALL
    by_name = {inv.__name__: inv for inv in ALL}
    out = []
    for inv in invariants:
        if isinstance(inv, str):
            if inv not in by_name:
                raise ValueError(f"unknown invariant {inv!r}; the named ones are: {', '.join(sorted(by_name))}")
            inv = by_name[inv]
        elif not callable(inv):
            raise TypeError(f"an invariant is a function History -> str | None or its name, not {inv!r}")
        out.append(inv)
    return tuple(out)


def violations(h: History, *invariants: Invariant | str) -> list[str]:
    """``name: explanation`` for each invariant that fails (all of :data:`ALL` when none are named);
    each is a function or the name of one in :data:`ALL`."""
    out = []
    for inv in _resolve(invariants):
        why = inv(h)
        if why is not None:
            out.append(f"{getattr(inv, '__name__', 'invariant')}: {why}")
    return out


def check(h: History, *invariants: Invariant | str) -> None:
    """Raise ``AssertionError`` naming every broken invariant (all of :data:`ALL` when none are named;
    each is a function or the name of one in :data:`ALL`); the run is appended as a ready-to-run
    scenario file when it came from one."""
    broken = violations(h, *invariants)
    if broken:
        text = "\n".join(broken)
        if h.scenario_yaml:
            text += "\n\nThe run as a scenario file (dispatchsim run FILE):\n" + h.scenario_yaml
        raise AssertionError(text)


__all__ = ["ALL", "LATE_TOLERANCE", "TOLERANCE", "Invariant", "acknowledged_in_order", "all_settled", "attempt_times_follow_policy",
           "check", "duplicates_share_webhook_id", "failed_only_by_policy", "finished_within", "no_overdue_retry",
           "no_overtaking", "nothing_lost", "nothing_sent_while_circuit_open", "one_attempt_at_a_time", "violations"]
