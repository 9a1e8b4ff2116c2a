"""``dispatchsim explore``: marked values vary, a failure is found and shrunk to a runnable scenario,
bad markers are refused with file:line, exit codes as ``run``."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import find, settings

from dispatchsim.cli import main
from dispatchsim.scenarios import ScenarioError, load_scenario, run_scenario
from dispatchsim.testing.explore import ABSENT, Template, explore

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ROOT / "scenarios" / "explore" / "budget_ends_before_outage.yaml"
FLAPPING = ROOT / "scenarios" / "explore" / "svix_ordered_flapping.yaml"

SMALL = """\
name: small
duration: 2d
providers:
  crm:
    behaviour:
      windows: [{from: 0s, to: {between: [10m, 6h]}, status: {one_of: [503, 500]}}]
      else: {status: 200}
tenants: [acme]
configurations:
  - {id: c, tenant: acme, provider: crm, retry: {one_of: [reteno, svix]}}
timeline:
  - at: 0s
    create: {rate: {between: [1/m, 5/m]}, for: 10m}
  - at: {between: [1m, 2h]}
    crash: {maybe: {restart_after: {between: [0, 300]}}}
expect:
  all_delivered: true
  order: strict
"""


def test_the_planted_bug_is_found_and_shrunk_to_the_shortest_losing_outage():
    found = explore(Template.load(PLANTED), examples=30, seed_value=1)
    ce = found.counterexample
    assert ce is not None
    assert ce.values["providers.crm.behaviour.windows[0].to"] == "2h35m06s"  # one second past the 5th try
    assert ce.values["timeline[0].create.count"] == 1
    assert ce.values["timeline[0].create.every"] == "0s"
    assert ce.values["timeline[1].crash"] is ABSENT
    assert [c.name for c in ce.result.checks if not c.ok] == ["all_delivered"]
    assert "crash:" not in ce.text and "between" not in ce.text
    assert found.examples <= 120  # generation and shrinking within a fixed budget


def test_explore_cli_prints_a_ready_to_run_counterexample(tmp_path, capsys):
    out = tmp_path / "new-folder" / "minimal.yaml"  # created, as run creates its outputs' folders
    assert main(["explore", str(PLANTED), "--examples", "30", "--seed", "1", "--out", str(out), "-q"]) == 1
    text = capsys.readouterr().out
    assert text.startswith(f"FAIL  {PLANTED}: an expectation failed")
    assert "all_delivered (line 24): expected all 1 deliveries DISPATCHED; observed FAILED 1" in text
    assert "#   providers.crm.behaviour.windows[0].to = 2h35m06s   (between 10m and 6h, line 12)" in text
    assert "#   timeline[1].crash = left out   (maybe, line 21)" in text
    assert "#   timeline[1].at = not used" in text
    assert text.endswith(out.read_text())
    # the printed scenario is a plain scenario file that fails the same way under `run`
    rerun = run_scenario(load_scenario(out))
    assert [c.name for c in rerun.checks if not c.ok] == ["all_delivered"]
    assert main(["run", str(out), "-q"]) == 1


def test_explore_passes_when_every_example_holds(tmp_path, capsys):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    out = tmp_path / "a" / "b.yaml"
    assert main(["explore", str(path), "--examples", "6", "--seed", "2", "--out", str(out), "-q"]) == 0
    assert not (tmp_path / "a").exists()  # nothing to write: no folder made for it
    text = capsys.readouterr().out
    assert text.startswith(f"PASS  {path}: 6 examples (seed 2), every expectation held; varied:\n")
    assert "      timeline[0].create.rate: between 1/m and 5/m\n" in text
    assert "      timeline[1].crash: maybe {restart_after: {between: [0, 300]}}\n" in text


def test_explore_lists_and_takes_the_bundled_explorations_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # from any directory, as after an install
    assert main(["explore", "--list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows] == ["budget_ends_before_outage", "svix_ordered_flapping"]
    assert main(["explore", "budget-ends-before-outage", "--examples", "30", "--seed", "1", "-q"]) == 1
    assert capsys.readouterr().out.startswith("FAIL  bundled:explore/budget_ends_before_outage.yaml: an expectation")
    assert main(["explore", "ordered_head_outage"]) == 2  # a scenario of `run`, not an exploration
    assert "no such file or bundled exploration; `dispatchsim explore --list`" in capsys.readouterr().err
    assert main(["explore"]) == 2 and "--list" in capsys.readouterr().err


def test_markers_shrink_toward_the_simplest_scenario(tmp_path):
    template = Template(SMALL, source="small.yaml")
    simplest = find(template.strategy, lambda d: True, settings=settings(database=None))
    assert simplest["providers"]["crm"]["behaviour"]["windows"][0] == {"from": "0s", "to": "10m00s", "status": 503}
    assert simplest["configurations"][0]["retry"] == "reteno"
    assert simplest["timeline"][0]["create"]["rate"] == "1/m"
    assert simplest["timeline"][1] == {"at": "1m00s"}  # the crash left out (the entry is then dropped)
    longest = find(template.strategy, lambda d: len(d["timeline"][1]) == 2
                   and d["timeline"][1]["crash"]["restart_after"] >= 200, settings=settings(database=None))
    assert longest["timeline"][1]["crash"] == {"restart_after": 200}
    assert [v.key for v in template.variables] == [
        "providers.crm.behaviour.windows[0].to", "providers.crm.behaviour.windows[0].status",
        "configurations[0].retry", "timeline[0].create.rate", "timeline[1].at", "timeline[1].crash",
        "timeline[1].crash.maybe.restart_after"]


@pytest.mark.parametrize("marker, message", [
    ("{between: [6h, 10m]}", "small.yaml:6: providers.crm.behaviour.windows[0].to.between: the lower bound 6h is "
                             "above the upper bound 10m"),
    ("{between: [10m]}", "small.yaml:6: providers.crm.behaviour.windows[0].to.between: expected two bounds, "
                         "e.g. [10m, 6h], [1/s, 50/s] or [1, 20]"),
    ("{between: [soon, later]}", "small.yaml:6: providers.crm.behaviour.windows[0].to.between: expected a duration "
                                 "like 30s, 10m, 6h or a number of seconds, got 'soon'; bounds are two durations "
                                 "(10m, 6h), two rates (1/s, 50/s) or two numbers"),
    ("{one_of: []}", "small.yaml:6: providers.crm.behaviour.windows[0].to.one_of: expected a non-empty list"),
    ("{maybe: false}", "small.yaml:6: providers.crm.behaviour.windows[0].to.maybe: expected true"),
    ("{between: [1/s, 5/m]}", "small.yaml:6: providers.crm.behaviour.windows[0].to.between: give both rates in "
                              "one unit"),
])
def test_bad_markers_are_refused_with_file_line_and_key(marker, message):
    text = SMALL.replace("{between: [10m, 6h]}", marker)
    with pytest.raises(ScenarioError) as exc:
        Template(text, source="small.yaml")
    assert str(exc.value).startswith(message)


def test_bad_input_exits_2_with_file_line(tmp_path, capsys):
    plain = tmp_path / "plain.yaml"
    plain.write_text(SMALL.replace("{between: [10m, 6h]}", "1h").replace("{one_of: [503, 500]}", "503")
                     .replace("{one_of: [reteno, svix]}", "reteno").replace("{between: [1/m, 5/m]}", "5/m")
                     .replace("{between: [1m, 2h]}", "1m").replace("{maybe: {restart_after: {between: [0, 300]}}}",
                                                                    "{restart_after: 0}"))
    assert main(["explore", str(plain), "-q"]) == 2
    assert f"{plain}:1: nothing is marked variable" in capsys.readouterr().err
    late = tmp_path / "late.yaml"
    late.write_text(SMALL.replace("{between: [1m, 2h]}", "{between: [1m, 3d]}"))
    assert main(["explore", str(late), "--examples", "20", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dispatchsim explore: invalid scenario: {late}:14: timeline[1].at: an example is not a "
                          "valid scenario:")
    assert main(["explore", str(tmp_path / "missing.yaml")]) == 2
    assert f"{tmp_path / 'missing.yaml'}: no such file; `dispatchsim explore --list`" in capsys.readouterr().err


@pytest.mark.slow
def test_svix_ordered_flapping_never_loses_or_reorders():
    """The worked example of docs/testing.md, answered with explore: no counterexample."""
    found = explore(Template.load(FLAPPING), examples=8, seed_value=1)
    assert found.ok, found.counterexample and found.counterexample.text
    assert found.examples == 8


def test_an_unusable_out_is_refused_before_exploring_and_a_failed_write_loses_nothing(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, why in ((tmp_path, "is a directory, expected a file"), (blocker / "x.yaml", "cannot create its folder")):
        assert main(["explore", str(PLANTED), "--examples", "30", "--out", str(out), "-q"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # nothing was explored
        assert captured.err.startswith(f"dispatchsim explore: --out {out}: {why}"), captured.err
    assert main(["explore", str(PLANTED), "--examples", "30", "--seed", "1", "--out", "/dev/full", "-q"]) == 2
    captured = capsys.readouterr()
    assert "# Run it: dispatchsim run THIS_FILE" in captured.out  # the counterexample is on standard output
    assert captured.err == ("dispatchsim explore: --out /dev/full: cannot write (No space left on device); "
                            "the counterexample is printed above\n")



def _shrink_budget(monkeypatch, improvements: int) -> None:
    """Hypothesis ends a shrink after 500 improvements (MAX_SHRINKS), which a scenario with many markers
    can use up (a reviewer's file: 614 runs, and the "minimal" example had count 10, a force retry and
    reten); reaching that takes half a minute, so here hypothesis gets a smaller budget per round."""
    from hypothesis.internal.conjecture import engine as conjecture

    monkeypatch.setattr(conjecture, "MAX_SHRINKS", improvements)


def test_a_shrink_cut_short_goes_on_in_rounds_to_the_minimal_counterexample(monkeypatch):
    """With 20 improvements a round, the first round stops at an outage of 2h40m11s; the second, started
    from it, reaches the minimal 2h35m06s the whole budget finds (test above). A second round that
    replayed the example as already shrunk (hypothesis' fast path for its primary corpus) ended at once."""
    _shrink_budget(monkeypatch, 20)
    found = explore(Template.load(PLANTED), examples=30, seed_value=1)
    assert found.shrink_rounds == 2 and not found.shrink_cut_short
    ce = found.counterexample
    assert ce is not None and ce.values["providers.crm.behaviour.windows[0].to"] == "2h35m06s"
    assert ce.values["timeline[0].create.count"] == 1 and ce.values["timeline[1].crash"] is ABSENT
    assert "shrunk to the minimal counterexample below" in report_of(found)


def test_a_shrink_that_runs_out_of_rounds_says_a_smaller_counterexample_may_exist(monkeypatch):
    from dispatchsim.testing import explore as explore_module

    _shrink_budget(monkeypatch, 3)
    monkeypatch.setattr(explore_module, "MAX_SHRINK_ROUNDS", 1)
    found = explore(Template.load(PLANTED), examples=30, seed_value=1)
    assert found.shrink_cut_short and found.shrink_rounds == 1
    assert found.counterexample is not None
    assert found.counterexample.values["providers.crm.behaviour.windows[0].to"] != "2h35m06s"
    assert ("); shrinking stopped after 1 round with the smallest counterexample below; a smaller one may exist"
            in report_of(found))
    assert "minimal counterexample below" not in report_of(found)


def test_a_shrink_that_ends_by_itself_takes_one_round():
    """Only hypothesis' own reason for stopping starts another round (not the number of failing runs)."""
    found = explore(Template(REFUSED, source="refused.yaml"), examples=10, seed_value=4)
    assert found.shrink_rounds == 1 and not found.shrink_cut_short and found.counterexample is not None


def report_of(found) -> str:
    from dispatchsim.testing.explore import report

    return report(found, examples=30, seed_value=1)


REFUSED = """\
name: refused
seed: 1
duration: 2d
providers:
  crm:
    behaviour:
      windows:
        - {from: 0s, to: {between: [31m, 3h]}, fault: refuse}
      else: {status: 200}
tenants: [acme]
configurations:
  - {id: c1, tenant: acme, provider: crm, retry: {one_of: [reteno, svix]}}
timeline:
  - at: 0s
    create: {count: {between: [1, 10]}}
expect:
  all_delivered: true
"""


def test_every_bad_marker_of_a_file_is_reported_at_once():
    """Four markers wrong in one file: only the first was reported, the next one after fixing it, and so on."""
    text = (SMALL.replace("{between: [10m, 6h]}", "{between: [6h, 10m]}")
            .replace("{one_of: [503, 500]}", "{one_of: []}")
            .replace("{one_of: [reteno, svix]}", "{maybe: false}")
            .replace("{between: [1/m, 5/m]}", "{between: [1/s, 5/m]}"))
    with pytest.raises(ScenarioError) as exc:
        Template(text, source="small.yaml")
    assert [(e.line, e.field) for e in exc.value.errors] == [
        (6, "providers.crm.behaviour.windows[0].to.between"), (6, "providers.crm.behaviour.windows[0].status.one_of"),
        (10, "configurations[0].retry.maybe"), (13, "timeline[0].create.rate.between")]
