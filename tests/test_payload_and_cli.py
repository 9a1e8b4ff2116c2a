"""Payload shape against the seed, and the CLI commands of the engine (demo, status)."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatchsim.cli import COMMANDS, build_parser, main
from dispatchsim.demo import run_demo
from dispatchsim.status import print_status
from dispatchsim.engine import ActivityError, Engine, run_virtual
from dispatchsim.engine.payload import build_stored_payload, encode_body, render, rendered_body, spliced_body
from dispatchsim.yamlfile import valid_text
from dispatchsim.mapping import SEED_PAYLOAD
from dispatchsim.mapping.activity import DEFAULTS, DERIVED, NULLABLE, PAYLOAD_KEYS, example_activity

SEED_INPUT = {k: v for k, v in SEED_PAYLOAD.items()
              if k not in ("id", "createdAt", "canForceRetryDispatch", "activityResult")}


def _shape(value):
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


async def test_default_payload_is_the_seed_object_field_for_field(engine):
    await engine.add_tenant("acme")
    act = await engine.create_activity("acme", SEED_INPUT)
    assert list(act) == list(SEED_PAYLOAD) == list(PAYLOAD_KEYS)
    for key in SEED_INPUT:
        assert act[key] == SEED_PAYLOAD[key], key
    assert _shape({k: v for k, v in act.items() if k != "activityResult"}) == \
        _shape({k: v for k, v in SEED_PAYLOAD.items() if k != "activityResult"})
    assert uuid.UUID(act["id"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", act["createdAt"])
    assert act["scheduledAt"] == "2026-04-15T09:00:00.000Z"
    assert act["canForceRetryDispatch"] is False and act["activityResult"] is None


def test_one_activity_shape_defaults_examples_and_nullables_agree():
    """The shape is defined once (mapping.activity): defaults cover exactly the caller's optional keys,
    generated examples pass the engine's validation, and what the probe sends null is part of the shape."""
    import random

    assert set(DEFAULTS) == set(PAYLOAD_KEYS) - DERIVED - {"channel"}
    assert set(NULLABLE) <= set(PAYLOAD_KEYS)
    rng = random.Random(7)
    for _ in range(20):
        stored = build_stored_payload(example_activity(rng), activity_id="x", created_at=0.0)
        assert list(stored) == list(PAYLOAD_KEYS)


def test_nested_problems_name_their_dotted_field():
    good = build_stored_payload(SEED_INPUT, activity_id="a", created_at=0)["reason"]
    key, text_key = "reason", next(k for k, v in good.items() if isinstance(v, str))
    for value, part in (({**good, "colour": 1}, f"{key}: unknown field(s) colour"),
                        ({**good, text_key: 7}, f"{key}.{text_key}: must be a string or null, got int"),
                        ({**good, text_key: "a\ud800"}, f"{key}.{text_key}: not valid Unicode text")):
        with pytest.raises(ActivityError) as e:
            build_stored_payload({**SEED_INPUT, key: value}, activity_id="a", created_at=0)
        assert part in str(e.value), (part, str(e.value))


def test_activity_validation_names_every_problem():
    with pytest.raises(ActivityError) as e:
        build_stored_payload({"channel": "", "type": "CALL", "reason": "x", "scheduledAt": "yesterday",
                              "colour": 1, "id": "mine"}, activity_id="a", created_at=0)
    msg = str(e.value)
    for part in ("unknown field(s): colour", "set by the engine, not the caller: id", "channel: required",
                 "type: must be one of TASK, MESSAGE", "reason: must be an object",
                 "scheduledAt: not an ISO-8601 timestamp"):
        assert part in msg


async def test_seeded_engines_make_identical_ids(tmp_path):
    ids = []
    for name in ("a.db", "b.db"):
        eng = await Engine.open(tmp_path / name, virtual=True, seed=9)
        await eng.add_tenant("acme")
        ids.append([(await eng.create_activity("acme", {"channel": "X"}))["id"] for _ in range(3)])
        await eng.close()
    assert ids[0] == ids[1] and len(set(ids[0])) == 3


def test_demo_prints_attempts_and_final_statuses():
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    assert "+1m00s  delivery 1  attempt 2  -> 503  RETRYING    next: +3m00s" in text
    assert "+15m00s  delivery 1  attempt 5  -> 200  DISPATCHED" in text
    assert text.count("DISPATCHED  attempts") == 3
    wall = float(re.search(r"wall time ([\d.]+)s", text).group(1))
    assert wall < 2.0


