"""One error root, one located error, one YAML reader: every input file reports every mistake at once.

Each file kind (scenario, providers config, mapping) is checked through the library and through the CLI:
a file with five mistakes gives five ``file:line: key: message`` lines and exit 2; a file that is not
UTF-8, not YAML, empty or not a mapping gives one clear located error and exit 2, never a traceback.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dispatchsim
from dispatchsim.cli import main
from dispatchsim.engine.errors import ConfigError
from dispatchsim.errors import Collector, DispatchsimError, LocatedError
from dispatchsim.mapping import MappingSpecError, compile_mapping, load_mapping_file
from dispatchsim.providers import ProviderConfigError, load_config
from dispatchsim.scenarios import ScenarioError, load_scenario, parse_scenario
from dispatchsim.yamlfile import load_yaml, read_text

LOCATED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<rest>.+)$")


# ---------------------------------------------------------------------------------------------- the root


def test_every_exception_class_of_the_package_has_the_one_root():
    """No part defines an exception outside ``DispatchsimError`` (eight unrelated roots before)."""
    names = [f"dispatchsim.{m.name}" for m in pkgutil.iter_modules(dispatchsim.__path__) if m.name != "__main__"]
    for part in ("engine", "mapping", "providers", "scenarios", "probe", "server"):
        package = importlib.import_module(f"dispatchsim.{part}")
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"dispatchsim.{part}.")]
    classes = []
    for name in names:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name:
                classes.append(cls)
    assert len(classes) >= 15
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, DispatchsimError)]
    assert outside == []


@pytest.mark.parametrize("cls", [ScenarioError, ProviderConfigError, MappingSpecError, ConfigError])
def test_file_and_config_errors_are_located_value_errors(cls):
    assert issubclass(cls, LocatedError) and issubclass(cls, ValueError) and issubclass(cls, DispatchsimError)


def test_located_error_text_names_the_parts_it_knows():
    assert str(LocatedError("bad", source="f.yaml", line=3, field="retry.cap")) == "f.yaml:3: retry.cap: bad"
    assert str(LocatedError("bad", source="f.yaml", line=3)) == "f.yaml:3: bad"
    assert str(LocatedError("bad", source="f.yaml", field="x")) == "f.yaml: x: bad"
    assert str(LocatedError("bad", line=7, field="x")) == "line 7: x: bad"
    assert str(ConfigError("must be >= 1", field="retry")) == "retry: must be >= 1"
    assert str(ConfigError("tenant 'a' already exists")) == "tenant 'a' already exists"


def test_several_problems_in_one_exception_are_each_one_line():
    found = Collector()
    for line in (4, 9):
        with found.guard():
            raise LocatedError("wrong", source="s.yaml", line=line, field=f"k{line}")
    with found.guard():
        raise LocatedError.of([LocatedError("a", source="s.yaml", line=12),
                               LocatedError("b", source="s.yaml", line=13)])
    with pytest.raises(ScenarioError) as info:
        found.raise_if_any(ScenarioError)
    err = info.value
    assert str(err).splitlines() == ["s.yaml:4: k4: wrong", "s.yaml:9: k9: wrong", "s.yaml:12: a", "s.yaml:13: b"]
    assert (err.source, err.line, err.field, err.message) == ("s.yaml", 4, "k4", "wrong")
    assert [e.line for e in err.errors] == [4, 9, 12, 13]
    assert all(e.errors == (e,) for e in err.errors)  # each a single problem: flattening twice adds nothing
    with pytest.raises(ValueError):
        LocatedError.of([])


# ---------------------------------------------------------------------------------------------- the reader


#: nine short lines standing for 2 * 9^8 values (PyYAML builds them as shared references, every reader
#: walked them one by one; this hung ``dispatchsim run``)
BILLION_LAUGHS = ('a: &a ["lol","lol"]\n' + "".join(
    f"{name}: &{name} [{','.join(['*' + previous] * 9)}]\n" for previous, name in zip("abcdefgh", "bcdefghi"))).encode()
#: twenty anchors, each 50 levels deep and holding the alias of the one before (the second, line 3, is 101 deep)
DEEP_THROUGH_ALIASES = ("name: deep\nx:\n" + "".join(
    f"  k{i}: &a{i} " + "[" * 50 + (f"*a{i - 1}" if i else "1") + "]" * 50 + "\n" for i in range(20))).encode()


def test_yaml_reader_maps_every_key_and_item_to_its_line():
    data, lines = load_yaml("# a comment\na:\n  b: 1\n  c: [x, y]\nd:\n  - e: 2\n", source="f.yaml")
    assert data == {"a": {"b": 1, "c": ["x", "y"]}, "d": [{"e": 2}]}
    assert lines[()] == 2
    assert lines[("a",)] == 2 and lines[("a", "b")] == 3 and lines[("a", "c", 1)] == 4
    assert lines[("d", 0)] == 6 and lines[("d", 0, "e")] == 6


def test_yaml_reader_reports_every_duplicate_key():
    with pytest.raises(LocatedError) as info:
        load_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", source="f.yaml")
    assert str(info.value).splitlines() == ["f.yaml:4: b.c: duplicate key 'c' (first on line 3)",
                                            "f.yaml:5: a: duplicate key 'a' (first on line 1)"]


def test_yaml_reader_merge_keys_are_not_duplicates():
    data, _ = load_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\n")
    assert data["use"] == {"x": 3, "y": 2}


def test_yaml_reader_takes_aliases_and_maps_them_to_the_lines_they_are_written_on():
    """A bundled scenario shares one endpoint behaviour between two providers with an anchor and alias."""
    data, lines = load_yaml("a: &x\n  b: 1\nc:\n  - 1\n  - *x\nd: *x\ne:\n  <<: *x\n  f: 2\n")
    assert data == {"a": {"b": 1}, "c": [1, {"b": 1}], "d": {"b": 1}, "e": {"b": 1, "f": 2}}
    assert lines[("c", 1)] == 5 and lines[("d",)] == 6 and lines[("e", "f")] == 9
    assert lines[("c", 1, "b")] == lines[("e", "b")] == 2  # the value itself is written at its anchor


@pytest.mark.parametrize("text, problems", [
    ("a: &x [*x]\n", ["f.yaml:1: a[0]: an alias inside its own anchor (its value would contain itself without end)"]),
    ("a: &x\n  b:\n    - 1\n    - *x\n  c: *x\n", ["f.yaml:4: a.b[1]: an alias inside its own anchor (its value would "
                                                   "contain itself without end)",
                                                   "f.yaml:5: a.c: an alias inside its own anchor (its value would contain "
                                                   "itself without end)"]),
    ("a: &x {<<: *x}\n", ["f.yaml:1: a: an alias inside its own anchor (its value would contain itself without end)"]),
    (BILLION_LAUGHS.decode(), ["f.yaml:5: e[3]: aliases repeat more than 10,000 values in this file; write the values "
                               "out, or use fewer aliases"]),
    ("a: &a [1, 2]\nm:\n  <<: {b: [" + ", ".join(["*a"] * 5001) + "]}\n",
     ["f.yaml:3: m.b[3333]: aliases repeat more than 10,000 values in this file; write the values out, or use fewer aliases"]),
])
def test_yaml_reader_refuses_an_alias_inside_itself_and_aliases_that_repeat_too_much(text, problems):
    """PyYAML builds both as shared references; every reader then recursed without end or walked 9^9 values."""
    with pytest.raises(LocatedError) as info:
        load_yaml(text, source="f.yaml")
    assert str(info.value).splitlines() == problems


def test_yaml_reader_refuses_nesting_past_its_limit_through_aliases():
    """Each anchor is 50 levels deep and holds the last one's alias: about 1,000 levels for a reader,
    9,500 repeated values (under the limit of 10,000): every reader crashed with a RecursionError."""
    with pytest.raises(LocatedError) as info:
        load_yaml(DEEP_THROUGH_ALIASES.decode(), source="f.yaml")
    assert str(info.value).startswith("f.yaml:3: x.k1[0][0]")  # k1 holds k0: 101 levels
    assert str(info.value).endswith(": nested deeper than 64 levels through aliases (the limit for a YAML file)")
    load_yaml("a: &a " + "[" * 30 + "1" + "]" * 30 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n")  # 61: fine


def test_yaml_reader_refuses_nesting_past_its_limit_where_it_starts():
    load_yaml("a: " + "[" * 63 + "]" * 63 + "\n")
    with pytest.raises(LocatedError) as info:
        load_yaml("a:\n  " + "[" * 3000 + "]" * 3000 + "\n", source="f.yaml")
    assert str(info.value) == "f.yaml:2: invalid YAML: nested deeper than 64 levels (the limit for a YAML file)"


@pytest.mark.parametrize("text, line, message", [
    ("a: [\n", 2, "invalid YAML: expected the node content, but found '<stream end>'"),
    ("a: 1\n---\nb: 2\n", 2, "invalid YAML: but found another document"),
    ("a: 1\nb: \x00\n", 2, "invalid YAML: character U+0000 is not allowed in YAML text"),
    ("a: 1\n  b: 2\n", 2, "invalid YAML: mapping values are not allowed here"),
])
def test_yaml_reader_syntax_errors_are_located(text, line, message):
    with pytest.raises(LocatedError) as info:
        load_yaml(text, source="f.yaml")
    assert (info.value.line, info.value.message) == (line, message)


def test_reader_refuses_text_that_is_not_utf8_naming_line_and_byte(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_bytes(b"name: ok\nother: caf\xe9\n")
    with pytest.raises(LocatedError) as info:
        read_text(path)
    assert str(info.value) == (f"{path}:2: the file is not UTF-8 text: byte 0xe9 at column 11 cannot be decoded; "
                               "save it as UTF-8")
    path.write_bytes("\ufeffname: ok\n".encode())  # a BOM is fine
    assert read_text(path) == "name: ok\n"


# ---------------------------------------------------------------------------------------------- five mistakes

SCENARIO_5 = """\
name: five mistakes
seed: -1
providers:
  crm:
    behaviour: {status: 200, latncy: 1s}
