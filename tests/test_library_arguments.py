"""The library's public calls refuse a wrong argument with the project's own error, naming it, before
doing anything: never sqlite3's or Python's own error, never a plausible answer to a wrong question.

Real engine on a temp SQLite file (the ``engine`` fixture), virtual clock.
"""
from __future__ import annotations

import inspect
import math
import typing
from typing import Any

import pytest

from dispatchsim.engine import ClockError, DispatchsimError, Engine, InvalidArgument, Status

ACT = {"channel": "SALESMAN", "commerceExternalId": "COM-001"}


@pytest.mark.parametrize(("call", "argument", "says"), [
    (lambda e: e.force_retry([1]), "delivery_id", "must be an integer, got list"),
    (lambda e: e.force_retry(True), "delivery_id", "got a bool"),
    (lambda e: e.skip(2**70), "delivery_id", "at most 9223372036854775807"),
    (lambda e: e.delivery("1"), "delivery_id", "must be an integer, got str"),
    (lambda e: e.attempts("x"), "delivery_id", "must be an integer"),
    (lambda e: e.list_activities(limit="x"), "limit", "must be an integer, got str"),
    (lambda e: e.list_activities(limit=-1), "limit", "at least 1, got -1"),
    (lambda e: e.list_activities(limit=0), "limit", "at least 1, got 0"),
    (lambda e: e.list_activities(after=-5), "after", "at least 0"),
    (lambda e: e.list_activities(channel=["SALESMAN"]), "channel", "must be text, got list"),
    (lambda e: e.list_activities(created_from=math.nan), "created_from", "finite number"),
    (lambda e: e.list_activities(dispatch_status="SENT"), "dispatch_status", "one of DISPATCHED, FAILED, READY"),
    (lambda e: e.submit_result("a", "x"), "result", "must be a dict, got str"),
    (lambda e: e.submit_result("a", None), "result", "required, got None"),
    (lambda e: e.config(["c"]), "config_id", "must be text, got list"),
    (lambda e: e.deliveries(status="SENT"), "status", "one of"),
    (lambda e: e.deliveries(limit="10"), "limit", "must be an integer"),
    (lambda e: e.create_activities("acme", None), "items", "required, got None (expected a list)"),
    (lambda e: e.create_activities("acme", ACT), "items", "must be a list, got dict"),
    (lambda e: e.add_tenant("t2", 5), "name", "must be text, got int"),
    (lambda e: e.activity("\ud800"), "activity_id", "not valid Unicode"),
    (lambda e: e.force_retry_where(since="yesterday"), "since", "must be a number, got str"),
    (lambda e: e.run_for(math.nan), "seconds", "finite number"),
    (lambda e: e.run_for(-1), "seconds", "at least 0"),
    (lambda e: e.run_until_idle(max_time="1h"), "max_time", "must be a number"),
])
async def test_a_wrong_argument_is_refused_naming_it(engine: Engine, call: Any, argument: str, says: str) -> None:
    await engine.add_tenant("acme")
    before = await engine.counts(), await engine.list_activities()
    with pytest.raises(InvalidArgument) as err:
        await call(engine)
    assert err.value.field == argument and isinstance(err.value, DispatchsimError)
    assert str(err.value).startswith(f"{argument}: ") and says in str(err.value) and "(Engine." in str(err.value)
    assert (await engine.counts(), await engine.list_activities()) == before  # nothing done


async def test_right_arguments_still_pass(engine: Engine) -> None:
    """Enum members and their values, integers for numbers, None for optional ones."""
    await engine.add_tenant("acme")
    act = await engine.create_activity("acme", ACT)
    assert (await engine.list_activities(dispatch_status=Status.READY, created_from=0, limit=1)).items == []
    assert await engine.deliveries(status=Status.READY, limit=5) == []
    assert await engine.deliveries(status="READY", activity_id=act["id"]) == []
    page = await engine.list_activities(tenant_id="acme", created_to=None, after=0, limit=2**63 - 2)
    assert [a["id"] for a in page.items] == [act["id"]]
    # calls that worked before the checks still do: no bound (infinity) where the bound is infinite,
    # a tuple for a list
    import math

    assert await engine.create_activities("acme", ()) == []
    assert len(await engine.create_activities("acme", (ACT,))) == 1
    assert (await engine.run_until_idle(max_time=math.inf)).idle
    assert await engine.stop(deadline=math.inf) == 0


