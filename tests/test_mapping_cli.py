"""Mapping files (YAML/JSON with line maps) and the ``mapping check|preview`` commands."""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatchsim.mapping import SEED_PAYLOAD, MappingSpecError, compile_mapping, load_mapping_file, register_cli
from dispatchsim.yamlfile import load_json

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
description: CRM task shape
fields:
  task:
    ref: activityDetails.assignedOperator.externalId
    due: {from: scheduledAt, fn: epoch_ms}
  channel:
    from: channel
    map: {SALESMAN: sales}
wrap: array
"""

BAD = """\
fields:
  task:
    ref:
      from: activityDetails.assignedOperator.externalId
      fn:
        - lower
        - uper
    bad: "a..b"
wrap: list
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dispatchsim")
    register_cli(top.add_subparsers(dest="command"))
    return top


def run(argv: list[str]) -> tuple[int, str, str]:
    args = parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    if args.func.__name__ == "run_check":
        code = args.func(args, out=out)
    else:
        code = args.func(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# -- loading files ------------------------------------------------------------------------------


def test_yaml_file_loads_with_lines(tmp_path):
    spec, lines = load_mapping_file(write(tmp_path, "m.yaml", GOOD))
    assert spec["fields"]["task"]["due"] == {"from": "scheduledAt", "fn": "epoch_ms"}
    assert lines[("description",)] == 1
    assert lines[("fields", "task", "ref")] == 4
    assert lines[("fields", "task", "due", "fn")] == 5
    assert lines[("fields", "channel", "map", "SALESMAN")] == 8
    assert lines[("wrap",)] == 9


def test_sequence_items_have_lines(tmp_path):
    spec, lines = load_mapping_file(write(tmp_path, "m.yml", BAD))
    assert spec["fields"]["task"]["ref"]["fn"] == ["lower", "uper"]
    assert lines[("fields", "task", "ref", "fn", 0)] == 6
    assert lines[("fields", "task", "ref", "fn", 1)] == 7


def test_problems_point_at_lines(tmp_path):
    spec, lines = load_mapping_file(write(tmp_path, "m.yaml", BAD))
    with pytest.raises(MappingSpecError) as info:
        compile_mapping(spec, lines=lines)
    assert [(p.field, p.line) for p in info.value.problems] == [("task.ref", 7), ("task.bad", 8), ("wrap", 9)]


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "m.yaml", "fields:\n  a: id\n  b: [unclosed\n")
    with pytest.raises(MappingSpecError) as info:
        load_mapping_file(path)
    (problem,) = info.value.problems
    assert problem.line == 4
    assert problem.message.startswith("invalid YAML: ")
    assert str(info.value).startswith(f"{path}:4: invalid YAML: ")


def test_bad_yaml_indentation(tmp_path):
    path = write(tmp_path, "m.yaml", "fields:\n  a: id\n   b: type\n")
    with pytest.raises(MappingSpecError) as info:
        load_mapping_file(path)
    assert str(info.value) == f"{path}:3: invalid YAML: mapping values are not allowed here"


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = write(tmp_path, "m.yaml", "fields:\n  a: id\n  b: type\n  a: channel\n")
    with pytest.raises(MappingSpecError) as info:
        load_mapping_file(path)
    assert str(info.value) == f"{path}:4: duplicate key 'a' (first on line 2)"


def test_json_file_loads_with_lines(tmp_path):
    text = json.dumps({"fields": {"task.ref": {"from": "id", "fn": ["upper", "uper"]}}}, indent=2)
    spec, lines = load_mapping_file(write(tmp_path, "m.json", text))
    assert spec == {"fields": {"task.ref": {"from": "id", "fn": ["upper", "uper"]}}}
    with pytest.raises(MappingSpecError) as info:
        compile_mapping(spec, lines=lines)
    assert [p.line for p in info.value.problems] == [7]