configurations:
  - id: c
    tenant: acme
    provider: crm
    retry: {max_attempts: 0}
timeline:
  - at: 10 minutes
    create: {count: 3}
expect:
  all_deliverd: true
"""
SCENARIO_5_PROBLEMS = [
    (2, "seed: expected an integer >= 0, got -1"),
    (5, "providers.crm.behaviour.latncy: unknown key 'latncy' in a response"),
    (10, "configurations[0].retry: max_attempts must be a whole number from 1 to 10000"),
    (12, "timeline[0].at: expected a duration like 30s, 10m, 6h or a number of seconds, got '10 minutes'"),
    (15, "expect.all_deliverd: unknown key 'all_deliverd' in the expectations"),
]

PROVIDERS_5 = """\
endpoints:
  a:
    path: hooks
    port: 99999
    behaviour: {status: 200, latncy: 1s}
  "bad name": {}
  b:
    auth: {type: oauth}
"""
PROVIDERS_5_PROBLEMS = [
    (3, "endpoints.a.path: must be an absolute URL path like /hooks, got 'hooks'"),
    (4, "endpoints.a.port: must be an integer 0..65535, got 99999"),
    (5, "endpoints.a.behaviour.latncy: unknown key 'latncy' in a response"),
    (6, "endpoints.bad name: endpoint name 'bad name' must be letters"),
    (8, "endpoints.b.auth.type: auth.type must be one of api_key, bearer, basic"),
]

MAPPING_5 = """\
fields:
  a: {from: id, fn: uper}
  b: {from: "a..b"}
  c: {from: id, fn: upper, frm: x}
  d: {const: 1, from: id}
