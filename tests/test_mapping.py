"""Payload mapping: format, functions, normalisation, every spec problem and apply error."""
from __future__ import annotations

import copy
import json

import pytest

import dispatchsim.mapping as mapping
from dispatchsim.mapping import (
    SEED_PAYLOAD, MappingApplyError, MappingError, MappingSpecError, Problem, compile_mapping, seed_payload,
)


def apply(spec, payload=None):
    return compile_mapping(spec).apply(SEED_PAYLOAD if payload is None else payload)


def field(fspec, payload=None):
    """Map one field ``v`` and return its value."""
    return apply({"fields": {"v": fspec}}, payload)["v"]


def problems(spec, **kw) -> list[str]:
    with pytest.raises(MappingSpecError) as info:
        compile_mapping(spec, **kw)
    return [str(p) for p in info.value.problems]


def one_problem(spec) -> str:
    found = problems(spec)
    assert len(found) == 1, found
    return found[0]


def apply_error(spec, payload=None) -> MappingApplyError:
    with pytest.raises(MappingApplyError) as info:
        apply(spec, payload)
    return info.value


# -- the seed payload ---------------------------------------------------------------------------


def test_seed_payload_is_the_seed_docs_json_field_for_field():
    assert list(SEED_PAYLOAD) == [
        "id", "activityOrigin", "type", "status", "channel", "scheduledAt", "occurredAt", "createdAt",
        "lifecycleStatus", "lifecycleStatusLabel", "lifecycleStatusDetail", "canForceRetryDispatch",
        "commerceExternalId", "commerceName", "reason", "userStatus", "commerceAssignment",
        "activityDetails", "activityResult"]
    assert SEED_PAYLOAD["id"] == "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    assert SEED_PAYLOAD["scheduledAt"] == "2026-04-15T09:00:00.000Z"
    assert SEED_PAYLOAD["commerceAssignment"]["assignmentReason"] == "Asignación por ruta"
    assert SEED_PAYLOAD["activityDetails"]["assignedOperator"] == {
        "externalId": "OP-042", "name": "Carlos Pérez", "type": "SALESMAN"}
    assert SEED_PAYLOAD["reason"] == {"code": "CHURN_RISK", "label": "Riesgo de fuga"}
    assert SEED_PAYLOAD["canForceRetryDispatch"] is False and SEED_PAYLOAD["activityResult"] is None


def test_seed_payload_copy_is_private():
    copy_ = seed_payload()
    copy_["activityDetails"]["assignedOperator"]["name"] = "x"
    assert SEED_PAYLOAD["activityDetails"]["assignedOperator"]["name"] == "Carlos Pérez"


# -- targets and sources ------------------------------------------------------------------------


def test_shorthand_nested_and_dotted_targets():
    out = apply({"fields": {
        "task": {"ref": "activityDetails.assignedOperator.externalId", "meta": {"route": "activityDetails.assignedRoute.code"}},
        "task.commerce": "commerceExternalId",
        "a.b.c.d": "channel",
    }})
    assert out == {
        "task": {"ref": "OP-042", "meta": {"route": "RUTA-NORTE-01"}, "commerce": "COM-001"},
        "a": {"b": {"c": {"d": "SALESMAN"}}},
    }
    assert list(out) == ["task", "a"] and list(out["task"]) == ["ref", "meta", "commerce"]


def test_from_object_and_jmespath_expressions():
    assert field({"from": "reason.code"}) == "CHURN_RISK"
    assert field("[commerceExternalId, activityDetails.assignedRouteCode]") == ["COM-001", "RUTA-NORTE-01"]
    assert field("{c: commerceExternalId}") == {"c": "COM-001"}
    assert field("length(commerceName)") == 16
    assert field("occurredAt || createdAt") == "2026-04-10T14:30:00.000Z"
    assert field("@") == SEED_PAYLOAD


def test_plain_paths_follow_jmespath_semantics():
    payload = {"a": [{"b": 1}, {"b": 2}], "s": "text", "n": None}
    assert field("a[0].b", payload) == 1
    assert field("a[-1].b", payload) == 2
    assert field("a[5].b", payload) is None
    assert field("s.x", payload) is None
    assert field("s[0]", payload) is None
    assert field("n.x.y.z", payload) is None
    assert field('"quoted key"', {"quoted key": 3}) == 3
    assert field("a.b", payload) is None  # a field of an array is null, as in jmespath
    import jmespath
    for expr in ("a[0].b", "a[-1].b", "a[5].b", "s.x", "s[0]", "n.x.y.z", "a.b", "a[*].b", "@", "[s, a[0].b]",
                 "{x: s, y: a[1].b, z: n.q}", "n.[x, y]", "s.{x: y}", "[s, a[*].b]"):
        assert field(expr, payload) == jmespath.search(expr, payload), expr
        assert field(expr, "text") == jmespath.search(expr, "text"), expr
        assert compile_mapping({"fields": {"v": expr}}).apply(None)["v"] == jmespath.search(expr, None), expr