def test_bad_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "m.json", '{\n  "fields": {"a": "id",}\n}\n')
    with pytest.raises(MappingSpecError) as info:
        load_mapping_file(path)
    assert str(info.value) == f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes (column 24)"


def test_duplicate_json_keys_are_refused(tmp_path):
    path = write(tmp_path, "m.json", '{\n "fields": {"a": "id",\n  "a": "type"}\n}\n')
    with pytest.raises(MappingSpecError) as info:
        load_mapping_file(path)
    assert str(info.value) == f"{path}:3: duplicate key 'a' (first on line 2)"


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(MappingSpecError) as info:
        load_mapping_file(path)
    assert str(info.value) == f"{path}: cannot read the mapping file: No such file or directory"


def test_yaml_dates_become_a_problem_with_a_line(tmp_path):
    spec, lines = load_mapping_file(write(tmp_path, "m.yaml", "fields:\n  since:\n    const: 2026-04-15\n"))
    with pytest.raises(MappingSpecError) as info:
        compile_mapping(spec, lines=lines)
    assert str(info.value) == "line 3: since: const: expected a JSON value, got a date (quote it in YAML: '2026-04-15')"


# -- mapping check ------------------------------------------------------------------------------


def test_check_ok(tmp_path):
    path = write(tmp_path, "m.yaml", GOOD)
    code, out, _ = run(["mapping", "check", path])
    digest = compile_mapping(load_mapping_file(path)[0]).digest
    assert code == 0
    assert out == f"{path}: ok, version {digest}, 3 fields\n"


def test_check_warnings_exit_zero(tmp_path):
    path = write(tmp_path, "m.yaml", "fields:\n  a: id\n  when: occuredAt\n")
    code, out, _ = run(["mapping", "check", path])
    assert code == 0
    assert out.splitlines() == [
        f"{path}:3: warning: when: 'occuredAt' resolves to nothing in the example activity: 'occuredAt' is not a "
        "field of the payload; did you mean 'occurredAt'?",
        f"{path}: ok, version {compile_mapping({'fields': {'a': 'id', 'when': 'occuredAt'}}).digest}, "
        "2 fields, 1 warning"]