wrap: list
"""
MAPPING_5_PROBLEMS = [
    (2, "a: unknown function 'uper'"),
    (3, "b: invalid JMESPath 'a..b'"),
    (4, "c: unknown option 'frm'"),
    (5, "d:"),
    (6, "wrap: expected 'array'"),
]


def _assert_problems(lines: list[str], path: Path, expected: list[tuple[int, str]]) -> None:
    assert len(lines) == len(expected), lines
    for text, (line, start) in zip(lines, expected):
        m = LOCATED.match(text)
        assert m, text
        assert (m["file"], int(m["line"])) == (str(path), line), text
        assert m["rest"].startswith(start), text


def test_scenario_with_five_mistakes_library(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO_5)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    _assert_problems([e.located() for e in info.value.errors], path, SCENARIO_5_PROBLEMS)




#: an unknown key in a configuration, in the expectations or in a timeline event hid every other mistake
#: there: 5 of these 11 problems were reported, the other 6 only once the typos were fixed
SCENARIO_TYPOS = """\
name: typo
seed: 1
providers:
  crm: {behaviour: {status: 200}}
tenants: [acme]
configurations:
  - id: c1
    tenant: nobody
    provider: ghost
    ordering: sideways
    retyr: reteno
timeline:
  - {at: 0s, create: {count: 0}, colour: red}
  - {at: 1m, crete: {count: 1}}