_PLACEHOLDERS = {str: "x", int: 1, float: 1.0, bool: False, dict: {}, list: []}


def _plain(hint: Any) -> type | None:
    """The first plain kind of an annotation (what a right value is), or None when it has none."""
    for part in typing.get_args(hint) or (hint,):
        base = typing.get_origin(part) or part
        if base in _PLACEHOLDERS:
            return base
        if isinstance(base, type) and issubclass(base, Status):
            return str
    return None


def _public_calls() -> list[tuple[str, str]]:
    out = []
    for name, fn in vars(Engine).items():
        if name.startswith("_") or not inspect.iscoroutinefunction(fn):
            continue
        hints = typing.get_type_hints(inspect.unwrap(fn))
        for pname, param in inspect.signature(fn).parameters.items():
            if pname not in ("self", "data") and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL) \
                    and _plain(hints.get(pname)) is not None:
                out.append((name, pname))
    return out


@pytest.mark.parametrize(("method", "argument"), _public_calls())
async def test_every_public_call_checks_every_plain_argument(engine: Engine, method: str, argument: str) -> None:
    """Each public coroutine method, each argument annotated with a plain kind: an object of no such
    kind is refused by name before the method runs (the others get right placeholders)."""
    fn = getattr(engine, method)
    hints = typing.get_type_hints(inspect.unwrap(getattr(Engine, method)))
    args: list[Any] = []
    kw: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        kind = _plain(hints.get(pname))
        value = object() if pname == argument else (
            "READY" if kind is str and "status" in pname else _PLACEHOLDERS.get(kind, None) if kind else None)
        if param.default is param.empty or pname == argument:
            if param.kind is param.KEYWORD_ONLY:
                kw[pname] = value
            else:
                args.append(value)
    with pytest.raises(InvalidArgument) as err:
        await fn(*args, **kw)
    assert err.value.field == argument and "got object" in str(err.value)


# ---------------------------------------------------------------------------------------------- Engine.open


@pytest.mark.parametrize(("kw", "argument", "says"), [
    ({"path": 5}, "path", "must be a SQLite file path (str or pathlib.Path), ':memory:' or a postgresql:// URL"),
    ({"path": None}, "path", "got NoneType"),
    ({"path": "  "}, "path", "must not be empty"),
    ({"clock": "virtual"}, "clock", "must be a clock (dispatchsim.VirtualClock() or RealClock()), got str"),
    ({"virtual": "yes"}, "virtual", "must be True or False, got 'yes'"),
    ({"seed": "1"}, "seed", "must be an integer or None, got '1'"),
    ({"durable": "no"}, "durable", "must be True, False or None"),
    ({"scratch": 1}, "scratch", "must be True or False, got 1"),
    ({"pool_size": 0}, "pool_size", "from 1 to 1000, got 0"),
    ({"owner": "me"}, "owner", "must be an OwnerLock"),
    ({"concurrency": -1}, "concurrency", "from 1 to 10000, got -1"),
    ({"concurrency": "5"}, "concurrency", "got '5'"),
    ({"lease_margin": -1}, "lease_margin", "above 0, got -1"),
    ({"lease_margin": math.nan}, "lease_margin", "above 0, got nan"),
    ({"log_format": "xml"}, "log_format", "must be json or console, got 'xml'"),
    ({"log_stream": "out.txt"}, "log_stream", "must be a text stream"),
    ({"sender": object()}, "sender", "must be a Sender or None"),
])
async def test_engine_open_refuses_a_wrong_argument_before_opening_anything(tmp_path, kw: dict[str, Any],
                                                                          argument: str, says: str) -> None:
    """Each wrong argument named (an AttributeError, a TypeError from a comparison or a weak reference deep
    inside, or an engine opened with a negative concurrency before); no database file and no lock left."""
    kw = {"path": str(tmp_path / "e.db"), "virtual": True, **kw}
    with pytest.raises(InvalidArgument) as err:
        await Engine.open(kw.pop("path"), **kw)
    assert err.value.field == argument and isinstance(err.value, DispatchsimError)
    assert str(err.value).startswith(f"{argument}: ") and says in str(err.value) and "(Engine.open)" in str(err.value)
    assert list(tmp_path.iterdir()) == []


