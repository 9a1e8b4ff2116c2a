"""Each public invariant holds on a clean history and fails, with a readable explanation, on a
hand-made history that breaks exactly its promise."""
from __future__ import annotations

from dataclasses import replace

import pytest

from dispatchsim.engine.policy import OrderingPolicy, RetryPolicy
from dispatchsim.testing import Arrival, Attempt, ConfigRules, Delivery, Event, History
from dispatchsim.testing import invariants as inv

T0 = 1_000_000.0
RULES = ConfigRules(retry=RetryPolicy(max_attempts=3), ordering=OrderingPolicy(mode="ordered"))


def _delivery(i: int, status: str = "DISPATCHED", attempts: int = 1, **kw) -> Delivery:
    fields = dict(id=i, webhook_id=f"msg_{i}", config_id="c", queue="c", status=status, attempts=attempts,
                  failed_reason=None, created_at=T0, dispatched_at=None)
    fields.update(kw)
    return Delivery(**fields)


def _attempt(did: int, n: int, start: float, end: float, outcome: str = "SUCCESS", nxt: float | None = None,
             code: int | None = 200, retry_after: float | None = None) -> Attempt:
    return Attempt(delivery_id=did, number=n, started_at=T0 + start, finished_at=T0 + end, outcome=outcome,
                   status_code=code, retry_after=retry_after, next_attempt_at=None if nxt is None else T0 + nxt)


def _arrival(seq: int, did: int, at: float, ok: bool = True, payload: str | None = None) -> Arrival:
    return Arrival(seq=seq, endpoint="crm", at=T0 + at, webhook_id=f"msg_{did}", payload_id=payload or f"a{did}",
                   acknowledged=ok)


def _history(**kw) -> History:
    """Two deliveries in one ordered queue: the first fails once (503), retried after 60 s, then both
    succeed in order."""
    fields = dict(
        deliveries=(_delivery(1, attempts=2), _delivery(2)),
        attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(1, 2, 61, 62),
                  _attempt(2, 1, 62, 63)),
        arrivals=(_arrival(1, 1, 0, ok=False), _arrival(2, 1, 61), _arrival(3, 2, 62)),
        events=(), configs={"c": RULES}, started_at=T0, finished_at=T0 + 100, idle=True, expected_deliveries=2)
    fields.update(kw)
    return History(**fields)


def test_a_clean_history_keeps_every_invariant():
    h = _history()
    assert inv.violations(h) == []
    inv.check(h)
    assert inv.finished_within(63)(h) is None


def test_acknowledged_in_order_names_the_overtaking_delivery():
    h = _history(arrivals=(_arrival(1, 2, 5), _arrival(2, 1, 61)))
    why = inv.acknowledged_in_order(h)
    assert why == ("queue c: delivery 1 acknowledged at +1m01s, after delivery 2 (acknowledged at +5s) "
                   "although it was created first")


def test_acknowledged_in_order_ignores_unordered_configurations_and_force_retries():
    h = _history(arrivals=(_arrival(1, 2, 5), _arrival(2, 1, 61)))
    unordered = {"c": replace(RULES, ordering=OrderingPolicy(mode="none"))}
    assert inv.acknowledged_in_order(replace(h, configs=unordered)) is None
    retried = (Event(at=T0 + 30, name="delivery.force_retry", fields={"delivery_id": 1, "queue": "c"}),)
    assert inv.acknowledged_in_order(replace(h, events=retried)) is None


def test_no_overtaking_catches_a_try_behind_a_retrying_head():
    h = _history(attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(2, 1, 10, 11),
                           _attempt(1, 2, 61, 62)))
    assert inv.no_overtaking(h) == ("queue c: delivery 2 tried at +10s while delivery 1, created before it, "
                                    "was not done yet (it ended at +1m02s)")
    stuck = replace(h, deliveries=(_delivery(1, "RETRYING", 1), _delivery(2)),
                    attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(2, 1, 10, 11)))
    assert inv.no_overtaking(stuck) == ("queue c: delivery 2 tried at +10s while delivery 1, created before it, "
                                        "was still RETRYING")


def test_attempt_times_follow_policy_catches_a_wrong_schedule_and_an_early_or_late_try():
    wrong = _history(attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=31, code=503), _attempt(1, 2, 31, 32),
                               _attempt(2, 1, 62, 63)))
    assert inv.attempt_times_follow_policy(wrong) == (
        "delivery 1: after failed try 1 (ended +1s) the next was scheduled for +31s; the policy says +1m01s "
        "(a wait of 60s)")
    early = _history(attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(1, 2, 50, 51),
                               _attempt(2, 1, 62, 63)))
    assert inv.attempt_times_follow_policy(early) == "delivery 1: try 2 started at +50s, before it was due at +1m01s"
    late = _history(attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(1, 2, 90, 91),
                              _attempt(2, 1, 92, 93)))
    assert "started only at +1m30s" in inv.attempt_times_follow_policy(late)
    opened = (Event(at=T0 + 1, name="circuit.opened", fields={"config_id": "c"}),
              Event(at=T0 + 90, name="circuit.half_open", fields={"config_id": "c"}))
    assert inv.attempt_times_follow_policy(replace(late, events=opened)) is None  # the open circuit explains it


