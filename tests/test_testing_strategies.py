"""The public strategies generate inputs the engine accepts, and shrink toward the simplest case."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from dispatchsim.engine import Engine, run_virtual
from dispatchsim.engine.config import build_snapshot
from dispatchsim.engine.policy import retry_policy_from
from dispatchsim.providers import EndpointSet, parse_behaviour, parse_config
from dispatchsim.scenarios import parse_scenario
from dispatchsim.testing import example_scenario, invariants, scenario_yaml, simulate
from dispatchsim.testing import strategies as ds

QUICK = settings(max_examples=60, deadline=None, database=None)
# The default suite replays the same examples every run; DISPATCHSIM_TESTING_EXAMPLES=200 explores new ones.
_MORE = os.environ.get("DISPATCHSIM_TESTING_EXAMPLES")
RUNS = settings(max_examples=int(_MORE or "12"), deadline=None, database=None, derandomize=not _MORE,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow])
URL = {"endpoint_url": "http://127.0.0.1:1/hooks"}


def _minimal(strategy, condition=lambda x: True):
    return find(strategy, condition, settings=settings(database=None, max_examples=2000))


# -- valid: the engine's own validation accepts every generated value ----------------------------

@QUICK
@given(fields=ds.configurations())
def test_configurations_pass_the_engines_validation(fields):
    snap, _ = build_snapshot({**fields, **URL})
    assert snap.retry == retry_policy_from(fields["retry"])


@QUICK
@given(policy=ds.retry_policies(finite=True))
def test_finite_retry_policies_have_a_budget(policy):
    assert retry_policy_from(policy).budget is not None


@QUICK
@given(policy=ds.retry_policies(finite=False))
def test_endless_retry_policies_never_give_up(policy):
    assert retry_policy_from(policy).budget is None


@QUICK
@given(behaviour=ds.endpoint_behaviours(), windows=ds.outage_windows(horizon=3600))
def test_endpoint_behaviours_parse_and_outages_are_disjoint(behaviour, windows):
    parse_behaviour(behaviour)
    parse_behaviour(ds.down_between(windows))
    assert all(0 <= a < b <= 3600 for a, b in windows)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(windows, windows[1:]))


@QUICK
@given(activities=ds.activity_streams(tenants=("acme", "beta"), messages=True), crashes=ds.crash_points(),
       endpoint=ds.flapping_endpoints())
def test_examples_are_valid_scenario_files(activities, crashes, endpoint):
    data = example_scenario(configuration={"retry": "reteno"}, endpoint=endpoint, activities=activities,
                            crashes=crashes)
    scenario = parse_scenario(scenario_yaml(data))
    assert sum(ev.kind == "create" for ev in scenario.timeline) == len(activities)
    assert sum(ev.kind == "crash" for ev in scenario.timeline) == len(crashes)


@settings(max_examples=25, deadline=None, database=None)
@given(fields=ds.configurations(), stream=ds.activity_streams(max_activities=5, messages=True))
def test_an_engine_accepts_generated_configurations_and_activities(fields, stream):
    async def main():
        eng = await Engine.open(":memory:", virtual=True, seed=1)
        endpoints = EndpointSet(parse_config({"endpoints": {"crm": {}}}), now=eng.clock.now)
        await endpoints.start()
        try:
            await eng.add_tenant("acme")
            await eng.add_provider("crm")
            await eng.add_config("acme", "crm", "SALESMAN", config_id="c", endpoint_url=endpoints.url("crm"),
                                 activate=True, **fields)
            for a in stream:
                await eng.create_activity(a.tenant, {"channel": a.channel, **a.fields})
            return len((await eng.list_activities()).items), len(await eng.deliveries())
        finally:
            await eng.close()
            await endpoints.stop()

    tasks = sum(a.fields.get("type", "TASK") == "TASK" for a in stream)
    assert run_virtual(main()) == (len(stream), tasks)


# -- shrinking: the minimal example is the simplest case ------------------------------------------

def test_strategies_shrink_to_the_simplest_case():
    assert _minimal(ds.retry_policies()) == "reten"
    assert _minimal(ds.retry_presets()) == "reten"
    assert _minimal(ds.ordering_policies()) == {"mode": "ordered", "on_exhausted": "skip"}
    assert _minimal(ds.circuit_breakers()) is None
    assert _minimal(ds.auto_disables()) is None
    assert _minimal(ds.configurations()) == {"retry": "reten", "ordering": {"mode": "ordered", "on_exhausted": "skip"},
                                             "timeouts": {"connect": 5, "total": 30}}
    assert _minimal(ds.failures()) == {"status": 503}
    assert _minimal(ds.outage_windows()) == ()
    assert _minimal(ds.endpoint_behaviours()) == {"status": 200}
    assert _minimal(ds.flapping_endpoints()) == {"windows": [{"from": 0, "to": 1, "status": 503}],
                                                 "else": {"status": 200}}
    assert _minimal(ds.crash_points()) == ()
    assert _minimal(ds.activity_streams()) == (ds.ActivityAt(at=0, fields={"commerceExternalId": "C1"}),)


def test_shrinking_keeps_only_what_the_failure_needs():
    # "an outage of at least an hour" shrinks to exactly one hour, at the start
    assert _minimal(ds.outage_windows(), lambda w: any(b - a >= 3600 for a, b in w)) == ((0, 3600),)
    # "a policy that gives up" shrinks to the simplest finite policy: the reten preset
    assert _minimal(ds.retry_policies(), lambda p: retry_policy_from(p).budget is not None) == "reten"
    # "jittered" shrinks to the first jitter mode with seed 0, everything else as simple as it gets
    jittered = _minimal(ds.retry_policies(), lambda p: isinstance(p, dict) and "jitter" in p)
    assert jittered == {"preset": "reten", "jitter": "full", "seed": 0}
    # "three activities" shrinks to three at the same moment, same partition
    assert [a.at for a in _minimal(ds.activity_streams(), lambda s: len(s) >= 3)] == [0, 0, 0]
    assert _minimal(ds.crash_points(), lambda c: len(c) >= 1) == (ds.Crash(at=0, restart_after=0),)


# -- and what they generate, run for real, keeps the engine's promises ----------------------------

@RUNS
@given(config=ds.configurations(ordering=ds.ordering_policies()), endpoint=ds.flapping_endpoints(horizon=7200),
       activities=ds.activity_streams(max_activities=6, horizon=3600), crashes=ds.crash_points(horizon=7200))
def test_generated_runs_keep_every_invariant(config, endpoint, activities, crashes):
    history = simulate(configuration=config, endpoint=endpoint, activities=activities, crashes=crashes)
    invariants.check(history)