def test_const_any_json_value():
    assert field({"const": "reten"}) == "reten"
    assert field({"const": {"nested": [1, True, None]}}) == {"nested": [1, True, None]}
    assert field({"const": None}) is None


def test_missing_source_is_null_in_output():
    assert apply({"fields": {"x": "nope.nothing"}}) == {"x": None}


# -- default, required, map ---------------------------------------------------------------------


def test_default_applies_to_missing_and_null():
    assert field({"from": "occurredAt", "default": "never"}) == "never"
    assert field({"from": "missing.path", "default": 0}) == 0
    assert field({"from": "commerceName", "default": "x"}) == "Farmacia Central"
    assert field({"from": "canForceRetryDispatch", "default": True}) is False  # false is a value, not missing


def test_default_is_not_run_through_the_pipeline():
    assert field({"from": "occurredAt", "fn": "epoch_ms", "default": 0}) == 0


def test_required_missing_fails_with_field_and_source():
    payload = seed_payload()
    del payload["activityDetails"]["assignedOperator"]["externalId"]
    err = apply_error({"fields": {"task.ref": {"from": "activityDetails.assignedOperator.externalId",
                                               "required": True}}}, payload)
    assert err.field == "task.ref"
    assert str(err) == "task.ref: required value missing (source: activityDetails.assignedOperator.externalId)"
    assert isinstance(err, MappingError)


def test_required_null_fails_and_present_passes():
    spec = {"fields": {"when": {"from": "occurredAt", "required": True}}}
    assert str(apply_error(spec)) == "when: required value missing (source: occurredAt)"
    payload = dict(SEED_PAYLOAD, occurredAt="2026-01-01T00:00:00Z")
    assert apply(spec, payload) == {"when": "2026-01-01T00:00:00Z"}


def test_value_map_and_map_default():
    assert field({"from": "channel", "map": {"SALESMAN": "sales"}}) == "sales"
    assert field({"from": "status", "map": {"SALESMAN": "sales"}}) == "PENDING"  # unmapped passes through
    assert field({"from": "status", "map": {"X": "y"}, "map_default": "other"}) == "other"
    assert field({"from": "status", "map": {"X": "y"}, "map_default": None, "default": "d"}) == "d"


def test_value_map_matches_numbers_and_booleans_by_json_text():
    payload = {"n": 1, "b": True, "f": 1.5}
    assert field({"from": "n", "map": {"1": "one"}}, payload) == "one"
    assert field({"from": "n", "map": {1: "one"}}, payload) == "one"  # YAML int keys
    assert field({"from": "b", "map": {True: "yes"}}, payload) == "yes"
    assert field({"from": "b", "map": {"true": "yes"}}, payload) == "yes"
    assert field({"from": "f", "map": {"1.5": "x"}}, payload) == "x"
    spec = compile_mapping({"fields": {"v": {"from": "n", "map": {2: "two", True: "t", 0.5: "h"}}}}).spec
    assert spec["fields"]["v"]["map"] == {"2": "two", "true": "t", "0.5": "h"}


def test_value_map_skips_null_and_objects():
    assert field({"from": "occurredAt", "map": {"x": "y"}, "map_default": "z"}) is None
    assert field({"from": "reason", "map": {"x": "y"}, "map_default": "z"}) == "z"


def test_map_then_fn_order():
    assert field({"from": "channel", "map": {"SALESMAN": "sales"}, "fn": "upper"}) == "SALES"


# -- functions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fn, value, expected", [
    ("upper", "Farmacia", "FARMACIA"),
    ("lower", "Farmacia", "farmacia"),
    ("trim", "  x y ", "x y"),
    ("to_string", 42, "42"),
    ("to_string", 1.5, "1.5"),
    ("to_string", True, "true"),
    ("to_string", {"a": [1, "é"]}, '{"a":[1,"é"]}'),
    ("to_string", "s", "s"),
    ("to_number", "42", 42),
    ("to_number", " -7 ", -7),
    ("to_number", "3.25", 3.25),
    ("to_number", "1e3", 1000.0),
    ("to_number", 5, 5),
    ("to_bool", "yes", True),
    ("to_bool", "Off", False),
    ("to_bool", "1", True),
    ("to_bool", "", False),
    ("to_bool", 0, False),
    ("to_bool", 2, True),
    ("to_bool", False, False),
    ("concat", ["a", None, "b", 3], "ab3"),
    ("concat", [[1], [2, 3], None], [1, 2, 3]),
    ("concat", [], ""),
    ("epoch_seconds", "2026-04-15T09:00:00.000Z", 1776243600),
    ("epoch_seconds", "2026-04-15T09:00:00.999Z", 1776243600),
    ("epoch_ms", "2026-04-15T09:00:00.123Z", 1776243600123),
    ("epoch_ms", "2026-04-15T11:00:00+02:00", 1776243600000),
    ("epoch_seconds", "2026-04-15T09:00:00", 1776243600),  # naive = UTC
    ("date_only", "2026-04-15T23:30:00Z", "2026-04-15"),
    ("date_only", "2026-04-15T23:30:00-05:00", "2026-04-15"),
])
def test_function(fn, value, expected):
    got = field({"from": "v", "fn": fn}, {"v": value})
    assert got == expected and type(got) is type(expected)