def test_attempt_times_follow_policy_honours_retry_after_and_a_budget_that_ends():
    ra = _history(attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=301, code=429, retry_after=300),
                            _attempt(1, 2, 301, 302), _attempt(2, 1, 302, 303)))
    assert inv.attempt_times_follow_policy(ra) is None
    over = _history(deliveries=(_delivery(1, attempts=4), _delivery(2)), attempts=(
        _attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(1, 2, 61, 62, "HTTP_ERROR", nxt=182, code=503),
        _attempt(1, 3, 182, 183, "HTTP_ERROR", nxt=423, code=503), _attempt(1, 4, 423, 424),
        _attempt(2, 1, 424, 425)))
    assert inv.attempt_times_follow_policy(over).startswith(
        "delivery 1: after failed try 3 at +3m03s the policy gives up (exhausted: 3 of 3 attempts failed)")


def test_nothing_lost_counts_deliveries_and_needs_an_acknowledgement_per_dispatched():
    assert inv.nothing_lost(_history(expected_deliveries=3)) == (
        "3 deliveries should exist (activities x matching configurations), found 2")
    gone = _history(events=(Event(at=T0 + 5, name="delivery.created", fields={"delivery_id": 3}),))
    assert inv.nothing_lost(gone) == "delivery 3, created at +5s, is gone"
    paused = _history(expected_deliveries=3, events=(Event(at=T0, name="config.auto_disabled", fields={}),))
    assert inv.nothing_lost(paused) is None  # a paused configuration makes no new deliveries
    unacked = _history(arrivals=(_arrival(1, 1, 0, ok=False), _arrival(2, 1, 61), _arrival(3, 2, 62, ok=False)))
    assert inv.nothing_lost(unacked) == ("delivery 2 is DISPATCHED but the endpoint never acknowledged webhook-id "
                                         "msg_2")


def test_all_settled_after_a_drain():
    h = _history(deliveries=(_delivery(1, attempts=2), _delivery(2, "READY", 0)), attempts=_history().attempts[:2])
    assert inv.all_settled(h) == "delivery 2 is still READY after the drain (0 tries)"
    assert inv.all_settled(replace(_history(), idle=False)) == "the run did not drain: work was left at +1m40s"
    blocked = {"c": replace(RULES, ordering=OrderingPolicy(mode="ordered", on_exhausted="block"))}
    held = replace(h, deliveries=(_delivery(1, "FAILED", 3, failed_reason="exhausted"), _delivery(2, "READY", 0)),
                   configs=blocked)
    assert inv.all_settled(held) is None  # waits behind a head its policy blocks


def test_duplicates_share_webhook_id():
    h = _history(arrivals=(_arrival(1, 1, 0, ok=False), _arrival(2, 1, 61),
                           Arrival(seq=3, endpoint="crm", at=T0 + 62, webhook_id="msg_9", payload_id="a1",
                                   acknowledged=True)))
    assert inv.duplicates_share_webhook_id(h) == (
        "endpoint crm: payload a1 arrived with webhook-id msg_1 and again at +1m02s with msg_9")
    swapped = _history(arrivals=(_arrival(1, 1, 0), _arrival(2, 1, 61, payload="a2")))
    assert inv.duplicates_share_webhook_id(swapped) == "webhook-id msg_1 carried payload a1 and, at +1m01s, a2"


def test_failed_only_by_policy():
    early = _history(deliveries=(_delivery(1, "FAILED", 1, failed_reason="exhausted"), _delivery(2)),
                     attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", code=503), _attempt(2, 1, 1, 2)))
    assert inv.failed_only_by_policy(early) == "delivery 1 FAILED (exhausted) after 1 tries; its policy allows 3"
    never = replace(early, configs={"c": replace(RULES, retry=RetryPolicy(max_attempts=None))})
    assert inv.failed_only_by_policy(never) == "delivery 1 FAILED (exhausted) under a policy that never gives up"
    permanent = replace(early, deliveries=(_delivery(1, "FAILED", 1, failed_reason="permanent_status"), _delivery(2)))
    assert inv.failed_only_by_policy(permanent) == (
        "delivery 1 FAILED as permanent_status, but its last answer was 503")
    left = _history(events=(Event(at=T0 + 1, name="delivery.failed", fields={"delivery_id": 1}),))
    assert inv.failed_only_by_policy(left) == "delivery 1 FAILED at +1s yet was tried again at +1m01s without a force retry"
    forced = replace(left, events=left.events + (
        Event(at=T0 + 30, name="delivery.force_retry", fields={"delivery_id": 1, "queue": "c"}),))
    assert inv.failed_only_by_policy(forced) is None


def test_no_overdue_retry():
    h = _history(deliveries=(_delivery(1, "RETRYING", 1), _delivery(2, "READY", 0)),
                 attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503),))
    assert inv.no_overdue_retry(h) == ("delivery 1 is RETRYING, due at +1m01s, but the drain ended at +1m40s "
                                       "without trying it")
    assert inv.no_overdue_retry(replace(h, finished_at=T0 + 61)) is None


