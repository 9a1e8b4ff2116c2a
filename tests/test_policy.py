from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatchsim.engine.errors import ConfigError
from dispatchsim.engine.policy import PRESETS, OrderingPolicy, RetryPolicy, delay, ordering_policy_from, retry_policy_from


def test_backoff_is_reteno_sequence_then_hourly():
    got = [delay(n, base=60, factor=2, cap=3600) for n in range(1, 10)]
    assert got == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_backoff_huge_attempt_numbers_stay_at_cap():
    assert delay(10_000, base=60, factor=2, cap=3600) == 3600


def test_backoff_rejects_attempt_zero():
    with pytest.raises(ValueError):
        delay(0, base=60, factor=2, cap=3600)


@given(st.integers(1, 40), st.integers(0, 2**32))
def test_jitter_stays_within_bounds(attempt, seed):
    full = delay(attempt, base=60, factor=2, cap=3600, jitter="full", rng=random.Random(seed))
    equal = delay(attempt, base=60, factor=2, cap=3600, jitter="equal", rng=random.Random(seed))
    plain = delay(attempt, base=60, factor=2, cap=3600)
    assert 0 <= full <= plain
    assert plain / 2 <= equal <= plain


def test_seeded_jitter_is_reproducible_per_delivery():
    p = RetryPolicy(jitter="full", seed=42)
    a = [p.delay_for(n, delivery_key="msg_1") for n in range(1, 6)]
    assert a == [p.delay_for(n, delivery_key="msg_1") for n in range(1, 6)]
    assert a != [p.delay_for(n, delivery_key="msg_2") for n in range(1, 6)]


def test_decide_exhausts_after_max_attempts():
    p = RetryPolicy(max_attempts=3)
    assert p.decide(attempt=1, now=0, budget_started_at=0).at == 60
    assert p.decide(attempt=2, now=60, budget_started_at=0).at == 180
    last = p.decide(attempt=3, now=180, budget_started_at=0)
    assert not last.retry and "3 of 3" in last.reason


def test_decide_max_age_boundary_exact():
    p = RetryPolicy(max_attempts=None, max_age=420)
    assert p.decide(attempt=3, now=180, budget_started_at=0).at == 420
    assert not RetryPolicy(max_attempts=None, max_age=419).decide(attempt=3, now=180, budget_started_at=0).retry


def test_retry_after_longer_than_backoff_wins_but_is_capped():
    p = RetryPolicy()
    assert p.decide(attempt=1, now=0, budget_started_at=0, retry_after=300).delay == 300
    assert p.decide(attempt=1, now=0, budget_started_at=0, retry_after=30).delay == 60
    assert p.decide(attempt=1, now=0, budget_started_at=0, retry_after=99999).delay == 3600


def test_presets():
    assert PRESETS["reteno"].max_attempts is None
    assert PRESETS["reten"].max_attempts == 10
    assert retry_policy_from("reteno") == PRESETS["reteno"]
    assert retry_policy_from({"preset": "reteno", "base": 5}).base == 5
    assert retry_policy_from(None) == PRESETS["reten"]


@pytest.mark.parametrize("bad, msg", [
    ({"preset": "nope"}, "unknown preset 'nope'"),
    ({"bogus": 1}, "unknown field(s) bogus"),
    ({"base": 0}, "base must be a number of seconds > 0"),
    ({"cap": 1}, "cap must be a number of seconds >= base"),
    ({"max_attempts": 0}, "max_attempts must be a whole number from 1 to 10000"),
    ({"jitter": "some"}, "jitter must be one of"),
    (42, "expected a preset name or a mapping"),
    # values that cannot be scheduled: not finite, out of the documented bounds, the wrong kind
    ({"base": float("nan")}, "base must be a number of seconds > 0"),
    ({"cap": float("inf")}, "cap must be a number of seconds >= base and <= 2.592e+06"),
    ({"factor": 1e6}, "factor must be a number from 1 to 100"),
    ({"schedule": [60, float("inf")]}, "schedule must be a list of 1 to 1000 delays"),
    ({"schedule": [60, -1]}, "schedule must be a list of 1 to 1000 delays"),
    ({"max_attempts": 2.5}, "max_attempts must be a whole number"),
    ({"max_attempts": 10**9}, "max_attempts must be a whole number from 1 to 10000"),
    ({"max_age": float("nan")}, "max_age must be a number of seconds > 0"),
    ({"retry_after_ceiling": 1e12}, "retry_after_ceiling must be a number of seconds from 0"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"permanent_statuses": [200]}, "permanent_statuses must be HTTP status codes"),
    # combinations with no single meaning are refused (docs/retries.md)
    ({"repeat_last": True}, "repeat_last needs a schedule"),
    ({"schedule": [5, 60], "base": 10}, "base shape exponential backoff, but this policy has a schedule"),
    ({"preset": "svix", "cap": 60}, "cap shape exponential backoff, but preset svix has a schedule"),
])
def test_retry_policy_errors_are_clear(bad, msg):
    with pytest.raises(ConfigError) as e:
        retry_policy_from(bad)
    assert msg in str(e.value)