def test_function_steps_with_arguments():
    v = {"v": "2026-04-15T23:30:00.000Z"}
    assert field({"from": "v", "fn": {"to_timezone": "Europe/Madrid"}}, v) == "2026-04-16T01:30:00+02:00"
    assert field({"from": "v", "fn": {"to_timezone": "UTC"}}, {"v": "2026-04-15T23:30:00.250+02:00"}) \
        == "2026-04-15T21:30:00.250+00:00"
    assert field({"from": "v", "fn": [{"to_timezone": "Europe/Madrid"}, "date_only"]}, v) == "2026-04-16"
    assert field({"from": "v", "fn": {"date_format": "%d/%m/%Y %H:%M"}}, v) == "15/04/2026 23:30"
    assert field({"from": "v", "fn": {"join": ", "}}, {"v": ["a", 1, None, True]}) == "a, 1, true"


def test_format_template_reads_value_and_payload():
    assert field({"from": "commerceName", "fn": {"format": "{value} ({commerceExternalId})"}}) \
        == "Farmacia Central (COM-001)"
    assert field({"from": "@", "fn": {"format": "{reason.label} / {activityDetails.assignedOperator.name}"}}) \
        == "Riesgo de fuga / Carlos Pérez"
    assert field({"from": "v", "fn": {"format": "{value:>6.2f}|{value!s}"}}, {"v": 3.14159}) == "  3.14|3.14159"
    assert field({"from": "v", "fn": {"format": "{value}-{w}"}}, {"v": True, "w": [1]}) == "true-[1]"
    assert field({"from": "v", "fn": {"format": "{{literal}} {value}"}}, {"v": "x"}) == "{literal} x"
    assert field({"from": "v", "fn": {"format": "{u || 'none'}"}}, {"v": "x"}) == "none"


def test_pipeline_runs_in_order_and_null_short_circuits():
    assert field({"from": "commerceName", "fn": ["upper", {"format": "<{value}>"}, "lower"]}) == "<farmacia central>"
    assert field({"from": "channel", "map": {"SALESMAN": None}, "map_default": "x", "fn": "upper"}) is None
    assert field({"from": "occurredAt", "fn": ["upper"], "default": "none"}) == "none"


@pytest.mark.parametrize("fn, value, message", [
    ("upper", 5, "upper: expected a string, got a number"),
    ("lower", ["x"], "lower: expected a string, got an array"),
    ("trim", {}, "trim: expected a string, got an object"),
    ("concat", "abc", "concat: expected an array, got a string"),
    ("concat", [{"a": 1}], "concat: array items must be strings, numbers or booleans, got an object"),
    ("to_number", "abc", "to_number: 'abc' is not a number"),
    ("to_number", "nan", "to_number: 'nan' is not a finite number"),
    ("to_number", True, "to_number: expected a number or a numeric string, got a boolean"),
    ("to_number", [1], "to_number: expected a number or a numeric string, got an array"),
    ("to_bool", "maybe", "to_bool: 'maybe' is not a boolean (use true/false, yes/no, on/off, 1/0)"),
    ("to_bool", [], "to_bool: expected a boolean, number or string, got an array"),
    ("epoch_ms", "soon", "epoch_ms: cannot parse 'soon' as an ISO-8601 date-time"),
    ("epoch_seconds", 17, "epoch_seconds: expected an ISO-8601 date-time string, got a number"),
    ("date_only", "2026-13-01", "date_only: cannot parse '2026-13-01' as an ISO-8601 date-time"),
])
def test_function_failure_messages(fn, value, message):
    err = apply_error({"fields": {"out.v": {"from": "v", "fn": fn}}}, {"v": value})
    assert err.field == "out.v"
    assert str(err) == f"out.v: {message} (source: v)"