def test_check_errors_exit_two_with_locations(tmp_path):
    path = write(tmp_path, "m.yaml", BAD)
    code, out, _ = run(["mapping", "check", path])
    assert code == 2
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}:7: error: task.ref: unknown function 'uper' (known: concat, ")
    assert lines[1] == (f"{path}:8: error: task.bad: invalid JMESPath 'a..b' at position 2 (after 'a.'): "
                        "expected '[' or '{' or a field name, got '.'")
    assert lines[2] == f"{path}:9: error: wrap: expected 'array' (send the object inside a JSON array), got \"list\""
    assert lines[3] == f"{path}: invalid mapping (3 errors)"


def test_check_bad_yaml_and_missing_file(tmp_path):
    path = write(tmp_path, "m.yaml", "fields: [\n")
    code, out, _ = run(["mapping", "check", path])
    assert code == 2 and out.startswith(f"{path}:2: error: invalid YAML: ")
    code, out, _ = run(["mapping", "check", str(tmp_path / "none.yaml")])
    assert code == 2
    assert out.splitlines()[0] == f"{tmp_path / 'none.yaml'}: error: cannot read the mapping file: No such file or directory"


# -- mapping preview ----------------------------------------------------------------------------


def test_preview_maps_the_seed_payload(tmp_path):
    code, out, err = run(["mapping", "preview", write(tmp_path, "m.yaml", GOOD)])
    assert code == 0 and err == ""
    assert out == json.dumps([{"task": {"ref": "OP-042", "due": 1776243600000}, "channel": "sales"}],
                             indent=2) + "\n"


def test_preview_with_a_payload_file(tmp_path):
    payload = dict(SEED_PAYLOAD, channel="SALESMAN", scheduledAt="2026-01-01T00:00:00Z")
    payload_path = write(tmp_path, "p.json", json.dumps(payload))
    code, out, _ = run(["mapping", "preview", write(tmp_path, "m.yaml", GOOD), "--payload", payload_path])
    assert code == 0
    assert json.loads(out) == [{"task": {"ref": "OP-042", "due": 1767225600000}, "channel": "sales"}]


def test_preview_keeps_unicode_and_sends_warnings_to_stderr(tmp_path):
    path = write(tmp_path, "m.yaml", "fields:\n  name: activityDetails.assignedOperator.name\n  x: nothing\n")
    code, out, err = run(["mapping", "preview", path])
    assert code == 0
    assert out == '{\n  "name": "Carlos Pérez",\n  "x": null\n}\n'
    assert err.startswith(f"{path}:3: warning: x: 'nothing' resolves to nothing")


def test_preview_apply_failure_exits_one(tmp_path):
    mapping_path = write(tmp_path, "m.yaml", "fields:\n  ref: {from: assignee, required: true}\n")
    payload_path = write(tmp_path, "p.json", "{}")
    code, out, err = run(["mapping", "preview", mapping_path, "--payload", payload_path])
    assert code == 1 and out == ""
    assert err.splitlines()[-1] == f"{payload_path}: cannot be mapped: ref: required value missing (source: assignee)"


def test_preview_invalid_mapping_or_payload_exits_two(tmp_path):
    code, out, err = run(["mapping", "preview", write(tmp_path, "m.yaml", BAD)])
    assert code == 2 and out == "" and ":7: error: task.ref: unknown function 'uper'" in err
    good = write(tmp_path, "g.yaml", GOOD)
    bad_json = write(tmp_path, "p.json", "{\n  nope\n}")
    code, out, err = run(["mapping", "preview", good, "--payload", bad_json])
    assert code == 2 and out == ""
    assert err == f"{bad_json}:2: invalid JSON: Expecting property name enclosed in double quotes (column 3)\n"
    code, _, err = run(["mapping", "preview", good, "--payload", str(tmp_path / "none.json")])
    assert code == 2 and err == f"{tmp_path / 'none.json'}: cannot read the payload: No such file or directory\n"


def test_subcommand_is_required():
    with pytest.raises(SystemExit):
        parser().parse_args(["mapping"])


def test_cli_in_a_subprocess(tmp_path):
    path = write(tmp_path, "m.yaml", GOOD)
    code = ("import argparse, sys, mapping\n"
            "p = argparse.ArgumentParser(); mapping.register_cli(p.add_subparsers())\n"
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, "mapping", "preview", path], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"task": {"ref": "OP-042", "due": 1776243600000}, "channel": "sales"}]
    done = subprocess.run([sys.executable, "-c", code, "mapping", "check", write(tmp_path, "b.yaml", BAD)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert done.returncode == 2 and "b.yaml:7: error: task.ref: unknown function 'uper'" in done.stdout


@pytest.mark.parametrize("name, text, expected", [
    ("surrogate.json", '{"id": "\\ud800"}', "surrogate.json:1: id: not valid Unicode text: '\\ud800'"),
    ("deep.json", "[" * 100000 + "\n", "deep.json:1: nested deeper than 32 levels (the limit for any JSON value)"),
    ("nan.json", '{\n  "id": NaN\n}', "nan.json:2: id: NaN is not a JSON number"),
    ("inf.json", '{"id": "x",\n "activityDetails": {"n": [1, 1e400]}}',
     "inf.json:2: activityDetails.n[1]: 1e400 is too large for a floating-point number"),
    ("dup.json", '{"id": "a",\n "id": "b"}', "dup.json:2: id: duplicate key 'id' (first on line 1)"),
], ids=["lone-surrogate", "deep", "nan", "huge-float", "duplicate-key"])
def test_preview_refuses_a_payload_json_cannot_carry_with_file_line_and_field(tmp_path, capsys, name, text,
                                                                              expected):
    from dispatchsim.cli import main

    mapping = write(tmp_path, "m.yaml", GOOD)
    (tmp_path / name).write_text(text, encoding="utf-8")
    code = main(["mapping", "preview", mapping, "--payload", str(tmp_path / name)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"{tmp_path}/{expected}"), err
    assert "Traceback" not in err


def test_preview_of_a_lone_surrogate_payload_in_a_process_is_one_line_not_a_traceback(tmp_path):
    """What a user ran: the payload was mapped and printing it to a real (UTF-8) stdout raised."""
    mapping = write(tmp_path, "m.yaml", "fields:\n  task: id\n")
    payload = write(tmp_path, "pl.json", '{"id":"\\ud800"}')
    done = subprocess.run([sys.executable, "-m", "dispatchsim", "mapping", "preview", mapping, "--payload", payload],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"{payload}:1: id: not valid Unicode text: '\\ud800' (a lone surrogate such "
                                        "as \\ud800: an escape can write it, UTF-8 text cannot hold it)"]


def test_preview_maps_a_valid_surrogate_pair_and_reports_every_problem_at_once(tmp_path, capsys):
    from dispatchsim.cli import main

    mapping = write(tmp_path, "m.yaml", "fields:\n  task: id\n")
    ok = write(tmp_path, "ok.json", '{"id": "\\ud83d\\ude00"}')
    assert main(["mapping", "preview", mapping, "--payload", ok]) == 0
    assert json.loads(capsys.readouterr().out) == {"task": "\U0001F600"}
    bad = write(tmp_path, "bad.json", '{"id": Infinity,\n "x": ["\\udfff", -Infinity]}')
    assert main(["mapping", "preview", mapping, "--payload", bad]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}:1: id: Infinity is not a JSON number",
        f"{bad}:2: x[0]: not valid Unicode text: '\\udfff' (a lone surrogate such as \\ud800: an escape can write "
        "it, UTF-8 text cannot hold it)",
        f"{bad}:2: x[1]: -Infinity is not a JSON number"]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(value=_JSON, indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans())
def test_the_strict_json_reader_reads_every_valid_document_as_json_does(value, indent, ascii_only):
    """The reader's own scan never refuses valid JSON (strings with brackets, quotes, escapes and
    pairs; numbers; nesting) and returns what ``json.loads`` returns."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert load_json(text, source="v.json") == json.loads(text)


def test_a_payload_to_preview_and_a_value_the_engine_is_handed_have_one_depth_limit():
    """One constant: what ``mapping preview`` reads, the engine accepts, and both refuse one level more
    with the same words."""
    from dispatchsim.engine.values import value_problems
    from dispatchsim.errors import LocatedError
    from dispatchsim.yamlfile import MAX_JSON_DEPTH, TOO_DEEP

    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json(deepest) == json.loads(deepest) and value_problems(json.loads(deepest), "v") == []
    deeper = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(LocatedError) as err:
        load_json(deeper, source="p.json")
    assert str(err.value) == f"p.json:1: {TOO_DEEP}"
    assert value_problems(json.loads(deeper), "v") == [f"v{'[0]' * MAX_JSON_DEPTH}: {TOO_DEEP}"]
    assert "32 levels" in TOO_DEEP


@pytest.mark.parametrize("text, kind", [("[1, 2]", "a list"), ("7", "a number"), ('"x"', "a string"), ("null", "null")])
def test_preview_refuses_a_payload_that_is_not_an_object(tmp_path, text, kind):
    """A payload file holding a list (or a number) was mapped as an activity with no fields: every field
    printed null, exit 0, as if the mapping were wrong rather than the file."""
    good = write(tmp_path, "g.yaml", GOOD)
    payload = write(tmp_path, "p.json", text)
    code, out, err = run(["mapping", "preview", good, "--payload", payload])
    assert (code, out) == (2, "")
    assert err == f"{payload}:1: the payload must be a JSON object (an activity), not {kind}\n"
