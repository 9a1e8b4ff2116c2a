"""Property: every activity body and message event a library caller can pass is either refused with a
``ValueError`` naming the field (and nothing is stored) or stored as strict, valid JSON in the seed's shape.

Inputs are the seed-shaped examples mutated by Hypothesis (wrong types, unknown keys at every level,
lone surrogates, NaN/inf, huge numbers, deep nesting). The regression tests below the properties are
the failures the properties found, kept as plain examples.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatchsim.engine import ActivityError, ConfigError, Engine
from dispatchsim.engine.clock import new_virtual_loop
from dispatchsim.mapping.activity import NESTED_SHAPES, TEXT, example_activity

EXAMPLES = int(os.environ.get("DISPATCHSIM_PROPERTY_EXAMPLES", "150"))
#: Inputs tried per surface in this run (printed at the end of the module, recorded in docs/fuzzing.md).
TRIED: Counter[str] = Counter()

#: Values a hostile or careless caller sends: every JSON type, the ones JSON cannot carry, invalid text.
odd_text = st.sampled_from(["", " ", "\ud800", "a\udfffb", "\x00", "é", "𝄞", "x" * 10_000, "2026-13-45"])
odd_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from([10 ** 40, -(2 ** 63), 2 ** 64]),
                       st.floats(allow_nan=True, allow_infinity=True), odd_text, st.text(max_size=8))
odd_value = st.recursive(odd_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                         max_leaves=8)


def _paths(shape: dict[str, Any], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out = []
    for key, kind in shape.items():
        out.append(prefix + (key,))
        if kind != TEXT:
            out.extend(_paths(kind, prefix + (key,)))
    return out


#: Every dotted place in an activity a mutation may hit (top-level keys and every nested key).
ACTIVITY_PATHS = [(k,) for k in ("channel", "type", "status", "scheduledAt", "occurredAt", "reason",
                                 "commerceName", "id", "colour")] + [p for k, shape in NESTED_SHAPES.items()
                                                                    for p in _paths(shape, (k,))]


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
        doc = doc[key]
    doc[path[-1]] = value


@st.composite
def activity_bodies(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(odd_value)  # not even an object
    body = example_activity(random.Random(draw(st.integers(0, 2 ** 16))))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(ACTIVITY_PATHS))
        if draw(st.booleans()):
            path = path[:-1] + (draw(st.sampled_from([path[-1], "extra", "\ud800", "Name"])),)
        _set(body, path, draw(odd_value))
    return body


def _strict_json(value: Any) -> None:
    """Raises unless ``value`` is JSON a receiver can parse: finite numbers, valid UTF-8 text."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


def _fits_shape(value: Any, shape: dict[str, Any]) -> bool:
    return isinstance(value, dict) and all(
        k in shape and (v is None or (isinstance(v, str) if shape[k] == TEXT else _fits_shape(v, shape[k])))
        for k, v in value.items())