expect:
  all_delivered: true
  all_delivred: true
  order: sometimes
  counts: {DISPATCHED: -1}
expects: {}
"""
SCENARIO_TYPOS_PROBLEMS = [
    (8, "configurations[0].tenant: unknown tenant 'nobody'"),
    (9, "configurations[0].provider: unknown provider 'ghost'"),
    (10, "configurations[0].ordering: mode must be ordered, partitioned or none, not 'sideways'"),
    (11, "configurations[0].retyr: unknown key 'retyr' in a dispatch configuration"),
    (13, "timeline[0].colour: unknown key 'colour' in a timeline event"),
    (13, "timeline[0].create.count: expected an integer >= 1, got 0"),
    (14, "timeline[1].crete: unknown key 'crete' in a timeline event"),  # and no "expected one action" besides
    (17, "expect.all_delivred: unknown key 'all_delivred' in the expectations"),
    (18, "expect.order: expected strict"),
    (19, "expect.counts.DISPATCHED: expected an integer >= 0, got -1"),
    (20, "expects: unknown key 'expects' in a scenario"),
]

#: two independent mistakes in each nested mapping (an expectation, an action, a configuration's retry):
#: each reported only its first, or its unknown key alone
SCENARIO_NESTED = """\
name: nested
providers:
  crm: {behaviour: {status: 200}}
tenants: [acme, beta]
configurations:
  - {id: c1, tenant: acme, provider: crm, retry: {preset: reteno, cap: -5m, typo: 1}}
timeline:
  - {at: 0s, create: {tenant: acme, count: 0, colour: red}}
  - {at: 1m, replay: {delivery: 0, colour: red}}
  - {at: 2m, endpoint: {name: crm, behaviour: {status: 99}, colour: red}}
  - {at: 3m, edit: {config: c1, retry: {cap: -1m, base: x}}}
  - {at: 4m, force_retry: {config: nope, since: -1m}}
expect:
  attempts_per_delivery: {max: 0, min: -1}
  failed: {count: -1, reason: nah, typo: 1}
  retry_delays: {delivery: 0, delays: [1m, -2m]}
  mapping_shape: {provider: ghost, array: 3}