def test_step_failures_with_arguments():
    err = apply_error({"fields": {"v": {"from": "v", "fn": {"join": "-"}}}}, {"v": "x"})
    assert str(err) == "v: join: expected an array, got a string (source: v)"
    err = apply_error({"fields": {"v": {"from": "v", "fn": {"format": "{value} {missing}"}}}}, {"v": "x"})
    assert str(err) == "v: format: '{missing}' is null or missing (source: v)"
    err = apply_error({"fields": {"v": {"from": "v", "fn": {"format": "{value:d}"}}}}, {"v": 1.5})
    assert str(err) == "v: format: cannot format a number with ':d' (field 'value') (source: v)"
    err = apply_error({"fields": {"v": {"const": "x", "fn": "epoch_ms"}}})
    assert str(err) == "v: epoch_ms: cannot parse 'x' as an ISO-8601 date-time (source: const)"


def test_jmespath_runtime_error_is_an_apply_error():
    err = apply_error({"fields": {"n": "abs(commerceName)"}})
    assert err.field == "n"
    assert str(err).startswith("n: JMESPath error: ") and str(err).endswith("(source: abs(commerceName))")
    assert "abs()" in str(err)


# -- output shape: include_rest, drop, wrap, root ------------------------------------------------


def test_identity_with_include_rest_only():
    out = apply({"include_rest": True})
    assert out == SEED_PAYLOAD and out is not SEED_PAYLOAD


def test_strict_output_has_only_mapped_fields():
    assert apply({"fields": {"id": "id"}}) == {"id": SEED_PAYLOAD["id"]}


def test_include_rest_overrides_and_appends_in_payload_order():
    out = apply({"include_rest": True, "fields": {"channel": {"const": "sales"}, "extra": {"const": 1}}})
    assert out["channel"] == "sales" and out["extra"] == 1
    assert list(out) == list(SEED_PAYLOAD) + ["extra"]


def test_include_rest_nested_targets_merge_without_touching_the_payload():
    before = copy.deepcopy(SEED_PAYLOAD)
    out = apply({"include_rest": True, "fields": {
        "activityDetails.assignedOperator.name": {"from": "activityDetails.assignedOperator.name", "fn": "upper"},
        "activityDetails.assignedOperator.email": {"const": "c@example.com"},
        "reason.code": {"from": "reason.code", "fn": "lower"},
        "occurredAt.when": {"const": 1},  # null in the payload: replaced by an object
    }})
    assert out["activityDetails"]["assignedOperator"] == {
        "externalId": "OP-042", "name": "CARLOS PÉREZ", "type": "SALESMAN", "email": "c@example.com"}
    assert out["activityDetails"]["assignedRoute"] == SEED_PAYLOAD["activityDetails"]["assignedRoute"]
    assert out["reason"] == {"code": "churn_risk", "label": "Riesgo de fuga"}
    assert out["occurredAt"] == {"when": 1}
    assert SEED_PAYLOAD == before


def test_drop_removes_fields_without_touching_the_payload():
    before = copy.deepcopy(SEED_PAYLOAD)
    out = apply({"include_rest": True, "drop": ["activityResult", "commerceAssignment.commerce.name",
                                                "absent.path", "id.not_an_object"]})
    assert "activityResult" not in out
    assert out["commerceAssignment"]["commerce"] == {"externalId": "COM-001"}
    assert out["commerceAssignment"]["assignmentReason"] == "Asignación por ruta"
    assert SEED_PAYLOAD == before


def test_drop_inside_a_mapped_object_in_strict_mode():
    before = copy.deepcopy(SEED_PAYLOAD)
    out = apply({"fields": {"route": "activityDetails.assignedRoute"}, "drop": ["route.name"]})
    assert out == {"route": {"code": "RUTA-NORTE-01"}}
    assert SEED_PAYLOAD == before


def test_drop_a_string_is_one_path_and_renames_work_with_include_rest():
    out = apply({"include_rest": True, "fields": {"activityId": "id"}, "drop": "id"})
    assert "id" not in out and out["activityId"] == SEED_PAYLOAD["id"]
    assert compile_mapping({"include_rest": True, "drop": "id"}).spec["drop"] == ["id"]


def test_wrap_array_and_root():
    spec = {"fields": {"id": "id"}}
    assert apply({**spec, "wrap": "array"}) == [{"id": SEED_PAYLOAD["id"]}]
    assert apply({**spec, "root": "activity"}) == {"activity": {"id": SEED_PAYLOAD["id"]}}
    assert apply({**spec, "root": "events", "wrap": "array"}) == {"events": [{"id": SEED_PAYLOAD["id"]}]}


def test_include_rest_needs_an_object_payload():
    err = apply_error({"include_rest": True}, payload=[1])  # type: ignore[arg-type]
    assert err.field == ""
    assert str(err) == "include_rest needs the payload to be an object, got an array"