def test_ordering_policy_parsing():
    assert ordering_policy_from(None) == OrderingPolicy(mode="ordered", on_exhausted="skip")
    assert ordering_policy_from("none").ordered is False
    with pytest.raises(ConfigError, match="partition_key"):
        ordering_policy_from({"mode": "partitioned"})
    with pytest.raises(ConfigError, match="on_exhausted must be skip or block"):
        ordering_policy_from({"on_exhausted": "wait"})
    with pytest.raises(ConfigError, match="unknown field"):
        ordering_policy_from({"mood": "ordered"})


def test_explicit_schedule_then_gives_up():
    p = retry_policy_from({"schedule": [0, 5, 300]})
    assert p.budget == 4
    assert [p.decide(attempt=n, now=0, budget_started_at=0).delay for n in (1, 2, 3)] == [0, 5, 300]
    end = p.decide(attempt=4, now=0, budget_started_at=0)
    assert not end.retry and end.kind == "exhausted" and "4 of 4" in end.reason


def test_schedule_repeat_last_and_max_age():
    p = retry_policy_from({"schedule": [60, 600], "repeat_last": True, "max_age": 3000})
    assert p.budget is None
    assert [p.delay_for(n) for n in (1, 2, 3, 4)] == [60, 600, 600, 600]
    assert p.decide(attempt=5, now=2500, budget_started_at=0).retry is False  # 2500 + 600 > 3000


def test_svix_preset_matches_its_documented_schedule():
    p = PRESETS["svix"]
    assert [p.delay_for(n) for n in range(1, 8)] == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert p.budget == 8
    # "an attempt that fails three times before eventually succeeding ... roughly 35 minutes and 5 seconds"
    assert sum(p.delay_for(n) for n in (1, 2, 3)) == 35 * 60 + 5


def test_convoy_presets():
    lin, exp = PRESETS["convoy_linear"], PRESETS["convoy_exponential"]
    assert [lin.delay_for(n) for n in (1, 2, 3)] == [10, 10, 10] and lin.budget == 10
    assert [exp.delay_for(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80] and exp.delay_for(20) == 7200


def test_permanent_status_ends_at_once():
    p = retry_policy_from({"permanent_statuses": [400, 410]})
    d = p.decide(attempt=1, now=0, budget_started_at=0, status=410)
    assert not d.retry and d.kind == "permanent_status"
    assert p.decide(attempt=1, now=0, budget_started_at=0, status=500).retry
    with pytest.raises(ConfigError, match="outside 2xx"):
        retry_policy_from({"permanent_statuses": [204]})


def test_retry_after_ceiling_is_configurable():
    p = retry_policy_from({"retry_after_ceiling": 900})
    assert p.decide(attempt=1, now=0, budget_started_at=0, retry_after=5000).delay == 900
    assert retry_policy_from("svix").decide(attempt=1, now=0, budget_started_at=0, retry_after=600).delay == 600


@given(st.lists(st.floats(0, 1e5, allow_nan=False), min_size=1, max_size=10), st.integers(1, 30))
def test_schedule_delays_come_from_the_list(schedule, attempt):
    p = RetryPolicy(schedule=tuple(schedule), max_attempts=None if schedule[-1] else 50, repeat_last=True)
    assert p.delay_for(attempt) == schedule[min(attempt, len(schedule)) - 1]


def test_a_zero_last_delay_repeated_without_a_budget_is_refused():
    """schedule [..., 0] with repeat_last and no max_attempts retries at the instant of every failure,
    for ever: a test of the retry table hung on it (the virtual clock never moved; 3.6 GB after 20
    minutes). max_age does not bound it (no time passes); max_attempts does."""
    from dispatchsim.engine import ConfigError

    for schedule in ([0.0], [5.0, 0.0]):
        with pytest.raises(ConfigError, match="repeat_last with a last delay of 0 retries at once without end: give "
                                              "the last delay a length or set max_attempts"):
            RetryPolicy(schedule=schedule, repeat_last=True, max_attempts=None, max_age=600.0)
        assert RetryPolicy(schedule=schedule, repeat_last=True, max_attempts=3).budget == 3
    assert RetryPolicy(schedule=[0.0, 5.0], repeat_last=True, max_attempts=None).budget is None  # a last delay > 0
    assert RetryPolicy(schedule=[0.0], max_attempts=None).budget == 2  # no repeat: one immediate retry