"""
SCENARIO_NESTED_PROBLEMS = [
    (6, "configurations[0].retry.typo: unknown key 'typo' in retry"),
    (6, "configurations[0].retry.cap: expected a duration"),
    (8, "timeline[0].create.colour: unknown key 'colour' in an activity generator"),
    (8, "timeline[0].create.count: expected an integer >= 1, got 0"),
    (9, "timeline[1].replay.colour: unknown key 'colour' in a replay"),
    (9, "timeline[1].replay.delivery: expected an integer >= 1, got 0"),
    (10, "timeline[2].endpoint.colour: unknown key 'colour' in an endpoint change"),
    (10, "timeline[2].endpoint.behaviour: status: must be an integer 200..599, got 99"),
    (11, "timeline[3].edit.retry.base: expected a duration"),
    (11, "timeline[3].edit.retry.cap: expected a duration"),
    (12, "timeline[4].force_retry.config: unknown configuration 'nope'"),
    (12, "timeline[4].force_retry.since: expected a duration"),
    (14, "expect.attempts_per_delivery.max: expected an integer >= 1, got 0"),
    (14, "expect.attempts_per_delivery.min: expected an integer >= 1, got -1"),
    (15, "expect.failed.typo: unknown key 'typo' in the FAILED set"),
    (15, "expect.failed.count: expected an integer >= 0, got -1"),
    (15, "expect.failed.reason: expected one of exhausted"),
    (16, "expect.retry_delays.delivery: expected an integer >= 1, got 0"),
    (16, "expect.retry_delays.delays[1]: expected a duration"),
    (17, "expect.mapping_shape.provider: unknown provider 'ghost'"),
    (17, "expect.mapping_shape.array: expected true or false"),
]
#: a required key that is missing because it is misspelt is reported once, as the unknown key; a missing
#: one next to an unrelated unknown key is a problem of its own
SCENARIO_MISSPELT = """\
name: misspelt
providers:
  crm: {behaviour: {status: 200}}
tenants: [acme, beta]
configurations:
  - {id: c1, tennant: acme, provider: crm}
timeline:
  - {a: 0s, create: {tenat: acme}}
  - {at: 1m, replay: {delivry: 3}}
  - {at: 1m, replay: {colour: 3}}
  - {at: 2m, endpoint: {nam: crm, behavior: 503}}
  - {at: 3m, edit: {confg: c1}}
expect:
  failed: {cont: 1}
  mapping_shape: {provder: crm}
"""
SCENARIO_MISSPELT_PROBLEMS = [
    (6, "configurations[0].tennant: unknown key 'tennant'"),
    (8, "timeline[0].a: unknown key 'a' in a timeline event"),
    (8, "timeline[0].create.tenat: unknown key 'tenat'"),
    (9, "timeline[1].replay.delivry: unknown key 'delivry'"),
    (10, "timeline[2].replay.colour: unknown key 'colour'"),
    (10, "timeline[2].replay: missing required key 'delivery'"),
    (11, "timeline[3].endpoint.nam: unknown key 'nam'"),
    (11, "timeline[3].endpoint.behavior: unknown key 'behavior'"),
    (12, "timeline[4].edit.confg: unknown key 'confg'"),
    (14, "expect.failed.cont: unknown key 'cont'"),
    (15, "expect.mapping_shape.provder: unknown key 'provder'"),
]

#: an external provider's unknown key hid its URL and limits; a wrong tenant id hid the next ones
SCENARIO_LISTS = """\
name: lists
clock: real
providers:
  ext: {url: "ftp://x", max_rate: 0, typo: 1}
tenants: [acme, "bad id", "x y"]
configurations:
  - {id: c, tenant: acme, provider: ext}
"""
SCENARIO_LISTS_PROBLEMS = [
    (4, "providers.ext.typo: an external provider takes only url, max_rate and max_requests"),
    (4, "providers.ext.url: must be an absolute http(s) URL, got 'ftp://x'"),
    (4, "providers.ext.max_rate: expected a rate above 0"),
    (5, "tenants[1]: tenant id 'bad id'"),
    (5, "tenants[2]: tenant id 'x y'"),
]

#: an account's webhook settings: the engine's check stopped at the first wrong one
SCENARIO_ACCOUNT = """\
name: account
providers:
  crm: {behaviour: {status: 200}}