def test_outputs_are_json_serialisable():
    out = apply({"fields": {
        "a": {"from": "scheduledAt", "fn": "epoch_ms"}, "b": "reason", "c": {"const": [1.5, None]},
        "d": {"from": "commerceName", "fn": ["lower", {"format": "{value}!"}]}}, "wrap": "array"})
    assert json.loads(json.dumps(out, allow_nan=False)) == out


# -- normalised spec and digest -----------------------------------------------------------------


def test_normalised_spec_and_digest_ignore_spelling():
    nested = compile_mapping({"fields": {"task": {"ref": "id", "due": {"from": "scheduledAt", "fn": "epoch_ms"}}},
                              "include_rest": False, "description": None})
    dotted = compile_mapping({"fields": {"task.ref": {"from": "id"}, "task.due": {"from": "scheduledAt",
                                                                                  "fn": ["epoch_ms"]}}})
    assert nested.spec == dotted.spec == {"fields": {
        "task.ref": {"from": "id"}, "task.due": {"from": "scheduledAt", "fn": ["epoch_ms"]}}}
    assert nested.digest == dotted.digest
    assert len(nested.digest) == 12 and int(nested.digest, 16) >= 0


def test_digest_is_sha256_of_canonical_json():
    import hashlib

    compiled = compile_mapping({"fields": {"x": "id"}, "wrap": "array"})
    text = json.dumps(compiled.spec, ensure_ascii=False, separators=(",", ":"))
    assert compiled.digest == hashlib.sha256(text.encode()).hexdigest()[:12]


def test_digest_changes_with_meaning_and_order():
    a = compile_mapping({"fields": {"x": "id", "y": "type"}}).digest
    assert compile_mapping({"fields": {"y": "type", "x": "id"}}).digest != a  # output key order differs
    assert compile_mapping({"fields": {"x": "id", "y": "channel"}}).digest != a


def test_normalised_spec_recompiles_to_itself():
    spec = {"description": "crm", "fields": {
        "sender.from": "commerceName", "sender.map": {"const": 1},
        "c": {"from": "channel", "map": {"SALESMAN": "s"}, "map_default": None, "fn": ["upper", {"join": ","}],
              "default": "x"},
        "r": {"from": "id", "required": True}},
        "include_rest": True, "drop": ["activityResult"], "wrap": "array", "root": "items"}
    compiled = compile_mapping(spec)
    again = compile_mapping(json.loads(json.dumps(compiled.spec)))
    assert again.spec == compiled.spec and again.digest == compiled.digest
    assert compiled.spec["fields"]["sender.from"] == {"from": "commerceName"}
    assert compiled.spec["fields"]["c"]["fn"] == ["upper", {"join": ","}]


def test_dotted_targets_escape_option_names():
    out = apply({"fields": {"from": "commerceName", "sender.from": "commerceExternalId", "x.const": {"const": 2}}})
    assert out == {"from": "Farmacia Central", "sender": {"from": "COM-001"}, "x": {"const": 2}}


def test_compiled_repr_and_public_names():
    compiled = compile_mapping({"fields": {"x": "id"}})
    assert repr(compiled) == f"<CompiledMapping {compiled.digest}>"
    assert set(mapping.__all__) >= {"SEED_PAYLOAD", "MappingError", "MappingSpecError", "MappingApplyError",
                                    "Problem", "compile_mapping", "CompiledMapping", "load_mapping_file",
                                    "register_cli"}
    assert issubclass(MappingSpecError, MappingError) and issubclass(MappingApplyError, MappingError)


# -- spec problems: every one, with its message --------------------------------------------------


def test_problem_str_forms():
    assert str(Problem("task.ref", "unknown function 'uper'", 7)) == "line 7: task.ref: unknown function 'uper'"
    assert str(Problem("task.ref", "m")) == "task.ref: m"
    assert str(Problem("", "m", 3)) == "line 3: m"
    assert Problem("a", "m", 3).located("f.yaml") == "f.yaml:3: a: m"
    assert Problem("a", "m").located("f.yaml", "warning") == "f.yaml: warning: a: m"


def test_all_problems_reported_not_just_the_first():
    with pytest.raises(MappingSpecError) as info:
        compile_mapping({"fields": {"task": {"ref": {"from": "a..b", "fn": ["uper", {"join": 1}], "defualt": 1}},
                                    "n": 5}, "wrap": "list", "feilds": 1})
    found = [str(p) for p in info.value.problems]
    assert len(found) == 7, found
    assert str(info.value) == "; ".join(found)
    fields = [p.field for p in info.value.problems]
    assert fields == ["feilds", "task.ref", "task.ref", "task.ref", "task.ref", "n", "wrap"]


