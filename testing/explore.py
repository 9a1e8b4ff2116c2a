"""``dispatchsim explore``: a scenario file whose marked values hypothesis varies, shrinking any failure.

A scenario keeps its configurations and expectations; values written as one of these markers vary
from example to example (every marker shrinks toward its first or lowest choice, so a failure
shrinks toward the simplest scenario that still fails):

``{between: [10m, 6h]}``
    a duration (whole seconds), a rate (``{between: [1/s, 50/s]}``, one unit for both bounds) or a
    number (integers if both bounds are) from the lower to the upper bound, inclusive.
``{one_of: [svix, reten, {preset: reteno}]}``
    one of the listed values (each may hold markers of its own).
``{maybe: true}`` / ``{maybe: VALUE}``
    present or not. As a timeline action (``crash: {maybe: true}``) the whole timeline entry is
    there or not; ``true`` stands for the action's default (null), anything else is the value
    when present. Elsewhere the key (or list item) is there with VALUE, or left out.

Each example is written out as a plain scenario file, validated and run like ``dispatchsim run``
on the virtual clock; the first failing example is shrunk and printed, ready to run.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase
from hypothesis.errors import Flaky
from hypothesis.internal.conjecture.engine import ExitReason
from hypothesis.statistics import collector

from dispatchsim.errors import Collector
from dispatchsim.yamlfile import load_yaml, read_text
from dispatchsim.providers.durations import parse_duration
from dispatchsim.scenarios import RunResult, Scenario, ScenarioError, parse_scenario, run_scenario

from .simulate import duration_text, scenario_yaml

MARKERS = ("between", "one_of", "maybe")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


class _Absent:
    """A ``maybe`` that came out absent: its key, list item or timeline entry is left out."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


@dataclass(frozen=True)
class Variable:
    """One marked value of the file: where it is and what it ranges over."""

    path: tuple[str | int, ...]
    line: int | None
    spec: str  #: as written, e.g. ``between 10m and 6h``

    @property
    def key(self) -> str:
        return _dotted(self.path)


@dataclass(frozen=True)
class Counterexample:
    """The shrunk failing example: the scenario text and the expectations it broke."""

    text: str
    result: RunResult
    values: dict[str, Any]  #: variable key -> the value it took


@dataclass
class Exploration:
    """What ``explore`` found: how many examples ran, and the minimal failing one (if any)."""

    scenario: str
    variables: list[Variable]
    examples: int = 0
    counterexample: Counterexample | None = None
    failures_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    shrink_rounds: int = 0  #: rounds of shrinking (a round ends after hypothesis' MAX_SHRINKS improvements)
    shrink_cut_short: bool = False  #: every round used all its shrinks: a smaller counterexample may exist

    @property
    def ok(self) -> bool:
        return self.counterexample is None


class _Failed(Exception):
    """An example broke an expectation (carried to the end of hypothesis' shrinking)."""

    def __init__(self, example: Counterexample) -> None:
        super().__init__("expectations failed")
        self.example = example


# -- reading the markers -----------------------------------------------------------------------

