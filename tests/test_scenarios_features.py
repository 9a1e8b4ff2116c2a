"""A scenario feature is one class in one table: an expectation or a timeline action added to its table is
parsed, checked or applied, and reported, with no other change; every registered kind is exercised."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dispatchsim.scenarios import ScenarioError, expect, parse_scenario, run_scenario
from dispatchsim.scenarios.actions import ACTIONS, Action
from dispatchsim.scenarios.expect import EXPECTATIONS, Check, Expectation, kinds
from dispatchsim.scenarios.parsing import KeyPath, ParseContext

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = """\
name: features
seed: 1
duration: 1h
providers:
  crm: {behaviour: {status: 200}}
configurations:
  - {id: c, tenant: acme, provider: crm}
timeline:
  - at: 0s
    create: {count: 3}
  - at: 5m
    say: the operator looks at the dashboard
expect:
  all_delivered: true
  at_most_posts: 2
"""


@dataclass(frozen=True, kw_only=True)
class AtMostPosts(Expectation):
    """A new kind written in a test: at most N POSTs reached the receivers."""

    key: ClassVar[str | None] = "at_most_posts"
    limit: int

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Expectation:
        return cls(limit=ctx.reader.integer(value, path, lo=1), line=ctx.reader.line(path))

    def check(self, r: Any) -> list[Check]:
        posts = sum(1 for x in r.recorder.records if x.method == "POST")
        return [self.result("at_most_posts", posts <= self.limit, f"<= {self.limit} POSTs", f"{posts} POSTs")]


@dataclass(frozen=True, kw_only=True)
class Say(Action):
    """A new action written in a test: put a line in the run's timeline."""

    key: ClassVar[str] = "say"
    text: str

    @classmethod
    def parse(cls, value: Any, path: KeyPath, ctx: ParseContext) -> Action:
        return cls(text=ctx.reader.string(value, path))

    async def apply(self, run: Any, at: float, step: int) -> None:
        run.note(f"said: {self.text}")


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(expect, "EXPECTATIONS", (*EXPECTATIONS, AtMostPosts))
    monkeypatch.setitem(ACTIONS, Say.key, Say)


def test_a_new_expectation_and_action_need_only_their_class_and_table_entry(registered):
    scenario = parse_scenario(SCENARIO, source="f.yaml")
    assert isinstance(scenario.expect["at_most_posts"], AtMostPosts)
    assert [e.kind for e in scenario.timeline] == ["create", "say"]
    result = run_scenario(scenario)
    assert (300.0, "said: the operator looks at the dashboard") in result.key_events
    check = [c for c in result.checks if c.name == "at_most_posts"]
    assert check == [Check("at_most_posts", False, "<= 2 POSTs", "3 POSTs", 15)]
    assert [c.name for c in result.checks][-1] == "at_most_posts"  # the table's order is the report's order


def test_a_new_kind_gets_located_errors_from_its_own_parse(registered):
    text = SCENARIO.replace("at_most_posts: 2", "at_most_posts: 0").replace("say: the operator", "say: [1]\n#")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="f.yaml")
    assert [e.located() for e in info.value.errors] == [
        "f.yaml:12: timeline[1].say: expected a non-empty string, got a list",
        "f.yaml:16: expect.at_most_posts: expected an integer >= 1, got 0",
    ]


def test_without_the_table_entry_the_file_key_is_unknown():
    with pytest.raises(ScenarioError) as info:
        parse_scenario(SCENARIO, source="f.yaml")
    messages = [e.message for e in info.value.errors]
    assert any(m.startswith("unknown key 'say' in a timeline event") for m in messages)
    assert any(m.startswith("unknown key 'at_most_posts' in the expectations") for m in messages)


def test_the_tables_are_consistent():
    assert all(cls.key == key for key, cls in ACTIONS.items())
    keyed = [cls.key for cls in EXPECTATIONS if cls.key is not None]
    assert len(keyed) == len(set(keyed)) == len(kinds())
    assert all(issubclass(cls, Expectation) for cls in EXPECTATIONS)
    assert all(issubclass(cls, Action) for cls in ACTIONS.values())


def test_every_registered_kind_is_used_by_a_bundled_scenario_or_a_test():
    """Adding a kind means adding its test: each key appears in the catalogue or the scenario tests."""
    corpus = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "scenarios").glob("*.yaml"))
    corpus += (ROOT / "tests" / "test_scenarios_spec.py").read_text(encoding="utf-8")
    unused = [key for key in [*kinds(), *ACTIONS] if not re.search(rf"\b{key}:", corpus)]
    assert unused == []