def test_unknown_function_names_the_field_and_lists_known():
    msg = one_problem({"fields": {"task.ref": {"from": "id", "fn": "uper"}}})
    assert msg == ("task.ref: unknown function 'uper' (known: concat, date_format, date_only, epoch_ms, "
                   "epoch_seconds, format, join, lower, to_bool, to_number, to_string, to_timezone, trim, upper)")


def test_problem_lines_come_from_the_line_map():
    lines = {(): 1, ("fields",): 2, ("fields", "task"): 3, ("fields", "task", "ref"): 4,
             ("fields", "task", "ref", "fn"): 6, ("fields", "task", "ref", "fn", 1): 7, ("wrap",): 9}
    with pytest.raises(MappingSpecError) as info:
        compile_mapping({"fields": {"task": {"ref": {"from": "id", "fn": ["upper", "uper"],
                                                     "required": "yes"}}}, "wrap": 1}, lines=lines)
    got = [(p.field, p.line) for p in info.value.problems]
    assert got == [("task.ref", 7), ("task.ref", 4), ("wrap", 9)]
    assert str(info.value).startswith("line 7: task.ref: unknown function 'uper' (known: ")


@pytest.mark.parametrize("spec, message", [
    ([], "a mapping must be an object with 'fields' (and optionally description, include_rest, drop, wrap, "
         "root), got an array"),
    ({"fields": {"x": "id"}, "extra": 1},
     "extra: unknown key (expected one of: description, drop, fields, include_rest, root, wrap)"),
    ({}, "fields: missing: a mapping needs 'fields', or 'include_rest: true' to pass the payload through"),
    ({"fields": {}}, "fields: empty: name at least one target field, or set 'include_rest: true'"),
    ({"fields": ["id"]}, "fields: expected an object of target fields, got an array"),
    ({"fields": {"x": "id"}, "include_rest": "yes"}, "include_rest: expected true or false, got a string"),
    ({"fields": {"x": "id"}, "description": 3}, "description: expected a string, got a number"),
    ({"fields": {"x": "id"}, "wrap": "list"},
     "wrap: expected 'array' (send the object inside a JSON array), got \"list\""),
    ({"fields": {"x": "id"}, "wrap": True}, "wrap: expected 'array' (send the object inside a JSON array), got true"),
    ({"fields": {"x": "id"}, "root": ""}, "root: expected a non-empty key name to wrap the output in, got a string"),
    ({"fields": {"x": "id"}, "root": 1}, "root: expected a non-empty key name to wrap the output in, got a number"),
])
def test_top_level_problems(spec, message):
    assert one_problem(spec) == message


