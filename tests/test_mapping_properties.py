"""Properties of compiled mappings over generated payloads."""
from __future__ import annotations

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatchsim.mapping import SEED_PAYLOAD, FUNCTIONS, MappingApplyError, compile_mapping

json_scalars = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False,
                                                                                  allow_infinity=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

#: Seed-shaped payloads: every seed field kept, replaced by any JSON value, or removed, plus extra fields.
seed_keys = list(SEED_PAYLOAD)


@st.composite
def payloads(draw):
    payload = copy.deepcopy(SEED_PAYLOAD)
    for key in draw(st.lists(st.sampled_from(seed_keys), unique=True, max_size=6)):
        if draw(st.booleans()):
            payload[key] = draw(json_values)
        else:
            del payload[key]
    operator = payload.get("activityDetails", {})
    if isinstance(operator, dict) and isinstance(operator.get("assignedOperator"), dict) and draw(st.booleans()):
        operator["assignedOperator"]["externalId"] = draw(json_values)
    payload.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    return payload


IDENTITY = compile_mapping({"include_rest": True})

REALISTIC = compile_mapping({
    "fields": {
        "externalId": "id",
        "kind": {"from": "type", "fn": "lower", "default": "task"},
        "channel": {"from": "channel", "map": {"SALESMAN": "sales"}, "map_default": "other"},
        "task": {
            "title": {"from": "commerceName", "fn": {"format": "{reason.label || 'n/a'}: {value}"}},
            "dueAt": {"from": "scheduledAt", "fn": "epoch_seconds"},
            "dueDate": {"from": "scheduledAt", "fn": [{"to_timezone": "Europe/Madrid"}, "date_only"]},
            "flag": {"from": "canForceRetryDispatch", "fn": "to_bool"},
        },
        "customer.id": {"from": "commerceExternalId", "required": True},
        "assignee": {"from": "activityDetails.assignedOperator.externalId", "fn": "to_string"},
        "reason": {"from": "[reason.code, reason.label]", "fn": {"join": " / "}},
        "route": "activityDetails.assignedRoute",
        "count": {"from": "length(commerceName)", "fn": "to_number"},
    },
    "include_rest": True,
    "drop": ["activityResult", "route.name", "commerceAssignment.commerce"],
    "wrap": "array",
    "root": "items",
})


@given(payloads())
def test_identity_with_include_rest_returns_the_payload_unchanged(payload):
    before = copy.deepcopy(payload)
    assert IDENTITY.apply(payload) == payload
    assert payload == before


@settings(max_examples=300)
@given(payloads())
def test_output_is_always_json_serialisable_and_payload_untouched(payload):
    before = copy.deepcopy(payload)
    try:
        out = REALISTIC.apply(payload)
    except MappingApplyError as exc:
        assert exc.field in {"kind", "task.title", "task.dueAt", "task.dueDate", "task.flag", "customer.id",
                             "assignee", "reason", "count"}
        assert str(exc).startswith(f"{exc.field}: ")
    else:
        assert json.loads(json.dumps(out, allow_nan=False)) == out
        assert list(out) == ["items"] and len(out["items"]) == 1
        assert "activityResult" not in out["items"][0]
    assert payload == before


@given(st.sampled_from(sorted(FUNCTIONS)), json_values)
def test_every_function_gives_json_or_an_apply_error(name, value):
    arguments = {"join": ", ", "format": "<{value}>", "to_timezone": "Asia/Tokyo", "date_format": "%Y"}
    step = {name: arguments[name]} if name in arguments else name
    compiled = compile_mapping({"fields": {"v": {"from": "v", "fn": step}}})
    try:
        out = compiled.apply({"v": value})
    except MappingApplyError as exc:
        assert exc.field == "v" and str(exc).endswith("(source: v)")
    else:
        json.dumps(out, allow_nan=False)


simple_fields = st.dictionaries(
    st.from_regex(r"[a-z]{1,5}(\.[a-z]{1,5}){0,2}", fullmatch=True),
    st.sampled_from(seed_keys) | st.builds(lambda v: {"const": v}, json_values), min_size=1, max_size=6)


@given(simple_fields, st.booleans(), st.sampled_from([None, "array"]))
def test_normalised_spec_recompiles_to_the_same_version(fields, include_rest, wrap):
    spec = {"fields": fields, "include_rest": include_rest, "wrap": wrap}
    try:
        compiled = compile_mapping(spec)
    except Exception as exc:  # conflicting dotted targets are legitimately refused
        assert "conflicts with" in str(exc) or "mapped twice" in str(exc)
        return
    again = compile_mapping(json.loads(json.dumps(compiled.spec)))
    assert again.spec == compiled.spec and again.digest == compiled.digest
    assert again.apply(SEED_PAYLOAD) == compiled.apply(SEED_PAYLOAD)
