"""Simulated time is a promise: a reopened database continues its time, and a scenario's ``duration``
is a hard limit on it (DESIGN.md, docs/scenarios.md)."""
from __future__ import annotations

from pathlib import Path

from support import Receiver

from dispatchsim.cli import main
from dispatchsim.engine import Engine
from dispatchsim.engine.clock import VIRTUAL_EPOCH, iso, parse_iso


async def test_a_new_database_starts_at_the_virtual_epoch_and_an_empty_one_reports_no_time(tmp_path):
    eng = await Engine.open(tmp_path / "new.db", virtual=True, seed=1)
    try:
        assert await eng.store.latest_time() is None
        assert eng.clock.now() == VIRTUAL_EPOCH
    finally:
        await eng.close()


async def test_reopening_on_the_virtual_clock_continues_simulated_time(tmp_path):
    """Time never runs backwards across a reopen: a retry due in 2 minutes is not 'due' at once after
    a reopen that would otherwise restart at the epoch, and new records come after old ones."""
    db = tmp_path / "d.db"
    eng = await Engine.open(db, virtual=True, seed=1)
    async with Receiver(clock_now=eng.clock.now, respond=lambda hit, n: (503, {}, 0.0)) as rx:
        await eng.add_tenant("acme")
        await eng.add_provider("crm")
        await eng.add_config("acme", "crm", "SALESMAN", endpoint_url=rx.url, retry={"preset": "reteno"},
                             activate=True)
        act = await eng.create_activity("acme", {"channel": "SALESMAN"})
        await eng.run_for(6 * 3600)
        stopped = eng.clock.now()
        latest = await eng.store.latest_time()
        attempts_before = len(await eng.attempts())
        await eng.close()
        assert stopped - VIRTUAL_EPOCH >= 6 * 3600 - 1 and latest is not None and latest > VIRTUAL_EPOCH + 3600

        eng = await Engine.open(db, virtual=True, seed=1)
        try:
            assert eng.clock.now() == latest  # continues from the latest recorded time, not the epoch
            [delivery] = await eng.deliveries(activity_id=act["id"])
            due = delivery.next_attempt_at
            assert due > eng.clock.now()  # the pending hourly retry is still ahead, not overdue
            later = await eng.create_activity("acme", {"channel": "SALESMAN"})
            assert later["createdAt"] == iso(latest) > act["createdAt"]
            await eng.run_for(3600 + 60)  # the hourly retry happens at its time (the queue is ordered:
            new = (await eng.attempts())[attempts_before:]  # the new activity waits behind it)
            assert [(a.delivery_id, a.started_at) for a in new] == [(delivery.id, due)]
        finally:
            await eng.close()


SCENARIO = """\
name: never-recovers
seed: 1
duration: 5h
providers:
  crm:
    behaviour: {status: 503, latency: 25s}
tenants: [acme]
configurations:
  - {id: crm-sales, tenant: acme, provider: crm, retry: reteno}
timeline:
  - at: 0s
    create: {count: 2}
expect:
  attempts_per_delivery: {min: 1}
"""


def test_duration_is_a_hard_limit_on_simulated_time(tmp_path, capsys):
    """A policy that never gives up against an endpoint that never recovers: the run ends exactly at
    ``duration`` (not at the next retry, not after an attempt still in flight), says so, and exits 1
    because the implied "finished" expectation fails."""
    import dispatchsim

    path = tmp_path / "never.yaml"
    path.write_text(SCENARIO)
    result = dispatchsim.run_scenario(dispatchsim.load_scenario(path))
    assert result.elapsed == 5 * 3600
    assert not result.idle and not result.ok
    [finished] = [c for c in result.checks if c.name == "finished"]
    assert not finished.ok and "work left at +5h00m00s" in finished.observed
    assert all(parse_iso(a["started_at"]) - result.t0 <= 5 * 3600 for a in result.attempts)
    assert main(["run", str(path)]) == 1
    out = capsys.readouterr()
    assert "idle within duration +5h00m00s" in out.out + out.err and "Traceback" not in out.out + out.err


def test_a_timeline_action_after_the_duration_is_refused_where_it_is_written(tmp_path, capsys):
    path = tmp_path / "late.yaml"
    path.write_text(SCENARIO.replace("  - at: 0s", "  - at: 6h"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:11: timeline[0].at: 6h is after the scenario's duration" in err
