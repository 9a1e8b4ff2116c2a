"""Scenario files: parser errors name file:line:key before anything runs; every expectation passes and fails."""
from __future__ import annotations

from pathlib import Path

import pytest

from dispatchsim.scenarios.runner import run_scenario
from dispatchsim.scenarios import ScenarioError, parse_scenario

#: Seven lines; what a test appends starts on line 8.
BASE = """\
name: t
providers:
  crm: {behaviour: {status: 200}}
configurations:
  - id: c
    tenant: acme
    provider: crm
"""

ERRORS = [
    ("unknown top-level key", BASE + "expectations: {}\n",
     "s.yaml:8: expectations: unknown key 'expectations' in a scenario (expected one of: accounts, clock, configurations, "
     "description, duration, expect, name, providers, seed, start, tenants, timeline)"),
    ("unknown key in a configuration", BASE + "    retries: 3\n",
     "s.yaml:8: configurations[0].retries: unknown key 'retries' in a dispatch configuration (expected one of: "
     "activation, active, auth, auto_disable, channel, circuit_breaker, id, mapping, ordering, provider, retry, signing_secret, tenant, timeouts)"),
    # a mistyped duration with a receiver that never recovers ran for ever (never idle, never at the end)
    ("a duration beyond a year", BASE + "duration: 99999999999999999999h\n",
     "s.yaml:8: duration: at most 366d of simulated time, got '99999999999999999999h'"),
    # a run past the calendar's last year failed half-way with a traceback (year 10000 is out of range)
    ("a start too late", BASE + "start: 9999-12-31T23:00:00Z\n",
     "s.yaml:8: start: 9999-12-31 23:00:00+00:00 plus the duration ends after 9999-01-01, the latest a run may end "
     "(later times cannot be written as dates): start earlier"),
    ("bad duration", BASE + "timeline:\n  - at: 10 minutes\n    create: {}\n",
     "s.yaml:9: timeline[0].at: expected a duration like 30s, 10m, 6h or a number of seconds, got '10 minutes'"),
    ("unknown provider", BASE.replace("provider: crm", "provider: erp"),
     "s.yaml:7: configurations[0].provider: unknown provider 'erp' (providers: crm)"),
    ("unknown configuration in the timeline", BASE + "timeline:\n  - at: 1m\n    deactivate: d\n",
     "s.yaml:10: timeline[0].deactivate: unknown configuration 'd' (configurations: c)"),
    ("two actions in one event", BASE + "timeline:\n  - at: 1m\n    create: {}\n    crash: {}\n",
     "s.yaml:9: timeline[0]: expected exactly one action besides 'at' (one of: activate, crash, create, deactivate,"
     " edit, endpoint, force_retry, message_events, replay, skip), got create, crash"),
    ("bad rate", BASE + "timeline:\n  - at: 0s\n    create: {rate: 5 per second, for: 1m}\n",
     "s.yaml:10: timeline[0].create.rate: expected a rate like 5/s or 30/m, got '5 per second'"),
    ("rate without for", BASE + "timeline:\n  - at: 0s\n    create: {rate: 5/s}\n",
     "s.yaml:10: timeline[0].create: a rate needs 'for' (how long, e.g. for: 10m)"),
    ("count and rate", BASE + "timeline:\n  - at: 0s\n    create: {count: 3, rate: 1/s, for: 1m}\n",
     "s.yaml:10: timeline[0].create: use one of count, rate, cron — not count and rate"),
    ("bad cron", BASE + "timeline:\n  - at: 0s\n    create: {cron: '61 * * * *'}\n",
     "s.yaml:10: timeline[0].create.cron: not a crontab expression (Error validating expression '61': the last "
     "value (61) is higher than the maximum value (59)); e.g. '*/15 * * * *'"),
    ("bad behaviour key", BASE.replace("{behaviour: {status: 200}}", "{behaviour: {status: 200, latncy: 1s}}"),
     "s.yaml:3: providers.crm.behaviour.latncy: unknown key 'latncy' in a response; allowed: body, content_type, "
     "headers, latency, location, retry_after, retry_after_date, status"),
    ("bad fault inside a mix", BASE.replace("{behaviour: {status: 200}}",
                                            "\n    behaviour:\n      mix: [{p: 0.3, status: 503}, {fault: explode}]"),
     "s.yaml:5: providers.crm.behaviour.mix[1].fault: unknown fault 'explode'; one of hang, headers_then_stall, "
     "slow_body, truncated, garbage, reset, close, refuse"),
    ("bad retry value", BASE + "    retry: {max_attempts: 0}\n",
     "s.yaml:8: configurations[0].retry: max_attempts must be a whole number from 1 to 10000 (or null for never give up)"),
    ("retry duration not a duration", BASE + "    retry:\n      preset: reten\n      cap: one hour\n",
     "s.yaml:10: configurations[0].retry.cap: expected a duration like 30s, 10m, 6h or a number of seconds, "
     "got 'one hour'"),
    ("timeouts not a number", BASE + "    timeouts: {connect: 5, total: [30]}\n",
     "s.yaml:8: configurations[0].timeouts: total must be a number (seconds for times), got [30]"),
    ("bad schedule entry", BASE + "    retry: {schedule: [5s, soon]}\n",
     "s.yaml:8: configurations[0].retry.schedule[1]: expected a duration like 30s, 10m, 6h or a number of seconds, "
     "got 'soon'"),
    ("bad ordering", BASE + "    ordering: {mode: partitioned}\n",
     "s.yaml:8: configurations[0].ordering: mode partitioned needs partition_key (e.g. commerceExternalId)"),
    ("bad mapping", BASE + "    mapping: {fields: {a: {from: id, fn: uper}}}\n",
     "s.yaml:8: configurations[0].mapping: a: unknown function 'uper' (known: concat, date_format, "
     "date_only, epoch_ms, epoch_seconds, format, join, lower, to_bool, to_number, to_string, to_timezone, trim, "
     "upper)"),
    ("bad activation", BASE + "    activation: maybe\n",
     "s.yaml:8: configurations[0].activation: expected ok or refused (what the verification GET should do)"),
    ("duplicate configuration id", BASE + "  - id: c\n    tenant: acme\n    provider: crm\n",
     "s.yaml:8: configurations[1].id: duplicate configuration id 'c'"),
    ("external URL on the virtual clock",
     "name: t\nclock: virtual\nproviders:\n  crm: {url: 'https://crm.example.com/hooks'}\n"
     "configurations:\n  - {id: c, tenant: acme, provider: crm}\n",
     "s.yaml:2: clock: provider(s) crm are external URLs, which only work on the real clock: use clock: real "
     "(or remove clock:)"),
    ("event after the duration", BASE.replace("name: t\n", "name: t\nduration: 1h\n")
     + "timeline:\n  - at: 2h\n    create: {}\n",
     "s.yaml:10: timeline[0].at: 2h is after the scenario's duration"),
    ("unknown simulated endpoint", BASE + "timeline:\n  - at: 1m\n    endpoint: {name: erp, behaviour: {status: 503}}\n",
     "s.yaml:10: timeline[0].endpoint.name: unknown simulated endpoint 'erp' (simulated: crm)"),
    ("bad behaviour in the timeline", BASE + "timeline:\n  - at: 1m\n    endpoint:\n      name: crm\n"
                                             "      behaviour: {status: 200, fault: hang}\n",
     "s.yaml:12: timeline[0].endpoint.behaviour: status: unknown key 'status' in fault hang; allowed: fault, "
     "latency"),
    ("bad edit", BASE + "timeline:\n  - at: 1m\n    edit: {config: c, retry: {max_attempts: 0}}\n",
     "s.yaml:10: timeline[0].edit.retry: max_attempts must be a whole number from 1 to 10000 (or null for never give up)"),
    ("missing name", BASE.replace("name: t\n", "description: x\n"),
     "s.yaml:1: missing required key 'name'"),
    ("unknown expectation", BASE + "expect:\n  all_deliverd: true\n",
     "s.yaml:9: expect.all_deliverd: unknown key 'all_deliverd' in the expectations (expected one of: "
     "activation_refused, all_delivered, attempts_per_delivery, counts, delivered_by, duplicates, events_received, "
     "failed, "
     "inactive, "
     "mapping_shape, max_duplicates, no_secrets_in_logs, notifications, order, received, retry_delays)"),
    ("unknown status in counts", BASE + "expect:\n  counts: {DELIVERED: 3}\n",
     "s.yaml:9: expect.counts.DELIVERED: unknown key 'DELIVERED' in counts per status (expected one of: "
     "DISPATCHED, FAILED, READY, RETRYING)"),
    ("unknown provider in received", BASE + "expect:\n  received: {erp: 1}\n",
     "s.yaml:9: expect.received.erp: unknown key 'erp' in requests received per provider (expected one of: crm)"),
    ("bad delay in retry_delays", BASE + "expect:\n  retry_delays: [1m, soon]\n",
     "s.yaml:9: expect.retry_delays.delays[1]: expected a duration like 30s, 10m, 6h or a number of seconds, "
     "got 'soon'"),
    ("mapping_shape path that is not text", BASE + "expect:\n  mapping_shape: {provider: crm, has: [task.title, null]}\n",
     "s.yaml:9: expect.mapping_shape.has[1]: expected a non-empty string, got nothing (null)"),
    ("mapping_shape has that is not a list", BASE + "expect:\n  mapping_shape: {provider: crm, lacks: null}\n",
     "s.yaml:9: expect.mapping_shape.lacks: expected a list of dotted paths such as [task.title, customer.id]"),
    ("configuration id the engine refuses", BASE.replace("id: c", "id: '{'"),
     "s.yaml:5: configurations[0].id: configuration id '{': use 1-64 letters, digits, '_', '-', '.', ':', starting "
     "with a letter or digit"),
    ("tenant id the engine refuses", "tenants: [acme, a b]\n" + BASE,
     "s.yaml:1: tenants[1]: tenant id 'a b': use 1-64 letters, digits, '_', '-', '.', ':', starting with a letter or "
     "digit"),
    ("YAML syntax", BASE + "timeline: [\n",
     "s.yaml:9: invalid YAML: expected the node content, but found '<stream end>'"),
]


