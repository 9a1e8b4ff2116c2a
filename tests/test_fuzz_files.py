"""Property: every scenario, provider and mapping file is either refused with located errors
(``file:line: key: message``, exit 2, no traceback) or handled as documented (a scenario runs to an end
within its ``duration``: exit 0 or 1).

Documents are the bundled ones mutated by Hypothesis: a value somewhere in the tree replaced by a wrong
type, an out-of-range or huge number, NaN/inf, an empty string, a lone surrogate (YAML's ``"\\ud800"``
escape), a deeply nested value; a key removed; an unknown key added. Regressions the properties found
are kept below them as plain examples.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatchsim.cli import main
from dispatchsim.errors import LocatedError
from dispatchsim.providers import load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("DISPATCHSIM_PROPERTY_EXAMPLES", "40"))
#: Small bundled scenarios (a run takes well under a second); the big ones only add run time.
SCENARIOS = ["reteno_backoff.yaml", "retry_after_429.yaml", "skip_vs_block.yaml", "svix_schedule.yaml",
             "verification_refused.yaml", "fan_out_one_down.yaml", "ordered_head_outage.yaml",
             "mapping_own_format.yaml", "reteno_message_events.yaml", "crash_restart.yaml"]
PROVIDERS = """\
endpoints:
  crm:
    behaviour:
      windows:
        - {from: 0s, to: 30m, status: 503, retry_after: 2m}
      else: {status: 200, latency: {uniform: [100ms, 2s]}}
  flaky:
    behaviour: {sequence: [{status: 429, retry_after: 3m}, {status: 200}], then: {error_rate: 0.1}}
"""
MAPPING_DOC = ROOT / "docs" / "mapping.md"
TRIED: Counter[str] = Counter()
LOCATED = re.compile(r"^(error: )?(?P<file>[^:]+):(?P<line>\d+): ")

#: What mutations put in place of a value: wrong types, edges of ranges, what YAML can say but JSON cannot.
odd_scalar = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, -1, 1, 2.5, 10 ** 40, -(10 ** 40), float("nan"), float("inf"),
                                               float("-inf"), 1e308, "", " ", "\ud800", "x\udfffy", "0s", "-5m",
                                               "99999999999d", "1e400", "nan", "always", "𝄞", "\x00"]),
    st.integers(-3, 3), st.text(max_size=6))


def _deep(depth: int) -> Any:
    """``depth`` levels of ``{k: [...]}``. At most 100 are drawn: PyYAML's dumper recurses about three
    frames per container, and 200 levels put under a deep key overflowed the test's own
    ``yaml.safe_dump`` (Python's recursion limit) before the file reached the parser."""
    value: Any = "x"
    for _ in range(depth):
        value = {"k": [value]}
    return value


odd_value = st.one_of(odd_scalar, st.lists(odd_scalar, max_size=3), st.dictionaries(st.text(max_size=5), odd_scalar,
                                                                                   max_size=2),
                      st.integers(20, 100).map(_deep))


def _places(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_places(v, path + (k,)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_places(v, path + (i,)))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> str:
    """``base`` (a parsed YAML document) with one to three mutations, dumped back to YAML text."""
    import copy

    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        places = _places(doc)
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown"]))
        if how == "replace":
            parent[path[-1]] = draw(odd_value)
        elif how == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["colour", "\ud800", "", "retry ", "Retry"]))] = draw(odd_value)
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1000)


def _assert_located(text: str, path: Path, nlines: int) -> None:
    """Every problem line names the file and a line inside it (the last line may sum up)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "refused without saying why"
    located = [LOCATED.match(ln) for ln in lines]
    assert any(located), text
    for m in located:
        if m:
            assert m.group("file") == str(path) and 1 <= int(m.group("line")) <= max(nlines, 1), text


def _no_traceback(out: str) -> None:
    assert "Traceback" not in out and "Error:" not in out.replace("error:", ""), out


_settings = settings(max_examples=EXAMPLES, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                            HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\ninputs tried per surface: {dict(TRIED)}")


@pytest.mark.slow
@_settings
@given(data=st.data())
def test_a_mutated_scenario_file_is_refused_where_it_is_wrong_or_runs_to_an_end(tmp_path_factory, capsys, data):
    name = data.draw(st.sampled_from(SCENARIOS))
    base = yaml.safe_load((ROOT / "scenarios" / name).read_text())
    text = data.draw(mutated(base))
    path = tmp_path_factory.mktemp("scn") / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    TRIED["scenario file"] += 1
    code = main(["run", str(path), "-q"])
    out = capsys.readouterr()
    _no_traceback(out.out + out.err)
    assert code in (0, 1, 2), (code, out)
    if code == 2:
        _assert_located(out.err, path, text.count("\n") + 1)


@_settings
@given(data=st.data())
def test_a_mutated_provider_config_is_refused_where_it_is_wrong_or_loads(tmp_path_factory, data):
    text = data.draw(mutated(yaml.safe_load(PROVIDERS)))
    path = tmp_path_factory.mktemp("prov") / "providers.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    TRIED["provider config file"] += 1
    try:
        load_config(path)
    except LocatedError as exc:
        assert isinstance(exc, ValueError)
        _assert_located(str(exc), path, text.count("\n") + 1)


def _mapping_base() -> Any:
    block = MAPPING_DOC.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


@_settings
@given(data=st.data())
def test_a_mutated_mapping_file_is_checked_with_located_errors(tmp_path_factory, capsys, data):
    text = data.draw(mutated(_mapping_base()))
    path = tmp_path_factory.mktemp("map") / "crm.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    TRIED["mapping file"] += 1
    code = main(["mapping", "check", str(path)])
    out = capsys.readouterr()
    _no_traceback(out.out + out.err)
    assert code in (0, 2), (code, out)
    if code == 2:
        _assert_located(out.out + out.err, path, text.count("\n") + 1)


# -- regressions found by the properties above ---------------------------------------------------------

def test_a_lone_surrogate_in_a_yaml_file_is_a_located_error_not_a_crash_printing_it(tmp_path, capsys):
    """A YAML ``"\\ud800"`` escape (key or value) made the error printer itself raise UnicodeEncodeError."""
    path = tmp_path / "s.yaml"
    path.write_text('name: "bad \\ud800"\nduration: 1h\n"\\uDC00": 1\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: name: not valid Unicode text: 'bad \\ud800'" in err
    assert f"{path}:3: the key '\\udc00' is not valid Unicode text" in err
    mapping = tmp_path / "m.yaml"
    mapping.write_text('fields:\n  a: {const: "\\ud800"}\n')
    assert main(["mapping", "check", str(mapping)]) == 2
    assert f"{mapping}:2: " in capsys.readouterr().out


def test_an_inline_activity_with_a_wrong_nested_type_is_refused_on_its_line_before_the_run(tmp_path, capsys):
    """It used to run, then stop half-way with an unlocated 'invalid activity' when the engine refused it."""
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nduration: 1h\nproviders:\n  crm: {behaviour: {status: 200}}\ntenants: [acme]\n"
                    "configurations:\n  - {id: c, tenant: acme, provider: crm}\ntimeline:\n  - at: 0s\n"
                    "    create:\n      activity:\n        activityDetails:\n          assignedOperator:\n"
                    "            name: 5\n        reason: {code: 1, colour: red}\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:14: timeline[0].create.activity.activityDetails.assignedOperator.name: must be a string" in err
    assert f"{path}:15: timeline[0].create.activity.reason: unknown field(s) colour" in err
    assert f"{path}:15: timeline[0].create.activity.reason.code: must be a string" in err
    assert "Traceback" not in err
