"""The API's models: one rule set with the engine, examples that are valid, errors that name every field.

The models validate requests and generate the OpenAPI document (``server/models.py``); these tests
hold them to the engine: the same fields as its declarations, and for any value the same verdict
(what the engine accepts the model accepts, and the model never accepts what the engine refuses,
since it calls the engine's parser last).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dispatchsim.engine import (AutoDisable, CircuitBreaker, ConfigError, OrderingPolicy, RetryPolicy, Timeouts,
                                auto_disable_from, check_signing_secret, circuit_breaker_from, ordering_policy_from, retry_policy_from,
                                timeouts_from)
from dispatchsim.engine.errors import ActivityError
from dispatchsim.engine.events import WEBHOOK_FIELDS, validate_event
from dispatchsim.engine.payload import build_stored_payload
from dispatchsim.mapping.activity import DERIVED, PAYLOAD_KEYS
from dispatchsim.server import models
from dispatchsim.server.api import ROUTES, openapi_document
from dispatchsim.server.problems import Problem

NESTED = [(models.RetryIn, RetryPolicy, retry_policy_from, {"preset"}),
          (models.OrderingIn, OrderingPolicy, ordering_policy_from, set()),
          (models.TimeoutsIn, Timeouts, timeouts_from, set()),
          (models.CircuitBreakerIn, CircuitBreaker, circuit_breaker_from, set()),
          (models.AutoDisableIn, AutoDisable, auto_disable_from, set())]


@pytest.mark.parametrize(("typed", "engine_cls", "_parse", "extra"), NESTED, ids=lambda v: getattr(v, "__name__", ""))
def test_nested_models_have_the_engines_fields(typed: Any, engine_cls: type, _parse: Any, extra: set[str]) -> None:
    assert set(typed.__annotations__) == {f.name for f in dataclasses.fields(engine_cls)} | extra


def test_body_models_have_the_engines_fields() -> None:
    assert set(models.WebhookIn.model_fields) == set(WEBHOOK_FIELDS)
    assert list(models.ActivityIn.model_fields) == [k for k in PAYLOAD_KEYS if k not in DERIVED or k == "id"]
    assert list(models.Activity.model_fields) == list(PAYLOAD_KEYS)


# values near every bound and of every JSON type, so both verdicts occur often
_NUMBERS = st.sampled_from([0, 1, 2, 0.5, -1, 59.9, 60, 3600, 2592000, 2592001, 10000, 10001, 31536000, 1e300,
                            100, 199, 200, 404, 503, 599, 600])
_LEAVES = st.one_of(st.none(), st.booleans(), _NUMBERS, st.integers(-5, 20000), st.floats(allow_nan=False,
                                                                                            allow_infinity=False),
                    st.sampled_from(["", " ", "reten", "svix", "ordered", "none", "partitioned", "skip", "block",
                                     "full", "equal", "commerceExternalId", "https://x.example", "ftp://x", "s3cr3t",
                                     "X-Key", "bad header", "api_key", "bearer", "basic"]))
_VALUES = st.one_of(_LEAVES, st.lists(_LEAVES, max_size=3))


def _objects(cls: type, extra: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    keys = sorted({f.name for f in dataclasses.fields(cls)} | extra | {"colour"})
    return st.dictionaries(st.sampled_from(keys), _VALUES, max_size=5)


def _verdict(fn: Any) -> bool:
    try:
        fn()
    except (ConfigError, ActivityError, Problem):
        return False
    return True


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.none(), st.integers(), st.sampled_from(["", "s", "whsec_", "whsec_!!", "whsec_MDEy", "whsec_MA=="])))
def test_signing_secret_model_and_engine_agree(secret: Any) -> None:
    engine_ok = _verdict(lambda: check_signing_secret(secret))
    assert _verdict(lambda: models.parse(models.ConfigEdit, {"signing_secret": secret}, "body")) == engine_ok, secret


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_nested_models_and_engine_agree(data: st.DataObject) -> None:
    """For a retry, ordering, timeouts, circuit-breaker or auto-disable value, the API's verdict (via the
    configuration body's model) is the engine's verdict."""
    typed, cls, parse, extra = data.draw(st.sampled_from(NESTED))
    name = {RetryPolicy: "retry", OrderingPolicy: "ordering", Timeouts: "timeouts", CircuitBreaker: "circuit_breaker",
            AutoDisable: "auto_disable"}[cls]
    value = data.draw(st.one_of(_objects(cls, extra), _LEAVES))
    body = {"endpoint_url": "https://x.example", name: value}
    engine_ok = _verdict(lambda: parse(value))
    model_ok = _verdict(lambda: models.parse(models.ConfigEdit, body, "body"))
    assert model_ok == engine_ok, (name, value)


_TEXTS = st.one_of(st.none(), st.sampled_from(["", " ", "SALESMAN", "TASK", "MESSAGE", "2026-04-10T14:30:00Z",
                                               "tomorrow", "9999-12-31T23:59:59-23:59", "x\x00"]), st.integers(),
                   st.booleans())
_ACTIVITY_KEYS = st.sampled_from([*(k for k in PAYLOAD_KEYS if k != "id"), "colour"])


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(_ACTIVITY_KEYS, st.one_of(_TEXTS, st.dictionaries(
    st.sampled_from(["code", "label", "commerce", "name", "type", "x"]),
    st.one_of(_TEXTS, st.dictionaries(st.sampled_from(["name", "externalId", "y"]), _TEXTS, max_size=2)),
    max_size=3)), max_size=6))
def test_activity_model_and_engine_agree(body: dict[str, Any]) -> None:
    """An activity body is refused by the model exactly when the engine refuses it."""
    engine_ok = _verdict(lambda: build_stored_payload(body, activity_id="x", created_at=0.0))
    model_ok = _verdict(lambda: models.parse(models.ActivityIn, body, "body"))
    assert model_ok == engine_ok, body


_EVENT_KEYS = st.sampled_from(["activityStatus", "contactId", "clickEventLink", "statusDescription", "hardBounce",
                               "workflowInstanceId", "statusData", "subscriptions", "colour"])
_EVENT_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.just("CLICKED"), st.just("UNDELIVERED"),
                          st.just("READ"), st.just("x"), st.lists(st.just("a"), max_size=2), st.just({}))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(_EVENT_KEYS, _EVENT_VALUES, max_size=5))
def test_message_event_model_and_engine_agree(event: dict[str, Any]) -> None:
    _, problems = validate_event(event, now=0.0)
    model_ok = _verdict(lambda: models.parse(models.MessageEventsIn, {"events": [event]}, "body"))
    assert model_ok == (not problems), (event, problems)


def test_every_field_at_fault_is_named_at_once() -> None:
    with pytest.raises(Problem) as caught:
        models.parse(models.ActivityIn, {"channel": 7, "reason": "CHURN", "colour": "red",
                                         "activityDetails": {"assignedRoute": {"code": 1}}}, "body")
    problem = caught.value
    assert problem.status == 400 and problem.extra["field"] == "channel"
    assert [e["field"] for e in problem.extra["errors"]] == ["channel", "reason", "activityDetails.assignedRoute.code",
                                                             "colour"]
    assert "channel: must be a string, got integer" in problem.detail
    with pytest.raises(Problem) as caught:
        models.parse(models.ConfigIn, {"provider_id": "crm", "channel": "S", "endpoint_url": "https://x.example",
                                       "retry": {"base": 10, "cap": 5}, "auth": {"type": "basic", "username": "a:b",
                                                                                 "password": "p"}}, "body")
    fields = [e["field"] for e in caught.value.extra["errors"]]
    assert fields == ["auth", "retry"], caught.value.detail  # the engine's own rules, located
    assert "cap must be a number of seconds >= base" in caught.value.detail


def test_examples_in_the_document_are_valid() -> None:
    """Every request example the document shows passes its model (and so the engine's parsers)."""
    for op in ROUTES:
        if op.body is None:
            continue
        for example in op.body.model_json_schema().get("examples", []):
            models.parse(op.body, json.loads(json.dumps(example)), "body")
    doc = openapi_document()
    assert doc["components"]["schemas"]["ActivityIn"]["examples"]


def test_query_counts_are_plain_digits() -> None:
    from multidict import MultiDict

    for bad in ("+5", " 5", "5_0", "1e2", "0", "501", "٥"):
        with pytest.raises(Problem) as caught:
            models.parse_query(models.ActivitiesQuery, MultiDict({"limit": bad}))
        assert caught.value.extra["field"] == "limit"
    with pytest.raises(Problem) as caught:
        models.parse_query(models.ActivitiesQuery, MultiDict([("limit", "5"), ("limit", "6")]))
    assert "given more than once" in caught.value.detail
    with pytest.raises(Problem) as caught:  # a whole number below the range: said so, not "not a whole number"
        models.parse_query(models.ActivitiesQuery, MultiDict({"limit": "-1"}))
    assert caught.value.extra["field"] == "limit" and "whole number" not in caught.value.detail
    assert ">= 1" in caught.value.detail, caught.value.detail
    assert models.parse_query(models.ActivitiesQuery, MultiDict({"limit": "500"})).limit == 500