@pytest.mark.parametrize("text, message", [(t, m) for _, t, m in ERRORS], ids=[n for n, _, _ in ERRORS])
def test_parser_error_names_file_line_and_key(text, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.yaml")
    assert str(info.value) == message
    assert str(info.value).startswith(f"s.yaml:{info.value.line}: ")


# ---- expectations: each kind passing and failing, with the observed value

#: Two activities on one ordered queue; the endpoint refuses the first two requests. Delivery 1 is tried
#: at 0, 1m and 3m; delivery 2 waits and goes once at 3m. Four POSTs in all.
RETRIED = """\
name: retried
seed: 1
duration: 2h
providers:
  crm:
    behaviour: {sequence: [{times: 2, status: 503}, {status: 200}]}
    auth: {type: bearer, token: tok-secret-1}
configurations:
  - id: c
    tenant: acme
    provider: crm
    auth: {type: bearer, token: tok-secret-1}
timeline:
  - at: 0s
    create: {count: 2}
expect:
"""

PASSING = RETRIED + """\
  all_delivered: true
  counts: {DISPATCHED: 2, FAILED: 0}
  order: strict
  max_duplicates: 0
  attempts_per_delivery: {min: 1, max: 3}
  retry_delays: [1m, 2m]
  delivered_by: 3m
  failed: 0
  mapping_shape: {provider: crm, has: [id, reason.code], lacks: [externalId], array: false}
  no_secrets_in_logs: true
  received: {crm: 4}
"""

FAILING = RETRIED + """\
  counts: {DISPATCHED: 1}
  attempts_per_delivery: {exactly: 3}
  retry_delays: [1m, 1m]
  delivered_by: 2m
  failed: [1]
  mapping_shape: {provider: crm, has: [externalId], lacks: [id], array: true, equals: {id: x}}
  received: {crm: 3}
"""


def _checks(text):
    result = run_scenario(parse_scenario(text, source="x.yaml"))
    return result, {c.name: c for c in result.checks}


def test_every_expectation_kind_can_pass():
    result, checks = _checks(PASSING)
    assert result.ok, [c for c in result.checks if not c.ok]
    assert set(checks) == {
        "all_delivered", "counts.DISPATCHED", "counts.FAILED", "order", "max_duplicates", "attempts_per_delivery",
        "retry_delays", "delivered_by", "failed", "mapping_shape.crm.array", "mapping_shape.crm.has.id",
        "mapping_shape.crm.has.reason.code", "mapping_shape.crm.lacks.externalId", "no_secrets_in_logs",
        "received.crm"}
    assert checks["retry_delays"].observed == "1m00s, 2m00s"
    assert checks["delivered_by"].observed == "last at +3m00s"
    assert checks["received.crm"].line == 27


def test_expectations_fail_with_the_observed_value():
    result, checks = _checks(FAILING)
    assert not result.ok
    observed = {name: (c.ok, c.observed) for name, c in checks.items()}
    assert observed["counts.DISPATCHED"] == (False, "2")
    assert observed["attempts_per_delivery"] == (False, "1..3")
    assert observed["retry_delays"] == (False, "1m00s, 2m00s")
    assert observed["delivered_by"] == (False, "late or missing: [1, 2]")
    assert observed["failed"] == (False, "FAILED []")
    assert observed["mapping_shape.crm.has.externalId"] == (False, "missing in 4 of 4")  # every POST, refused ones too
    assert observed["mapping_shape.crm.lacks.id"] == (False, "present in 4 of 4")
    assert observed["mapping_shape.crm.array"] == (False, "first body is dict")
    assert checks["mapping_shape.crm.equals"].ok is False
    assert checks["mapping_shape.crm.equals"].observed.startswith("{'id': '")
    assert observed["received.crm"] == (False, "4 POSTs")
    assert checks["counts.DISPATCHED"].line == 17 and checks["received.crm"].line == 23


#: An unordered configuration that acknowledges delivery 3 before delivery 1, one whose endpoint is down
#: and gives up after one try, one refused at activation.
MIXED = """\
name: mixed
seed: 2
duration: 2h
providers:
  crm:
    behaviour:
      windows: [{from: 0s, to: 10s, status: 503}]
      else: {status: 200}
  down: {behaviour: {status: 503}}
  picky: {behaviour: {status: 200}, verify_get: 403}
tenants: [acme]
configurations:
  - {id: c1, tenant: acme, provider: crm, ordering: none}
  - {id: c2, tenant: acme, provider: down, retry: {max_attempts: 1}}
  - {id: c3, tenant: acme, provider: picky, activation: refused}
timeline:
  - at: 0s
    create: {count: 1}
  - at: 30s
    create: {count: 1}
expect:
"""


def test_failed_activation_and_order_expectations():
    result, checks = _checks(MIXED + "  failed: [2, 4]\n  activation_refused: [c3]\n  all_delivered: false\n")
    assert result.ok
    assert checks["activation_refused"].observed == "c3: HTTP 403 (expected 2xx)"
    assert checks["activation.c3"].ok and checks["activation.c3"].line == 15
    assert "all_delivered" not in checks

    result, checks = _checks(MIXED + "  failed: 1\n  activation_refused: []\n  all_delivered: true\n  order: strict\n")
    assert {c.name for c in result.checks if not c.ok} == {"failed", "activation_refused", "all_delivered"}
    assert checks["failed"].observed == "2 FAILED [2, 4]"
    assert checks["activation_refused"].observed == "c3: HTTP 403 (expected 2xx)"
    assert checks["all_delivered"].observed == "DISPATCHED 2, FAILED 2"
    # c1 has ordering: none, so it promises no order and the check leaves it out
    assert checks["order"].ok and checks["order"].observed == "in order"
    ordered = MIXED.replace("provider: crm, ordering: none", "provider: crm")
    result, checks = _checks(ordered + "  order: strict\n")
    assert checks["order"].ok  # the ordered queue held delivery 3 back until delivery 1 got through


def test_activation_declared_ok_but_refused_fails():
    result, checks = _checks(MIXED.replace(", activation: refused", ""))
    assert not checks["activation.c3"].ok
    assert checks["activation.c3"].expected == "activation ok"
    assert checks["activation.c3"].observed == "refused: HTTP 403 (expected 2xx)"


#: The engine dies at the very instant the endpoint answers 200: the answer is acknowledged but never
#: recorded, so the restarted engine sends the delivery again — an acknowledged duplicate.
CRASH_DUPLICATE = """\
name: crash-duplicate
seed: 1
duration: 1h
providers:
  crm: {behaviour: {status: 200, latency: 10s}}
configurations:
  - {id: c, tenant: acme, provider: crm, timeouts: {connect: 5, total: 30}}
timeline:
  - at: 0s
    create: {count: 1}
  - at: 10s
    crash: {restart_after: 2m}
expect:
"""


def test_max_duplicates_counts_acknowledged_duplicates():
    result, checks = _checks(CRASH_DUPLICATE + "  max_duplicates: 1\n  received: {crm: 2}\n")
    assert result.ok and checks["max_duplicates"].observed == "1 extra acknowledgements"
    result, checks = _checks(CRASH_DUPLICATE + "  max_duplicates: 0\n")
    assert not checks["max_duplicates"].ok
    assert checks["max_duplicates"].expected == "<= 0 deliveries acknowledged more than once (extra acknowledgements)"


def test_secrets_check_reads_the_provider_record():
    # A payload that carries the token itself: the check must find it in what the provider received.
    text = RETRIED.replace("create: {count: 2}", "create: {count: 1, activity: {commerceName: tok-secret-1}}")
    result, checks = _checks(text + "  no_secrets_in_logs: true\n")
    assert not checks["no_secrets_in_logs"].ok
    assert checks["no_secrets_in_logs"].observed == "found: ['tok…']"


def test_unfinished_run_is_a_failed_check():
    text = RETRIED.replace("duration: 2h", "duration: 30m").replace(
        "{sequence: [{times: 2, status: 503}, {status: 200}]}", "{status: 503}").replace(
        "    provider: crm\n    auth", "    provider: crm\n    retry: reteno\n    auth")
    result, checks = _checks(text + "  all_delivered: true\n")
    assert not checks["finished"].ok
    assert checks["finished"].observed.startswith("work left at +30m00s: {'READY': 1, 'RETRYING': 1")
    assert checks["all_delivered"].observed == "READY 1, RETRYING 1"


MESSAGES = """\
name: messages
providers:
  hooks: {behaviour: {status: 200}}
accounts:
  acme: {provider: hooks, batch_size: 5, max_wait: 30s}
timeline:
  - at: 0s
    message_events: {count: 12, status: UNDELIVERED}
expect:
  events_received: {hooks: 12}
  received: {hooks: 3}
"""


def test_message_events_are_batched_to_the_account_webhook():
    result = run_scenario(parse_scenario(MESSAGES, source="m.yaml"))
    assert result.ok, [c for c in result.checks if not c.ok]
    bodies = [x.json for x in result.recorder.records if x.method == "POST"]
    assert [len(b) for b in bodies] == [5, 5, 2]
    assert all(e["activityStatus"] == "UNDELIVERED" and e["hardBounce"] is False and e["statusDescription"]
               for b in bodies for e in b)


@pytest.mark.parametrize("text, message", [
    (MESSAGES.replace("provider: hooks,", "provider: nope,"),
     "m.yaml:5: accounts.acme.provider: unknown provider 'nope' (providers: hooks)"),
    (MESSAGES.replace("status: UNDELIVERED", "status: BOUNCED"),
     "m.yaml:8: timeline[0].message_events.status: expected one of DELIVERED, UNDELIVERED, READ, CLICKED, "
     "UNSUBSCRIBED, SPAM, SUBSCRIPTION_CHANGED or mixed, got 'BOUNCED'"),
    (MESSAGES.replace("batch_size: 5", "batch_size: 5000"),
     "m.yaml:5: accounts.acme.batch_size: an integer from 1 to 1000"),
])
def test_message_event_errors_name_file_line_and_key(text, message):
    with pytest.raises(ScenarioError) as e:
        parse_scenario(text, source="m.yaml")
    assert str(e.value) == message


def test_failed_expectation_can_name_the_reason():
    result, checks = _checks(MIXED + "  failed: {count: 2, reason: exhausted}\n")
    assert checks["failed"].ok and checks["failed.reason"].ok
    result, checks = _checks(MIXED + "  failed: {deliveries: [2, 4], reason: mapping_error}\n")
    assert checks["failed"].ok and not checks["failed.reason"].ok
    assert checks["failed.reason"].observed == "reasons: ['exhausted']"
    with pytest.raises(ScenarioError, match=r"expect.failed.reason: expected one of exhausted, permanent_status, "
                                            r"mapping_error, got 'gone'"):
        parse_scenario(MIXED + "  failed: {count: 1, reason: gone}\n", source="s.yaml")


def test_replay_action_sends_a_delivery_again_with_the_same_webhook_id():
    text = """\
name: replay
seed: 2
duration: 1h
providers:
  crm: {behaviour: {status: 200}}
configurations:
  - {id: c, tenant: acme, provider: crm}
timeline:
  - at: 0s
    create: {count: 1}
  - at: 10m
    replay: {delivery: 1}
expect:
  counts: {DISPATCHED: 1}
  received: {crm: 2}
  duplicates: {acknowledged: 1}
  attempts_per_delivery: {exactly: 1}
"""
    result = run_scenario(parse_scenario(text, source="r.yaml"))
    assert result.ok, [c for c in result.checks if not c.ok]
    assert (600.0, "replay of delivery 1: SUCCESS 200") in result.key_events
    ids = [x.headers.get("webhook-id") for x in result.recorder.records if x.method == "POST"]
    assert len(ids) == 2 and ids[0] == ids[1]
    with pytest.raises(ScenarioError, match=r"^r.yaml:12: timeline\[1\].replay.delivery: expected an integer >= 1"):
        parse_scenario(text.replace("delivery: 1}", "delivery: 0}"), source="r.yaml")


def test_a_force_retry_reason_that_is_not_text_is_refused_at_its_line():
    """It was refused only when the action ran, mid-run, naming an internal call."""
    text = (Path(__file__).resolve().parent.parent / "scenarios" / "force_retry_failed.yaml").read_text().replace(
        "    force_retry: crm-sales ", "    force_retry: {config: crm-sales, reason: 5} ")
    assert "reason: 5" in text
    with pytest.raises(ScenarioError) as refused:
        parse_scenario(text, source="fr.yaml")
    assert "fr.yaml:27" in str(refused.value) and "reason: expected text, got int" in str(refused.value)


def test_a_message_event_count_past_the_limit_is_refused_at_its_line():
    """The count of message events had no upper bound: each is a timeline step built while the file is
    read, so ``count: 10000000000`` ran the reader out of memory (a MemoryError traceback, or the kernel
    killing it) instead of a file:line error, as activity counts get."""
    text = MESSAGES.replace("count: 12", "count: 10000000000")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="m.yaml")
    assert str(info.value) == ("m.yaml:8: timeline[0].message_events.count: makes 10000000000 message events;"
                               " the limit is 200000")