accounts:
  acme: {provider: crm, batch_size: 0, max_wait: 99999999, timeouts: {connect: -1}, retry: {base: -1}}
"""
SCENARIO_ACCOUNT_PROBLEMS = [
    (5, "accounts.acme.batch_size: an integer from 1 to 1000"),
    (5, "accounts.acme.max_wait: seconds from 0 to 86400"),
    (5, "accounts.acme.timeouts: need 0 < connect <= total"),
    (5, "accounts.acme.retry: base must be a number of seconds > 0"),
]


@pytest.mark.parametrize(("text", "expected"), [(SCENARIO_5, SCENARIO_5_PROBLEMS),
                                               (SCENARIO_TYPOS, SCENARIO_TYPOS_PROBLEMS),
                                               (SCENARIO_NESTED, SCENARIO_NESTED_PROBLEMS),
                                               (SCENARIO_MISSPELT, SCENARIO_MISSPELT_PROBLEMS),
                                               (SCENARIO_LISTS, SCENARIO_LISTS_PROBLEMS),
                                               (SCENARIO_ACCOUNT, SCENARIO_ACCOUNT_PROBLEMS)],
                         ids=["five mistakes", "an unknown key hides no other problem",
                              "every problem of a nested mapping", "a misspelt required key is reported once",
                              "an external provider and the tenants", "an account's webhook settings"])
def test_scenario_mistakes_cli(tmp_path, capsys, text, expected):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    _assert_problems(err[:-1], path, expected)
    assert err[-1] == f"dispatchsim run: {len(expected)} problems in the scenario files; nothing was run"


def test_every_scenario_file_is_checked_before_reporting(tmp_path, capsys):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(SCENARIO_5)
    two.write_bytes(b"name: x\xff\n")
    assert main(["run", str(one), str(two)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 7 and err[5].startswith(f"{two}:1: the file is not UTF-8 text")


def test_providers_config_with_five_mistakes(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(PROVIDERS_5)
    with pytest.raises(ProviderConfigError) as info:
        load_config(path)
    _assert_problems([e.located() for e in info.value.errors], path, PROVIDERS_5_PROBLEMS)
    assert main(["provider", "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    _assert_problems([line.removeprefix("error: ") for line in err], path, PROVIDERS_5_PROBLEMS)


#: two independent mistakes in each nested mapping of a providers config: each reported only its unknown key
PROVIDERS_NESTED = """\
endpoints:
  a:
    auth: {type: bearer, token: "", typo: 1}
    results_callback: {url: ftp://x, delay: -1s, typo: 1}
    behaviour: {status: 99, latency: 2x, typo: 1}
    verify_get: {fault: slow_body, chunk: 0, interval: -1s}
  b:
    behaviour:
      sequence: [{status: 99, times: 0, typo: 1}]
      cycle: 3
  c:
    auth: {type: basic, usernme: u, password: p}
    behaviour: {latency: {normal: {mean: 1x, stdev: 1s}}}
"""
PROVIDERS_NESTED_PROBLEMS = [
    (3, "endpoints.a.auth.typo: unknown key 'typo' in bearer auth"),
    (3, "endpoints.a.auth.token: must be a non-empty string"),
    (4, "endpoints.a.results_callback.typo: unknown key 'typo' in results_callback"),
    (4, "endpoints.a.results_callback.url: must be an http(s) URL"),
    (4, "endpoints.a.results_callback.delay: expected a duration"),
    (5, "endpoints.a.behaviour.typo: unknown key 'typo' in a response"),
    (5, "endpoints.a.behaviour.status: must be an integer 200..599, got 99"),
    (5, "endpoints.a.behaviour.latency: expected a duration"),
    (6, "endpoints.a.verify_get.chunk: must be an integer >= 1, got 0"),
    (6, "endpoints.a.verify_get.interval: expected a duration"),
    (9, "endpoints.b.behaviour.sequence[0].typo: unknown key 'typo' in a response"),
    (9, "endpoints.b.behaviour.sequence[0].times: must be an integer >= 1, got 0"),
    (9, "endpoints.b.behaviour.sequence[0].status: must be an integer 200..599, got 99"),
    (10, "endpoints.b.behaviour.cycle: must be true or false"),
    (12, "endpoints.c.auth.usernme: unknown key 'usernme' in basic auth"),  # not also "needs 'username'"
    (13, "endpoints.c.behaviour.latency.normal.stdev: unknown key 'stdev' in normal latency"),
    (13, "endpoints.c.behaviour.latency.normal.mean: expected a duration"),
]


def test_providers_config_nested_mistakes_are_all_reported(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(PROVIDERS_NESTED)
    with pytest.raises(ProviderConfigError) as info:
        load_config(path)
    _assert_problems([e.located() for e in info.value.errors], path, PROVIDERS_NESTED_PROBLEMS)
    assert main(["provider", "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    _assert_problems([line.removeprefix("error: ") for line in err], path, PROVIDERS_NESTED_PROBLEMS)


def test_mapping_file_with_five_mistakes(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING_5)
    spec, lines = load_mapping_file(path)
    with pytest.raises(MappingSpecError) as info:
        compile_mapping(spec, lines=lines)
    assert [e.line for e in info.value.errors] == [2, 3, 4, 5, 6]
    located = MappingSpecError(info.value.problems, source=str(path))  # what `mapping check` reports
    _assert_problems([e.located() for e in located.errors], path, MAPPING_5_PROBLEMS)
    assert main(["mapping", "check", str(path)]) == 2
    out = capsys.readouterr().out.splitlines()
    _assert_problems([line.replace(": error: ", ": ", 1) for line in out[:-1]], path, MAPPING_5_PROBLEMS)
    assert out[-1] == f"{path}: invalid mapping (5 errors)"


def test_a_scenario_mapping_file_reports_its_own_lines(tmp_path):
    (tmp_path / "m.yaml").write_text("fields:\n  a: 1\n  a: 2\n")
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nproviders:\n  crm: {}\nconfigurations:\n"
                    "  - {id: c, tenant: acme, provider: crm, mapping: m.yaml}\n"
                    "  - {id: d, tenant: acme, provider: crm, mapping: none.yaml}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert [e.located() for e in info.value.errors] == [
        f"{path}:6: configurations[1].mapping: cannot read mapping file '{tmp_path / 'none.yaml'}': no such file",
        f"{tmp_path / 'm.yaml'}:3: duplicate key 'a' (first on line 2)",
    ]


def test_mistakes_do_not_cascade_into_references(tmp_path):
    """A configuration that is itself wrong is still declared: the timeline naming it is not an error too."""
    text = ("name: t\nproviders:\n  crm: {}\nconfigurations:\n  - {id: c, tenant: acme, provider: crm, active: 3}\n"
            "timeline:\n  - {at: 1m, deactivate: c}\nexpect:\n  inactive: [c]\n")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.yaml")
    assert [e.located() for e in info.value.errors] == ["s.yaml:5: configurations[0].active: expected true or false"]


# ---------------------------------------------------------------------------------------------- broken files

BROKEN = {
    "not UTF-8": (b"a: caf\xe9\n", 1, "is not UTF-8 text: byte 0xe9 at column 7 cannot be decoded"),
    "not YAML": (b"a: [\n", 2, "invalid YAML: expected the node content"),
    "empty": (b"", 1, "the file is empty"),
    "not a mapping": (b"- a\n- b\n", 1, None),
    "alias inside itself": (b"x: 1\na: &x [*x]\n", 2, "an alias inside its own anchor"),
    "billion laughs": (BILLION_LAUGHS, 5, "aliases repeat more than 10,000 values in this file"),
    "nested too deep": (b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n", 1, "nested deeper than 64 levels"),
    "nested too deep through aliases": (DEEP_THROUGH_ALIASES, 3, "nested deeper than 64 levels through aliases"),
}
KINDS = {
    "scenario": (["run"], "err", "expected a mapping of scenario keys"),
    "providers": (["provider", "--config"], "err", "must be a mapping, got list"),
    "mapping": (["mapping", "check"], "out", "a mapping must be an object with 'fields'"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("broken", BROKEN)
def test_broken_file_is_one_located_error_and_exit_2(tmp_path, capsys, kind, broken):
    content, line, message = BROKEN[broken]
    argv, stream, not_a_mapping = KINDS[kind]
    path = tmp_path / "f.yaml"
    path.write_bytes(content)
    assert main([*argv, str(path)]) == 2
    problems = [text.removeprefix("error: ") for text in getattr(capsys.readouterr(), stream).splitlines()
                if LOCATED.match(text.removeprefix("error: "))]
    assert len(problems) == 1, problems
    m = LOCATED.match(problems[0].replace(": error: ", ": ", 1))
    assert m and m["file"] == str(path) and int(m["line"]) == line, problems
    assert (message or not_a_mapping) in m["rest"]


def test_non_utf8_scenario_through_the_installed_command_is_exit_2_not_a_traceback(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\nproviders: {crm: {}}\n".encode("latin-1"))
    proc = subprocess.run([sys.executable, "-m", "dispatchsim", "run", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == (f"{path}:1: the file is not UTF-8 text: byte 0xe9 at column 10 cannot be "
                                           "decoded; save it as UTF-8")


@pytest.mark.parametrize("broken", ["alias inside itself", "billion laughs", "nested too deep through aliases"])
def test_broken_files_through_the_installed_command_and_serve_are_exit_2_at_once(tmp_path, broken):
    content, line, message = BROKEN[broken]
    path = tmp_path / "f.yaml"
    path.write_bytes(content)
    for argv in (["run", str(path)], ["serve", "--db", str(tmp_path / "x.db"), "--config", str(path)]):
        proc = subprocess.run([sys.executable, "-m", "dispatchsim", *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        first = proc.stderr.splitlines()[0]
        assert first.startswith(f"{path}:{line}: ") and message in first, proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_serve_config_reports_every_mistake_with_its_line(tmp_path, capsys):
    path = tmp_path / "serve.yaml"
    path.write_text("keys:\n  - {key: short, admin: true}\ntenants: acme\ncolour: red\nsweep_interval: soon\n"
                    "claim_chunk: 0\n")
    assert main(["serve", "--db", str(tmp_path / "x.db"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:-1] == [
        f"{path}:4: colour: unknown key 'colour' (known: checkpoint_interval, claim_chunk, dispatch_interval, idempotency_retention, keys, "
        "lease_margin, pool_size, providers, retention_days, stats_interval, sweep_interval, tenants)",
        f"{path}:2: keys[0].key: the API key: a string of 16 or more characters",
        f"{path}:3: tenants: a list of ids",
        f"{path}:5: sweep_interval: seconds between 0.001 and 86400, got 'soon'",
        f"{path}:6: claim_chunk: a whole number between 1 and 100000, got 0",
    ]
    assert not (tmp_path / "x.db").exists()  # nothing was started


def test_mapping_preview_payload_that_is_not_utf8_is_one_located_error(tmp_path, capsys):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("fields:\n  id: {from: id}\n")
    payload = tmp_path / "p.json"
    payload.write_bytes(b'{"id": "caf\xe9"}')
    assert main(["mapping", "preview", str(mapping), "--payload", str(payload)]) == 2
    assert capsys.readouterr().err == (f"{payload}:1: the payload is not UTF-8 text: byte 0xe9 at column 12 cannot be "
                                       "decoded; save it as UTF-8\n")