@pytest.mark.parametrize("fspec, message", [
    (5, "v: expected a JMESPath string, an object {from: ...} / {const: ...}, or nested target fields, "
        "got a number; for a constant write {const: 5}"),
    (None, "v: expected a JMESPath string, an object {from: ...} / {const: ...}, or nested target fields, "
           "got null; for a constant write {const: null}"),
    ({}, "v: empty object: give {from: <JMESPath>} or {const: <value>} (for a constant {} write {const: {}})"),
    ("", "v: empty JMESPath expression"),
    ("a..b", "v: invalid JMESPath 'a..b' at position 2 (after 'a.'): expected '[' or '{' or a field name, got '.'"),
    ("a[", "v: incomplete JMESPath expression 'a['"),
    ("a & `{", "v: invalid JMESPath 'a & `{' at position 4 (after 'a & '): Unclosed ` delimiter"),
    ("uper(id)", "v: unknown JMESPath function 'uper' (known: abs, avg, ceil, contains, ends_with, floor, join, "
                 "keys, length, map, max, max_by, merge, min, min_by, not_null, reverse, sort, sort_by, "
                 "starts_with, sum, to_array, to_number, to_string, type, values)"),
    ("length(id, id)", "v: JMESPath function 'length' takes 1 arguments, got 2"),
    ("merge()", "v: JMESPath function 'merge' takes at least 1 arguments, got 0"),
    ({"from": "id", "const": 1}, "v: give either 'from' or 'const', not both"),
    ({"required": True}, "v: needs a source: 'from' (a JMESPath expression) or 'const' (a value)"),
    ({"from": 3}, "v: from: expected a JMESPath string, got a number"),
    ({"from": "id", "defualt": 1},
     "v: unknown option 'defualt' (expected: from, const, default, required, map, map_default, fn)"),
    ({"from": "id", "required": "yes"}, "v: required: expected true or false, got a string"),
    ({"from": "id", "required": True, "default": "x"},
     "v: required and default contradict each other: with a default the value is never missing (drop one)"),
    ({"const": None, "required": True}, "v: required with const null can never succeed"),
    ({"const": float("nan")}, "v: const: nan is not a JSON number"),
    ({"from": "id", "default": {1: "x"}}, "v: default: object keys must be strings, got a number 1"),
    ({"from": "id", "map": ["a"]}, "v: map: expected an object of value -> replacement, got an array"),
    ({"from": "id", "map": {}}, "v: map: empty (give at least one value -> replacement)"),
    ({"from": "id", "map": {None: "x"}},
     "v: map: a null key never matches (null values skip 'map'; use 'default')"),
    ({"from": "id", "map": {1: "x", "1": "y"}}, "v: map: keys 1 and '1' both match the value '1'"),
    ({"from": "id", "map": {(1, 2): "x"}}, "v: map: keys must be strings, numbers or booleans, got an array"),
    ({"from": "id", "map": {"a": float("inf")}}, "v: map: value for 'a': inf is not a JSON number"),
    ({"from": "id", "map_default": "x"}, "v: map_default: only makes sense with 'map'"),
    ({"from": "id", "fn": 3},
     "v: fn: expected a function name, an object {name: argument} or a list of them, got a number"),
    ({"from": "id", "fn": []}, "v: fn: empty list (name at least one function, or leave 'fn' out)"),
    ({"from": "id", "fn": [{"upper": None, "lower": None}]},
     "v: fn: each step is a function name or a one-key object {name: argument}, got an object with 2 keys"),
    ({"from": "id", "fn": [["upper"]]},
     "v: fn: each step is a function name or a one-key object {name: argument}, got an array"),
    ({"from": "id", "fn": {1: "x"}}, "v: fn: function names are strings, got a number"),
    ({"from": "id", "fn": {"upper": True}}, "v: upper takes no argument, got a boolean"),
    ({"from": "id", "fn": "join"}, "v: join needs an argument, e.g. {join: ', '}"),
    ({"from": "id", "fn": "format"}, "v: format needs an argument, e.g. {format: '{commerceName} ({value})'}"),
    ({"from": "id", "fn": "to_timezone"}, "v: to_timezone needs an argument, e.g. {to_timezone: Europe/Madrid}"),
    ({"from": "id", "fn": "date_format"}, "v: date_format needs an argument, e.g. {date_format: '%d/%m/%Y'}"),
    ({"from": "id", "fn": {"join": 1}}, "v: join: the separator must be a string, got a number"),
    ({"from": "id", "fn": {"to_timezone": "Mars/Base"}},
     "v: to_timezone: unknown time zone 'Mars/Base' (an IANA name such as 'Europe/Madrid')"),
    ({"from": "id", "fn": {"to_timezone": 2}},
     "v: to_timezone: expected a time zone name such as 'Europe/Madrid', got a number"),
    ({"from": "id", "fn": {"date_format": ""}},
     "v: date_format: expected a strftime pattern such as '%d/%m/%Y', got a string"),
    ({"from": "id", "fn": {"format": 1}}, "v: format: expected a template string, got a number"),
    ({"from": "id", "fn": {"format": "{value"}},
     "v: format: bad template '{value': expected '}' before end of string"),
    ({"from": "id", "fn": {"format": "{} x"}},
     "v: format: positional field '{}' in '{} x': name {value} or a payload field such as {commerceName}"),
    ({"from": "id", "fn": {"format": "{0}"}},
     "v: format: positional field '{0}' in '{0}': name {value} or a payload field such as {commerceName}"),
    ({"from": "id", "fn": {"format": "{value!r}"}}, "v: format: conversion '!r' is not supported (field 'value')"),
    ({"from": "id", "fn": {"format": "{value:{w}}"}},
     "v: format: nested fields in the format spec of 'value' are not supported"),
    ({"from": "id", "fn": {"format": "{a..b}"}},
     "v: format: field '{a..b}': invalid JMESPath 'a..b' at position 2 (after 'a.'): "
     "expected '[' or '{' or a field name, got '.'"),
])
def test_field_problems(fspec, message):
    assert one_problem({"fields": {"v": fspec}}) == message


def test_yaml_dates_are_refused_with_a_hint():
    import datetime as dt

    msg = one_problem({"fields": {"v": {"const": dt.date(2026, 4, 15)}}})
    assert msg == "v: const: expected a JSON value, got a date (quote it in YAML: '2026-04-15')"


@pytest.mark.parametrize("fields, message", [
    ({"a": "id", "a.b": "id"}, "a.b: conflicts with the field 'a' (a field cannot also hold nested targets)"),
    ({"a.b": "id", "a": "id"}, "a: conflicts with nested targets under it (a.b)"),
    ({"a": {"b": "id"}, "a.b": "type"}, "a.b: mapped twice (each target field once)"),
    ({"a..b": "id"}, "a..b: empty target name (check for a stray or doubled '.')"),
    ({"": "id"}, "'': empty target name (check for a stray or doubled '.')"),
    ({1: "id"}, "1: target names must be strings, got a number"),
    ({"geo": {"map": "x", "lat": "y"}},
     "geo: mixes field options (map) with target names ('lat'); to map a target named like an option write it "
     "dotted, e.g. 'geo.map'"),
])
def test_target_problems(fields, message):
    assert one_problem({"fields": fields}) == message