class Template:
    """A scenario file with markers: its variables, and a strategy for concrete scenario documents."""

    def __init__(self, text: str, *, source: str, base_dir: Path | None = None) -> None:
        self.source = source
        self.base_dir = base_dir
        self.data, self.lines = load_yaml(text, source=source, error=ScenarioError)
        if not isinstance(self.data, dict):
            raise ScenarioError("expected a scenario (a mapping with name, providers, configurations …)",
                                source=source, line=1)
        self.variables: list[Variable] = []
        self._values: dict[str, Any] = {}
        self.found = Collector()  # every marker is checked: the file's mistakes are reported together
        self.strategy = self._node(self.data, ())
        self.found.errors.sort(key=lambda e: e.line or 0)
        self.found.raise_if_any(ScenarioError)
        if not self.variables:
            raise ScenarioError("nothing is marked variable: write a value as {between: [LOW, HIGH]}, "
                                "{one_of: [A, B]} or {maybe: true} to let explore vary it", source=source, line=1)

    @classmethod
    def load(cls, path: str | Path) -> Template:
        p = Path(path)
        return cls(read_text(p, error=ScenarioError), source=str(path), base_dir=p.parent)

    def fail(self, path: tuple[str | int, ...], message: str) -> ScenarioError:
        return ScenarioError(message, source=self.source, line=_line(self.lines, path), field=_dotted(path) or None)

    # -- strategies, built once from the tree

    def _node(self, node: Any, path: tuple[str | int, ...]) -> st.SearchStrategy[Any]:
        if isinstance(node, dict) and len(node) == 1 and next(iter(node)) in MARKERS:
            kind, arg = next(iter(node.items()))
            with self.found.guard():
                return self._marker(kind, arg, path)
            return st.nothing()  # reported: the template is refused
        if isinstance(node, dict):
            keys = list(node)
            parts = [self._node(node[k], path + (k,)) for k in keys]
            return st.tuples(*parts).map(lambda vals, keys=keys, path=path: _mapping(keys, vals, path))
        if isinstance(node, list):
            parts = [self._node(v, path + (i,)) for i, v in enumerate(node)]
            return st.tuples(*parts).map(lambda vals: [v for v in vals if v is not ABSENT])
        return st.just(node)

    def _marker(self, kind: str, arg: Any, path: tuple[str | int, ...]) -> st.SearchStrategy[Any]:
        var = Variable(path=path, line=_line(self.lines, path), spec=_spec_text(kind, arg))
        self.variables.append(var)
        if kind == "between":
            inner = self._between(arg, path + ("between",))
        elif kind == "one_of":
            if not isinstance(arg, list) or not arg:
                raise self.fail(path + ("one_of",), "expected a non-empty list of values to choose from")
            inner = st.one_of(*[self._node(v, path + ("one_of", i)) for i, v in enumerate(arg)])
        else:
            if arg is False or arg is None:
                raise self.fail(path + ("maybe",), "expected true (the default value when present) or the value "
                                                   "to use when present")
            present = st.just(None) if arg is True else self._node(arg, path + ("maybe",))
            inner = st.one_of(st.just(ABSENT), present)
        return inner.map(lambda v, key=var.key: self._note(key, v))

    def _note(self, key: str, value: Any) -> Any:
        self._values[key] = value
        return value

    def _between(self, arg: Any, path: tuple[str | int, ...]) -> st.SearchStrategy[Any]:
        if not isinstance(arg, list) or len(arg) != 2 or any(isinstance(v, (bool, dict, list)) or v is None
                                                              for v in arg):
            raise self.fail(path, "expected two bounds, e.g. [10m, 6h], [1/s, 50/s] or [1, 20]")
        lo, hi = arg
        if all(isinstance(v, (int, float)) for v in arg):
            if lo > hi:
                raise self.fail(path, f"the lower bound {lo} is above the upper bound {hi}")
            if all(isinstance(v, int) for v in arg):
                return st.integers(lo, hi)
            return st.floats(float(lo), float(hi), allow_nan=False, allow_infinity=False)
        rates = [_RATE.match(str(v)) for v in arg]
        if all(rates):
            units = {_unit(m.group(2)) for m in rates}  # type: ignore[union-attr]
            if len(units) != 1:
                raise self.fail(path, "give both rates in one unit, e.g. [1/s, 50/s]")
            unit = units.pop()
            a, b = (float(m.group(1)) for m in rates)  # type: ignore[union-attr]
            if a > b:
                raise self.fail(path, f"the lower bound {lo} is above the upper bound {hi}")
            if a.is_integer() and b.is_integer():
                return st.integers(int(a), int(b)).map(lambda n: f"{n}/{unit}")
            return st.floats(a, b).map(lambda x: f"{round(x, 3):g}/{unit}")
        try:
            a, b = parse_duration(lo), parse_duration(hi)
        except ValueError as exc:
            raise self.fail(path, f"{exc}; bounds are two durations (10m, 6h), two rates (1/s, 50/s) or two "
                                  "numbers") from None
        if a > b:
            raise self.fail(path, f"the lower bound {lo} is above the upper bound {hi}")
        if math.ceil(a) > math.floor(b):
            raise self.fail(path, "no whole second lies between the bounds")
        plain = all(isinstance(v, (int, float)) or _NUMBER.match(str(v)) for v in arg)
        return st.integers(math.ceil(a), math.floor(b)).map(lambda s: s if plain else duration_text(s))

    # -- examples

    def check(self) -> None:
        """Validate the file before anything runs: every marker at its lowest (first, left out) and at
        its highest (last, present) must give a valid scenario."""
        for end in (0, -1):
            self.parse(_prune(_extreme(self.data, end)))

    def values(self) -> dict[str, Any]:
        """The value each variable took in the example drawn last (absent ones included)."""
        return {v.key: self._values.get(v.key, ABSENT) for v in self.variables}

    def parse(self, document: Mapping[str, Any]) -> tuple[str, Scenario]:
        """One concrete example as scenario text, parsed; an invalid example names the marked key."""
        text = scenario_yaml(document)
        try:
            return text, parse_scenario(text, source=f"{self.source} (example)", base_dir=self.base_dir)
        except ScenarioError as exc:
            path = _path(exc.key or "")
            raise ScenarioError(f"an example is not a valid scenario: {exc.message}", source=self.source,
                                line=_line(self.lines, path) if path else None, field=exc.key) from None