def test_status_command_summarises_a_database(tmp_path, capsys):
    db = tmp_path / "s.db"

    async def fill():
        eng = await Engine.open(db, virtual=True, seed=1)
        await eng.add_tenant("acme")
        await eng.add_provider("crm")
        await eng.add_config("acme", "crm", "SALESMAN", config_id="c", endpoint_url="http://127.0.0.1:9/h",
                             retry={"max_attempts": 1}, ordering={"on_exhausted": "block"})
        await eng.store.set_config_active("c", True, eng.clock.now())
        for _ in range(2):
            await eng.create_activity("acme", {"channel": "SALESMAN"})
        await eng.run_until_idle()
        await eng.close()

    run_virtual(fill())
    out = io.StringIO()
    assert print_status(str(db), out) == 0
    text = out.getvalue()
    assert "deliveries: READY 1, DISPATCHED 0, RETRYING 0, FAILED 1" in text
    assert "blocked queue: c (FAILED head: delivery 1" in text
    assert "delivery 1 (c): exhausted: connect_error" in text
    assert print_status(str(tmp_path / "missing.db")) == 2
    assert "no such file" in capsys.readouterr().err


def test_status_shows_circuits_auto_disabled_configurations_and_notifications(tmp_path):
    db = tmp_path / "h.db"

    async def fill():
        from support import Receiver

        eng = await Engine.open(db, virtual=True, seed=1)
        async with Receiver(eng.clock.now) as r:
            r.respond = lambda hit, n: (503, {}, 0)
            await eng.add_tenant("acme")
            for p in ("crm", "erp"):
                await eng.add_provider(p)
            await eng.add_config("acme", "crm", "SALESMAN", config_id="guarded", endpoint_url=r.url, activate=True,
                                 retry="reteno", ordering="none",
                                 circuit_breaker={"window": 60, "failure_rate": 1.0, "min_requests": 2,
                                                  "cooldown": 3600})
            await eng.add_config("acme", "erp", "SALESMAN", config_id="fragile", endpoint_url=r.url, activate=True,
                                 retry="reteno", auto_disable={"after_failures": 2})
            await eng.add_config("acme", "erp", "OTHER", config_id="draft", endpoint_url=r.url)
            for _ in range(2):
                await eng.create_activity("acme", {"channel": "SALESMAN"})
            await eng.run_for(120)
        await eng.close()

    run_virtual(fill())
    out = io.StringIO()
    assert print_status(str(db), out) == 0
    text = out.getvalue()
    assert "inactive configurations (pending deliveries wait; activate to resume):" in text
    assert re.search(r"  draft +: not activated", text)
    assert re.search(r"  fragile +since 2026-04-10T14:31:00.000Z: auto-disabled: 2 consecutive failed attempts",
                     text)
    assert re.search(r"  guarded +circuit open until 2026-04-10T15:30:00.000Z, 2 consecutive failures since "
                     r"2026-04-10T14:30:00.000Z", text)
    assert "latest notifications:" in text
    assert "2026-04-10T14:30:00.000Z circuit.opened        guarded: 2 of 2 attempts failed" in text
    assert "2026-04-10T14:31:00.000Z config.auto_disabled  fragile: auto-disabled: 2 consecutive" in text


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "status"):
        assert cmd in out


def test_a_command_imports_only_its_own_module():
    """``dispatchsim run`` registers the scenario command alone (the others' imports cost a tenth of a
    10k-activity run); with no command every one is there, and the table names every registered one."""
    full = build_parser()
    registered = set(full._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert registered == set(COMMANDS) | {"demo", "status"}
    only_run = build_parser(["run", "x.yaml", "-q"])
    assert set(only_run._subparsers._group_actions[0].choices) == {"demo", "status", "run"}  # type: ignore[union-attr]
    assert only_run.parse_args(["run", "x.yaml", "-q"]).quiet
    code = ("import sys; from dispatchsim.cli import build_parser; build_parser(['run', '--list']); "
            "print(sorted(m for m in ('dispatchsim.probe', 'dispatchsim.server', 'hypothesis') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stderr


def test_console_script_runs_the_demo():
    res = subprocess.run([sys.executable, "-m", "dispatchsim.cli", "demo", "--outage", "3"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "attempt 3  -> 200  DISPATCHED" in res.stdout


_TRICKY = ('"canForceRetryDispatch":null,', ',"activityResult":null}', '\\"activityResult\\":', "é\u2028\x00", "")


@settings(max_examples=200)
@given(seed=st.integers(0, 10 ** 6), text=st.one_of(st.sampled_from(_TRICKY), st.text(max_size=40)),
       failed=st.booleans(),
       result=st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=8), st.floats(
           allow_nan=False, allow_infinity=False), st.integers(), st.none()), max_size=4)))