@pytest.mark.parametrize("extra, message", [
    ({"drop": 3}, "drop: expected a list of field paths, got a number"),
    ({"drop": [3]}, "drop[0]: expected a dotted field path such as 'activityResult', got a number"),
    ({"drop": ["a..b"]}, "drop[0]: 'a..b': empty segment in the path"),
    ({"drop": ["id", "id"]}, "drop[1]: 'id' is listed twice"),
    ({"drop": ["task.ref"]}, "drop[0]: 'task.ref' would remove the mapped field 'task.ref'"),
    ({"drop": ["task"]}, "drop[0]: 'task' would remove mapped fields (task.ref)"),
])
def test_drop_problems(extra, message):
    assert one_problem({"fields": {"task.ref": "id"}, "include_rest": True, **extra}) == message


def test_drop_outside_the_output_in_strict_mode_is_a_problem():
    assert one_problem({"fields": {"x": "id"}, "drop": ["activityResult"]}) == (
        "drop[0]: 'activityResult' can never match: without include_rest the output holds only the mapped fields")


# -- warnings from the seed payload --------------------------------------------------------------


def warnings(spec) -> list[str]:
    return [str(w) for w in compile_mapping(spec).warnings]


def test_no_warnings_for_a_clean_mapping():
    assert warnings({"fields": {"a": "activityDetails.assignedOperator.externalId",
                                "b": {"from": "occurredAt", "default": None}}}) == []


def test_warning_for_a_missing_path_with_a_suggestion():
    assert warnings({"fields": {"op": "activityDetail.assignedOperator.externalId"}}) == [
        "op: 'activityDetail.assignedOperator.externalId' resolves to nothing in the example activity: "
        "'activityDetail' is not a field of the payload; did you mean 'activityDetails'?"]
    assert warnings({"fields": {"op": "activityDetails.assignedOperator.externalID"}}) == [
        "op: 'activityDetails.assignedOperator.externalID' resolves to nothing in the example activity: 'externalID' "
        "is not a field of activityDetails.assignedOperator; did you mean 'externalId'?"]


def test_warning_for_a_bare_word_suggests_const():
    assert warnings({"fields": {"src": "reten"}}) == [
        "src: 'reten' resolves to nothing in the example activity: 'reten' is not a field of the payload; "
        "for a constant string write {const: \"reten\"}"]


def test_warning_for_paths_through_scalars_and_arrays():
    assert warnings({"fields": {"a": "commerceName.first", "b": "reason[0]", "c": "reason.code[0]"}}) == [
        "a: 'commerceName.first' resolves to nothing in the example activity: 'commerceName' is a string, not an object",
        "b: 'reason[0]' resolves to nothing in the example activity: 'reason' is an object, not an array",
        "c: 'reason.code[0]' resolves to nothing in the example activity: 'reason.code' is a string, not an array"]


def test_warning_for_null_seed_values_unless_defaulted():
    assert warnings({"fields": {"a": "occurredAt", "b": {"from": "userStatus", "required": True},
                                "c": {"from": "activityResult", "default": {}}}}) == [
        "a: 'occurredAt' is null in the example activity",
        "b: 'userStatus' is null in the example activity (required: such a delivery would fail)"]


def test_warning_for_complex_expressions_and_failing_pipelines():
    assert warnings({"fields": {"a": "[?x].y | [0]", "b": {"from": "commerceName", "fn": "epoch_ms"},
                                "c": "abs(commerceName)"}}) == [
        "a: '[?x].y | [0]' resolves to nothing (null) in the example activity",
        "b: fails on the example activity: epoch_ms: cannot parse 'Farmacia Central' as an ISO-8601 date-time",
        "c: 'abs(commerceName)' fails on the example activity: In function abs(), invalid type for value: "
        "Farmacia Central, expected one of: ['number'], received: \"string\""]


def test_warning_for_drop_matching_nothing():
    assert warnings({"include_rest": True, "drop": ["activityResult", "reason.labels"]}) == [
        "drop[1]: 'reason.labels' matches nothing in the mapped example activity"]


def test_warnings_carry_lines():
    compiled = compile_mapping({"fields": {"a": "occuredAt"}}, lines={("fields", "a"): 4})
    assert [(w.field, w.line) for w in compiled.warnings] == [("a", 4)]
    assert str(compiled.warnings[0]).startswith("line 4: a: 'occuredAt' resolves to nothing")