def test_nothing_sent_while_circuit_open():
    events = (Event(at=T0 + 1, name="circuit.opened", fields={"config_id": "c"}),
              Event(at=T0 + 100, name="circuit.half_open", fields={"config_id": "c"}))
    h = _history(events=events)
    assert inv.nothing_sent_while_circuit_open(h) == (
        "configuration c: delivery 1 try 2 sent at +1m01s while its circuit was open (+1s .. +1m40s)")
    assert inv.nothing_sent_while_circuit_open(replace(h, events=(
        Event(at=T0 + 1, name="circuit.opened", fields={"config_id": "c"}),
        Event(at=T0 + 61, name="circuit.half_open", fields={"config_id": "c"})))) is None


def test_one_attempt_at_a_time():
    h = _history(attempts=(_attempt(1, 1, 0, 30, "TIMEOUT", nxt=90, code=None), _attempt(1, 2, 20, 21)))
    assert inv.one_attempt_at_a_time(h) == ("queue c: try 2 of delivery 1 started at +20s while try 1 of "
                                            "delivery 1 was in flight (+0s .. +30s)")


def test_finished_within_a_bound():
    assert inv.finished_within(60)(_history()) == "delivery 1 ended DISPATCHED at +1m02s, later than the bound +1m00s"


def test_check_lists_every_broken_invariant_and_the_scenario():
    h = _history(arrivals=(_arrival(1, 2, 5), _arrival(2, 1, 61)), expected_deliveries=3, scenario_yaml="name: x\n")
    with pytest.raises(AssertionError) as exc:
        inv.check(h)
    text = str(exc.value)
    assert text.startswith("acknowledged_in_order: queue c: delivery 1")
    assert "\nnothing_lost: 3 deliveries should exist" in text
    assert text.endswith("The run as a scenario file (dispatchsim run FILE):\nname: x\n")


def test_a_late_tolerance_widens_only_the_late_side(monkeypatch):
    """LATE_TOLERANCE (the PostgreSQL state machine's one second) lets a retry start a little late; it
    never lets one start early."""
    monkeypatch.setattr(inv, "LATE_TOLERANCE", 1.0)
    late = _history(attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(1, 2, 61.5, 62.5),
                              _attempt(2, 1, 63, 64)))
    assert inv.attempt_times_follow_policy(late) is None
    early = _history(attempts=(_attempt(1, 1, 0, 1, "HTTP_ERROR", nxt=61, code=503), _attempt(1, 2, 60.5, 61.5),
                               _attempt(2, 1, 62, 63)))
    assert inv.attempt_times_follow_policy(early) == "delivery 1: try 2 started at +1m00s, before it was due at +1m01s"
    monkeypatch.setattr(inv, "LATE_TOLERANCE", inv.TOLERANCE)
    assert "was due at +1m01s but started only at +1m02s" in inv.attempt_times_follow_policy(late)


def test_check_takes_invariants_by_name_as_the_docs_say():
    """docs/testing.md: ``invariants.check(history, *names)``. A name used to be called as a function
    (TypeError: 'str' object is not callable, which hypothesis then shrank for a minute and a half)."""
    broken = _history(arrivals=(_arrival(1, 2, 5), _arrival(2, 1, 61)), expected_deliveries=3)
    with pytest.raises(AssertionError) as exc:
        inv.check(broken, "acknowledged_in_order")
    assert str(exc.value).startswith("acknowledged_in_order: queue c: delivery 1") and "nothing_lost" not in str(exc.value)
    assert inv.violations(broken, "nothing_lost", inv.acknowledged_in_order) == [
        inv.violations(broken, inv.nothing_lost)[0], inv.violations(broken, "acknowledged_in_order")[0]]
    inv.check(_history(), *(i.__name__ for i in inv.ALL))


def test_an_unknown_invariant_name_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown invariant 'nothing_lots'; the named ones are: acknowledged_in_order, "
                                         r"all_settled, .*nothing_lost"):
        inv.check(_history(), "nothing_lots")
    with pytest.raises(TypeError, match="an invariant is a function History -> str | None or its name, not 3"):
        inv.violations(_history(), 3)  # type: ignore[arg-type]