def _mapping(keys: list[Any], values: tuple[Any, ...], path: tuple[str | int, ...]) -> dict[str, Any]:
    return {k: v for k, v in zip(keys, values) if v is not ABSENT}


def _extreme(node: Any, end: int) -> Any:
    """The document with every marker at one end of its range (``0``: lowest, ``-1``: highest)."""
    if isinstance(node, dict) and len(node) == 1 and next(iter(node)) in MARKERS:
        kind, arg = next(iter(node.items()))
        if kind == "between":
            return _extreme_bound(arg[end])
        if kind == "one_of":
            return _extreme(arg[end], end)
        if end == 0:
            return ABSENT
        return None if arg is True else _extreme(arg, end)
    if isinstance(node, dict):
        return {k: v for k, v in ((k, _extreme(v, end)) for k, v in node.items()) if v is not ABSENT}
    if isinstance(node, list):
        return [v for v in (_extreme(v, end) for v in node) if v is not ABSENT]
    return node


def _extreme_bound(value: Any) -> Any:
    """A bound as the strategy would produce it (whole seconds for durations)."""
    if isinstance(value, (int, float)) or _RATE.match(str(value)) or _NUMBER.match(str(value)):
        return value
    seconds = parse_duration(value)
    return duration_text(math.ceil(seconds))


def _prune(document: dict[str, Any]) -> dict[str, Any]:
    """Drop timeline entries whose action came out absent (``crash: {maybe: true}``)."""
    timeline = document.get("timeline")
    if isinstance(timeline, list):
        document = {**document, "timeline": [e for e in timeline
                                             if not (isinstance(e, dict) and set(e) <= {"at"})]}
    return document


def _spec_text(kind: str, arg: Any) -> str:
    """A marker as a person reads it: ``between 10m and 6h``, ``one of reset | refuse``, ``maybe``."""
    if kind == "between" and isinstance(arg, list) and len(arg) == 2:
        return f"between {_flow(arg[0])} and {_flow(arg[1])}"
    if kind == "one_of" and isinstance(arg, list):
        return "one of " + " | ".join(_flow(v) for v in arg)
    return "maybe" if arg is True else f"maybe {_flow(arg)}"


def _flow(value: Any) -> str:
    """A value in YAML flow style, on one line."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _unit(name: str) -> str:
    return {"sec": "s", "second": "s", "min": "m", "minute": "m", "hour": "h"}.get(name, name)


def _dotted(path: tuple[str | int, ...]) -> str:
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _path(key: str) -> tuple[str | int, ...]:
    out: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        out.append(int(index) if index else name)
    return tuple(out)


def _line(lines: Mapping[tuple, int], path: tuple[str | int, ...]) -> int | None:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path)


# -- exploring ---------------------------------------------------------------------------------

class _Rounds(InMemoryExampleDatabase):
    """The exploration's example database: between two rounds of shrinking, the round's result moves
    to the secondary corpus. Replayed from the primary one, hypothesis takes an example for already
    shrunk and stops at once; from the secondary one it shrinks it again."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: set[bytes] = set()

    def save(self, key: bytes, value: bytes) -> None:
        self._keys.add(key)
        super().save(key, value)

    def demote(self) -> None:
        for key in [k for k in self._keys if not k.endswith((b".secondary", b".pareto"))]:  # the primary corpus
            for value in list(self.fetch(key)):
                self.move(key, key + b".secondary", value)


#: why hypothesis ends a shrink before nothing smaller fails: its budget of improvements (MAX_SHRINKS) or time
_CUT_SHORT = frozenset({ExitReason.max_shrinks.value, ExitReason.very_slow_shrinking.value})

#: rounds of shrinking at most: hypothesis stops a shrink after MAX_SHRINKS improvements, and a
#: scenario with many markers can need more; each further round starts from the last round's result
MAX_SHRINK_ROUNDS = 8