async def test_engine_open_refuses_an_unknown_keyword_before_opening_anything(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'colour' \(it takes path, clock, virtual"):
        await Engine.open(tmp_path / "e.db", virtual=True, colour="red")
    assert list(tmp_path.iterdir()) == []


def test_engine_open_virtual_on_a_plain_loop_is_refused_before_opening_anything(tmp_path) -> None:
    """A virtual clock on a loop whose time does not jump: ClockError (a DispatchsimError and a RuntimeError)
    before the database file is made (it was made, then left behind)."""
    import asyncio

    with pytest.raises(ClockError, match="time-compacting event loop"):
        asyncio.run(Engine.open(tmp_path / "e.db", virtual=True))
    assert list(tmp_path.iterdir()) == []
    assert issubclass(ClockError, DispatchsimError) and issubclass(ClockError, RuntimeError)


async def test_subscribe_refuses_what_it_cannot_call(engine: Engine) -> None:
    """A sink that is not callable failed at the next event, far from the call that gave it."""
    with pytest.raises(InvalidArgument, match=r"^sink: must be a function taking each event") as err:
        engine.subscribe([])
    assert err.value.field == "sink"


async def test_engine_open_right_arguments_still_open(tmp_path) -> None:
    import io

    engine = await Engine.open(tmp_path / "e.db", virtual=True, seed=3, durable=False, pool_size=1, concurrency=1,
                               lease_margin=0.5, log_format="console", log_stream=io.StringIO())
    await engine.close()


# ---------------------------------------------------------------------------------------------- the other calls


def test_the_other_public_entry_points_name_a_wrong_argument(tmp_path) -> None:
    """The package's public calls (``dispatchsim.__all__``) named the wrong argument instead of failing deep
    inside with an AttributeError (run_scenario, EndpointSet, run_probe) or os.fspath's anonymous TypeError."""
    import asyncio

    import dispatchsim
    from dispatchsim.probe import ProbeError

    with pytest.raises(InvalidArgument, match=r"^scenario: must be a Scenario, got str: read a file with "
                                              r"dispatchsim.load_scenario\(path\) first \(run_scenario\)$"):
        dispatchsim.run_scenario("s.yaml")
    with pytest.raises(InvalidArgument, match=r"^keep_events: must be True or False"):
        asyncio.run(dispatchsim.run_scenario_async(_scenario(tmp_path), keep_events="no"))
    with pytest.raises(InvalidArgument, match=r"^db: must be a SQLite file path"):
        dispatchsim.run_scenario(_scenario(tmp_path), db=5)
    with pytest.raises(InvalidArgument, match=r"^progress: must have begin, event and tick"):  # AttributeError
        dispatchsim.run_scenario(_scenario(tmp_path), progress="bar")
    with pytest.raises(TypeError, match=r"^path of the scenario: expected a file path \(str or pathlib.Path\), got int"):
        dispatchsim.load_scenario(5)
    with pytest.raises(TypeError, match=r"^path of the mapping file: expected a file path"):
        dispatchsim.load_mapping_file(None)
    with pytest.raises(TypeError, match=r"^EndpointSet: config must be a ProvidersConfig"):
        dispatchsim.EndpointSet({"endpoints": {}})
    from dispatchsim.providers import ProviderConfigError, parse_config

    crm = parse_config({"endpoints": {"crm": {"behaviour": 200}}})
    with pytest.raises(TypeError, match=r"^EndpointSet: now must be a function returning seconds"):
        dispatchsim.EndpointSet(crm, now=5.0)
    with pytest.raises(ProviderConfigError, match=r"ports: ports given for unknown endpoints: crn \(endpoints: crm\)"):
        dispatchsim.EndpointSet(crm, ports={"crn": 8080})  # a KeyError before
    with pytest.raises(ProviderConfigError, match=r"ports: port of crm must be a whole number from 0 to 65535"):
        dispatchsim.EndpointSet(crm, ports={"crm": 99999})
    with pytest.raises(ProbeError, match=r"^url: must be text such as http://127.0.0.1:8080/hooks, got int"):
        asyncio.run(dispatchsim.run_probe(5))
    with pytest.raises(InvalidArgument, match=r"^epoch: must be a finite number"):
        dispatchsim.VirtualClock(epoch="2026-01-01")
    assert list(tmp_path.iterdir()) == [tmp_path / "s.yaml"]


def _scenario(tmp_path) -> Any:
    from dispatchsim import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nproviders: {crm: {behaviour: 200}}\nconfigurations: [{id: c, tenant: t, provider: crm}]\n")
    return load_scenario(path)