def test_a_body_spliced_from_the_stored_text_equals_the_rendered_payload(seed, text, failed, result):
    """The dispatcher sends the stored text with the derived fields filled in, never decoding it: the
    bytes must equal those of the decoded, rendered and re-encoded payload, whatever the values hold."""
    import random

    if not valid_text(text):
        return
    data = example_activity(random.Random(seed))
    data["commerceName"] = text
    if isinstance(data.get("reason"), dict) and data["reason"]:
        data["reason"] = {**data["reason"], next(iter(data["reason"])): text}
    stored = build_stored_payload(data, activity_id="x", created_at=0.0)
    result_text = None if result is None else encode_body(result).decode()
    expected = encode_body(render(stored, can_force_retry=failed, result=result))
    text = encode_body(stored).decode()
    assert spliced_body(text, can_force_retry=failed, result=result_text) == expected  # never decoded
    assert rendered_body(text, can_force_retry=failed, result=result_text) == expected
    # the same text as UTF-8 bytes (as SQLite reads it for a dispatch): spliced as bytes, never decoded
    raw_result = None if result_text is None else result_text.encode()
    assert spliced_body(text.encode(), can_force_retry=failed, result=raw_result) == expected
    assert rendered_body(text.encode(), can_force_retry=failed, result=raw_result) == expected


def test_stored_text_in_another_form_is_rendered_the_long_way():
    """Text the store did not write (spaces, other key order, a payload of a bulk load), or with a derived
    key in a nested object too (before or after the top-level one), is decoded."""
    nested = ('{"id":"x","n":{"canForceRetryDispatch":1},"canForceRetryDispatch":null,"activityResult":null}',
              '{"id":"x","canForceRetryDispatch":null,"n":{"canForceRetryDispatch":1},"activityResult":null}',
              '{"id":"x","n":{"a":1,"canForceRetryDispatch":null,"b":2},"canForceRetryDispatch":null,"activityResult":null}',
              '{"id":"x","canForceRetryDispatch":null,"n":{"a":1,"canForceRetryDispatch":null,"b":2},"activityResult":null}',
              '{"id":"x","n":{"activityResult":1},"canForceRetryDispatch":null,"activityResult":null}',
              '{"id":"x","canForceRetryDispatch":null,"n":{"a":1,"activityResult":null},"activityResult":null}')
    for text in ('{"id": "x", "canForceRetryDispatch": null, "activityResult": null}',
                 '{"activityResult":null,"canForceRetryDispatch":null,"id":"x"}', "{}", *nested):
        value = json.loads(text)
        assert spliced_body(text, can_force_retry=True, result=None) is None
        assert spliced_body(text.encode(), can_force_retry=True, result=None) is None
        for stored, result in ((text, '{"a":1}'), (text.encode(), b'{"a":1}')):
            assert rendered_body(stored, can_force_retry=True, result=result) == encode_body(
                render(value, can_force_retry=True, result={"a": 1}))


def test_a_program_run_collects_young_objects_less_often_and_a_call_with_arguments_leaves_the_collector(capsys):
    """``dispatchsim`` as a program sets the youngest generation's threshold (GC_YOUNG); ``main(argv)``
    called by another program leaves that program's collector as it was."""
    import gc

    from dispatchsim.cli import GC_YOUNG

    code = ("import gc, sys; from dispatchsim.cli import main; sys.argv = ['dispatchsim', 'run', '--list'];"
            " main(); print(gc.get_threshold()[0], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == str(GC_YOUNG)
    before = gc.get_threshold()
    assert main(["run", "--list"]) == 0 and "outage_6h_10k" in capsys.readouterr().out
    assert gc.get_threshold() == before != (GC_YOUNG, *before[1:])


_ODD_VALUES = st.one_of(st.none(), st.integers(), st.booleans(), st.just("\ud800"), st.just("ok\udfff"), st.just(""),
                        st.just("  "), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.sampled_from(["name", "x", "id"]), st.just("v"), max_size=2))


def _paths(value, prefix=()):
    """Every key path of a nested activity (objects only)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix + (key,)
            yield from _paths(item, prefix + (key,))


@settings(max_examples=1000, deadline=None)
@given(base=st.sampled_from(["seed", "generated"]), seed=st.integers(0, 10_000),
       changes=st.lists(st.tuples(st.integers(0, 10_000), _ODD_VALUES), min_size=1, max_size=4),
       extra=st.one_of(st.none(), st.sampled_from(["unknownKey", "id", "createdAt", "activityResult"])))
def test_quick_check_of_a_valid_activity_never_hides_a_problem(base, seed, changes, extra):
    """build_stored_payload asks a valid activity its questions at once and checks field by field only
    when that fails: whatever fields are changed (every field of the seed's activity can be, nested
    ones too, several at once), the quick check passes only activities the field-by-field check finds
    no problem in."""
    import random

    from dispatchsim.engine import payload as P
    from dispatchsim.mapping import SEED_PAYLOAD as seed_shape

    if base == "seed":
        data = {k: v for k, v in json.loads(json.dumps(seed_shape)).items() if k not in DERIVED}
    else:
        data = example_activity(random.Random(seed))
    assert P._quick_valid(data) and P._field_problems(data) == []
    for pick, odd in changes:
        paths = list(_paths(data))
        path = paths[pick % len(paths)]
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = odd
    if extra is not None:
        data[extra] = "x"
    assert not P._quick_valid(data) or P._field_problems(data) == []
