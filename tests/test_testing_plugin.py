"""The pytest plugin as a user meets it: installed with the package (entry point ``pytest11``), used
from a plain project with pytest-asyncio, its fixtures on the virtual clock and torn down cleanly."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import asyncio

import pytest

from dispatchsim.testing import invariants

pytestmark = pytest.mark.asyncio


async def test_six_hours_of_outage_in_virtual_time(dispatch_engine, dispatch_endpoints, dispatch_recorder,
                                                   dispatch_history):
    endpoints = await dispatch_endpoints({"crm": {"behaviour": {
        "windows": [{"from": "0s", "to": "6h", "status": 503}], "else": {"status": 200}}}})
    await dispatch_engine.add_tenant("acme")
    await dispatch_engine.add_provider("crm")
    await dispatch_engine.add_config("acme", "crm", "SALESMAN", config_id="crm", activate=True,
                                     endpoint_url=endpoints.url("crm"), retry="reteno")
    for i in range(3):
        await dispatch_engine.create_activity("acme", {"channel": "SALESMAN", "commerceExternalId": f"C{i}"})
    summary = await dispatch_engine.run_until_idle()
    assert summary.idle and summary.elapsed > 6 * 3600
    assert [d.status for d in await dispatch_engine.deliveries()] == ["DISPATCHED"] * 3
    assert len(dispatch_recorder.records) > 3
    invariants.check(await dispatch_history(idle=summary.idle, expected_deliveries=3))


async def test_a_broken_promise_is_explained(dispatch_engine, dispatch_endpoints, dispatch_history):
    endpoints = await dispatch_endpoints({"crm": {"behaviour": {"status": 503}}})
    await dispatch_engine.add_tenant("acme")
    await dispatch_engine.add_provider("crm")
    await dispatch_engine.add_config("acme", "crm", "SALESMAN", config_id="crm", activate=True,
                                     endpoint_url=endpoints.url("crm"), retry={"max_attempts": 2})
    await dispatch_engine.create_activity("acme", {"channel": "SALESMAN"})
    await dispatch_engine.run_until_idle()
    history = await dispatch_history()
    assert invariants.all_settled(history) is None  # FAILED by policy is settled
    assert invariants.finished_within(30)(history) == (
        "delivery 1 ended FAILED at +1m00s, later than the bound +30s")


@pytest.mark.dispatchsim
async def test_marked_tests_run_on_the_virtual_clock_too():
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - start >= 3600


async def test_other_tests_keep_real_time():
    assert getattr(asyncio.get_running_loop(), "looptime_on", False) is False
'''


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_the_plugin_works_in_a_users_project(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makeini(f"""
        [pytest]
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=4)


def test_the_plugin_is_registered_through_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixtures="def test_listed(): pass\n")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    text = "\n".join(result.outlines)
    for name in ("dispatch_engine", "dispatch_endpoints", "dispatch_recorder", "dispatch_history"):
        assert name in text
    assert "dispatchsim/testing/plugin.py" in text.replace("\\", "/") or "testing/plugin.py" in text


FAILING_PROPERTY = '''
from hypothesis import given, settings, strategies as st


@settings(max_examples=5, database=None, derandomize=True)
@given(x=st.integers())
def test_fails(x):
    assert x < 0
'''


@pytest.mark.parametrize("schemathesis", [True, False], ids=["with-schemathesis", "without"])
def test_a_blank_counterexample_is_explained_when_schemathesis_blanked_it(pytester: pytest.Pytester,
                                                                           schemathesis: bool) -> None:
    """schemathesis's pytest plugin (installed in many API projects, and by our test extra) swaps
    hypothesis' printer for one that prints nothing, so a failing property reads ``x=,``: the plugin
    says why and how to read it; without schemathesis the example prints and nothing is added."""
    pytester.makepyfile(test_prop=FAILING_PROPERTY)
    args = ["-p", "no:cacheprovider", "-q"] + ([] if schemathesis else ["-p", "no:schemathesis"])
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(failed=1)
    text = "\n".join(result.outlines)
    note = ("dispatchsim: hypothesis' failing examples above print blank because another pytest plugin "
            "(schemathesis) replaced hypothesis' printer; run pytest with -p no:schemathesis to read them")
    if schemathesis:
        assert "x=," in text and note in text
    else:
        assert "x=0," in text and note not in text