def explore(template: Template, *, examples: int = 50, seed_value: int = 0,
            on_example: Callable[[int, bool], None] | None = None) -> Exploration:
    """Run up to ``examples`` variations (hypothesis, seeded) and shrink the first failure.

    An example fails when any expectation of the file fails (as ``dispatchsim run`` would report);
    an example that is not a valid scenario raises :class:`ScenarioError` naming the marked key.
    Hypothesis ends a shrink after 500 improvements (or when shrinking is very slow): a shrink it
    cut short goes on in another round from its result (through an in-memory example database), up to
    :data:`MAX_SHRINK_ROUNDS`; :attr:`Exploration.shrink_cut_short` says when even those ran out.
    """
    out = Exploration(scenario=template.source, variables=template.variables)
    template.check()
    stopped: list[str] = []  # why hypothesis ended each round ("stopped-because" of its statistics)

    def run_one(document: dict[str, Any]) -> None:
        document = _prune(document)
        values = template.values()
        text, scenario = template.parse(document)
        result = run_scenario(scenario)
        out.examples += 1
        if on_example is not None:
            on_example(out.examples, result.ok)
        if not result.ok:
            out.failures_seen += 1
            raise _Failed(Counterexample(text=text, result=result, values=values))

    saved = _Rounds()  # this exploration's own: the next round starts from the last one's example

    def round_of(phases: list[Phase]) -> Counterexample | None:
        # settings outermost: @seed alone turns the example database off, and the rounds need it
        test = settings(max_examples=examples, database=saved, deadline=None, derandomize=False, phases=phases,
                        report_multiple_bugs=False, print_blob=False,
                        suppress_health_check=list(HealthCheck))(seed(seed_value)(given(template.strategy)(run_one)))
        try:
            with collector.with_value(lambda stats: stopped.append(stats.get("stopped-because", ""))):
                test()
        except _Failed as exc:
            return exc.example
        except Flaky as exc:  # pragma: no cover - runs are deterministic per seed
            raise ScenarioError(f"an example passed and failed on identical input ({exc})", source=template.source)
        return None

    out.counterexample = round_of([Phase.generate, Phase.shrink])
    rounds = 1
    while out.counterexample is not None and stopped and stopped[-1] in _CUT_SHORT:
        if rounds == MAX_SHRINK_ROUNDS:
            out.shrink_cut_short = True
            break
        saved.demote()
        further = round_of([Phase.reuse, Phase.shrink])
        rounds += 1
        if further is None or further.text == out.counterexample.text:
            break
        out.counterexample = further
    out.shrink_rounds = rounds
    return out


def report(found: Exploration, *, examples: int, seed_value: int) -> str:
    """The text ``explore`` prints: a one-line verdict, then the minimal scenario when one failed."""
    if found.ok:
        varied = "".join(f"      {v.key}: {v.spec}\n" for v in found.variables)
        return (f"PASS  {found.scenario}: {found.examples} examples (seed {seed_value}), every expectation held; "
                f"varied:\n{varied}")
    ce = found.counterexample
    assert ce is not None
    failed = [c for c in ce.result.checks if not c.ok]
    shrunk = (f"shrinking stopped after {found.shrink_rounds} round{'s' if found.shrink_rounds != 1 else ''} with the smallest counterexample below; a smaller "
              "one may exist" if found.shrink_cut_short else "shrunk to the minimal counterexample below")
    lines = [f"FAIL  {found.scenario}: an expectation failed ({found.examples} runs, seed {seed_value}); {shrunk}"]
    for c in failed:
        where = f" (line {c.line})" if c.line else ""
        lines.append(f"      {c.name}{where}: expected {c.expected}; observed {c.observed}")
    lines.append("")
    lines.append(f"# Minimal counterexample found by: dispatchsim explore {_as_argument(found.scenario)} --examples {examples} "
                 f"--seed {seed_value}")
    absent = [v.path for v in found.variables if ce.values.get(v.key, ABSENT) is ABSENT]
    for v in found.variables:
        value = ce.values.get(v.key, ABSENT)
        unused = any(p != v.path and (v.path[:len(p)] == p or (p[0] == "timeline" and len(p) == 3
                                                               and v.path[:2] == p[:2])) for p in absent)
        shown = "not used" if unused else "left out" if value is ABSENT else _flow(value)
        lines.append(f"#   {v.key} = {shown}   ({v.spec}{f', line {v.line}' if v.line else ''})")
    lines.append("# Run it: dispatchsim run THIS_FILE")
    return "\n".join(lines) + "\n" + ce.text


__all__ = ["ABSENT", "Counterexample", "Exploration", "MARKERS", "Template", "Variable",
           "explore", "report"]


def _as_argument(source: str) -> str:
    """What names ``source`` on the command line: a bundled exploration by its name, a file by its path."""
    from dispatchsim.scenarios.catalogue import BUNDLED, EXPLORE

    prefix = f"{BUNDLED}{EXPLORE}/"
    return source[len(prefix):-len(".yaml")] if source.startswith(prefix) else source