class _World:
    """One real engine on a temp SQLite file and a virtual-time loop, shared by a property's examples."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.loop = new_virtual_loop()
        self.engine = self.run(Engine.open(os.path.join(self.dir.name, "fuzz.db"), virtual=True, seed=3))
        self.run(self.engine.add_tenant("acme"))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def activities(self) -> int:
        return len(self.run(self.engine.list_activities(tenant_id="acme", limit=100_000)).items)

    def close(self) -> None:
        self.run(self.engine.close())
        self.loop.close()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def world():
    w = _World()
    yield w
    w.close()
    print(f"\ninputs tried per surface: {dict(TRIED)}")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
@given(body=activity_bodies())
def test_an_activity_body_is_refused_naming_its_field_or_stored_as_valid_seed_shaped_json(world, body):
    TRIED["Engine.create_activity"] += 1
    before = world.activities()
    try:
        stored = world.run(world.engine.create_activity("acme", body))
    except ActivityError as exc:
        assert isinstance(exc, ValueError)
        assert str(exc).startswith(("invalid activity: ", "activity must be a JSON object"))
        assert exc.fields or "unknown field(s):" in str(exc) or "set by the engine" in str(exc) \
            or not isinstance(body, dict)
        str(exc).encode("utf-8")  # the message itself is printable text
        assert world.activities() == before  # nothing half-stored
        return
    assert world.activities() == before + 1
    _strict_json(stored)
    for key, shape in NESTED_SHAPES.items():
        assert stored[key] is None or _fits_shape(stored[key], shape)
        assert stored[key] == body.get(key)


event_keys = st.sampled_from(["activityStatus", "contactId", "email", "statusData", "subscriptions",
                              "workflowInstanceId", "hardBounce", "messageName", "colour", "\ud800"])


@st.composite
def event_lists(draw: st.DrawFn) -> Any:
    events = []
    for _ in range(draw(st.integers(1, 3))):
        event: dict[str, Any] = {"activityStatus": draw(st.sampled_from(["DELIVERED", "READ", "UNDELIVERED", "x"])),
                                 "contactId": 7, "email": "a@example.com"}
        for _ in range(draw(st.integers(0, 3))):
            event[draw(event_keys)] = draw(odd_value)
        events.append(event)
    return events


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
@given(events=event_lists())
def test_message_events_are_refused_naming_the_field_or_queued_as_valid_json(world, events):
    TRIED["engine.events.post"] += 1
    ev = world.engine.events
    if world.run(world.engine.store.config("acme@events")) is None:
        world.run(ev.configure_webhook("acme", {"url": "http://127.0.0.1:9/hooks"}, verify=False))
    before = world.run(ev.counts("acme"))
    try:
        world.run(ev.post("acme", events))
    except ConfigError as exc:
        assert isinstance(exc, ValueError) and "events[" in str(exc)
        str(exc).encode("utf-8")
        assert world.run(ev.counts("acme")) == before
        return
    assert (world.run(ev.counts("acme")))["unbatched_events"] == before["unbatched_events"] + len(events)
    _strict_json(events)


policy_keys = {
    "retry": ["preset", "base", "factor", "cap", "schedule", "repeat_last", "max_attempts", "max_age", "jitter",
              "retry_after_cap", "permanent_statuses", "colour"],
    "ordering": ["mode", "partition_key", "on_exhausted", "colour"],
    "timeouts": ["connect", "total", "read", "colour"],
}


@st.composite
def policies(draw: st.DrawFn) -> tuple[str, Any]:
    field = draw(st.sampled_from(sorted(policy_keys)))
    if draw(st.integers(0, 9)) == 0:
        return field, draw(odd_value)
    keys = draw(st.lists(st.sampled_from(policy_keys[field]), max_size=3, unique=True))
    value = st.one_of(odd_value, st.sampled_from(["reteno", "reten", "svix", "ordered", "partitioned", "skip",
                                                  "block", "commerceExternalId", "10s", "5m", [1, 2, 4], 3, 0.5]))
    return field, {k: draw(value) for k in keys}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
@given(policy=policies())
def test_a_policy_is_refused_naming_its_field_or_stored_and_read_back_equal(world, policy):
    TRIED["Engine.add_config policies"] += 1
    field, value = policy
    if world.run(world.engine.store.provider("crm")) is None:
        world.run(world.engine.add_provider("crm"))
    before = len(world.run(world.engine.store.configs()))
    try:
        view = world.run(world.engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:9/h",
                                                 **{field: value}))
    except ConfigError as exc:
        assert isinstance(exc, ValueError) and exc.field and exc.field.split(".")[0] == field, str(exc)
        str(exc).encode("utf-8")
        assert len(world.run(world.engine.store.configs())) == before
        return
    assert len(world.run(world.engine.store.configs())) == before + 1
    _strict_json(view)
    again = world.run(world.engine.edit_config(view["id"], **{field: view[field]}))  # what it reads back is valid
    assert again[field] == view[field]


# -- regressions found by the properties above (and by issue 14) --------------------------------------

@pytest.mark.parametrize("path,value,field", [
    (("activityDetails", "assignedOperator", "name"), 5, "activityDetails.assignedOperator.name"),
    (("activityDetails", "assignedOperator", "nickname"), "C", "activityDetails.assignedOperator"),
    (("activityDetails", "assignedRoute"), "RUTA", "activityDetails.assignedRoute"),
    (("reason", "label"), "\ud800", "reason.label"),
    (("commerceName",), "bad \udfff", "commerceName"),
    (("channel",), "SALES\ud800", "channel"),
    (("commerceAssignment", "commerce", "externalId"), ["COM-1"], "commerceAssignment.commerce.externalId"),
])
async def test_create_activity_refuses_a_wrong_nested_field_by_name_and_stores_nothing(engine, path, value, field):
    await engine.add_tenant("acme")
    body = example_activity(random.Random(1))
    _set(body, path, value)
    with pytest.raises(ActivityError) as e:
        await engine.create_activity("acme", body)
    assert isinstance(e.value, ValueError) and e.value.field == field and field in str(e.value)
    str(e.value).encode("utf-8")
    assert (await engine.list_activities(tenant_id="acme")).items == []


async def test_nested_fields_may_be_null_or_left_out(engine):
    await engine.add_tenant("acme")
    body = example_activity(random.Random(1))
    body["activityDetails"]["assignedOperator"] = {"name": None}
    del body["activityDetails"]["assignedRoute"]
    stored = await engine.create_activity("acme", body)
    assert stored["activityDetails"] == body["activityDetails"]


async def test_keys_that_are_not_text_are_refused_not_a_type_error(engine):
    await engine.add_tenant("acme")
    with pytest.raises(ActivityError, match="unknown field"):
        await engine.create_activity("acme", {"channel": "X", 1: "one", "\ud800": 2})


async def test_a_message_event_with_invalid_unicode_or_nan_is_refused_by_field(engine):
    await engine.add_tenant("acme")
    await engine.events.configure_webhook("acme", {"url": "http://127.0.0.1:9/hooks"}, verify=False)
    for event, field in (({"activityStatus": "READ", "email": "\ud800@x"}, "events[0].email"),
                         ({"activityStatus": "READ", "statusData": {"k": float("nan")}}, "events[0].statusData.k"),
                         ({"activityStatus": "READ", "statusData": {"\udc00": 1}}, "events[0].statusData")):
        with pytest.raises(ConfigError) as e:
            await engine.events.post("acme", [event])
        assert field in str(e.value)
    assert (await engine.events.counts("acme"))["unbatched_events"] == 0


async def test_a_preset_that_is_not_a_name_is_a_config_error_not_a_type_error(engine):
    """``retry: {preset: []}`` raised TypeError (unhashable) while looking the preset up."""
    await engine.add_tenant("acme")
    await engine.add_provider("crm")
    for preset in ([], {"a": 1}, 5):
        with pytest.raises(ConfigError, match="unknown preset") as e:
            await engine.add_config("acme", "crm", "SALESMAN", endpoint_url="http://127.0.0.1:9/h",
                                    retry={"preset": preset})
        assert e.value.field == "retry"
    assert await engine.store.configs() == []
