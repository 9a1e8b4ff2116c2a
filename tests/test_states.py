"""The transition table in engine/states.py is the rule the engine enforces: break it and the store's
conditional updates refuse the change (real engine, real SQLite file, loopback HTTP, virtual clock)."""
from __future__ import annotations

import json

import pytest

from dispatchsim.engine import InvalidTransition, states
from dispatchsim.engine.states import Status, sources_of

ACT = {"channel": "SALESMAN"}


def _events(engine, name: str) -> list[dict]:
    return [e for e in map(json.loads, engine.log_buffer.getvalue().splitlines()) if e["event"] == name]


async def test_force_retry_is_refused_once_the_table_forbids_failed_to_ready(engine, receiver, setup_config,
                                                                              monkeypatch) -> None:
    receiver.respond = lambda hit, n: (500, {}, 0) if n == 1 else (200, {}, 0)
    await setup_config(receiver.url, retry={"max_attempts": 1})
    await engine.create_activity("acme", ACT)
    await engine.run_until_idle()
    [d] = await engine.deliveries()
    assert d.status == "FAILED"
    monkeypatch.delitem(states.TRANSITIONS, (Status.FAILED, Status.READY))
    assert sources_of(Status.READY) == ()
    with pytest.raises(InvalidTransition, match="FAILED -> READY is not allowed"):
        await engine.force_retry(d.id)
    assert (await engine.delivery(d.id)).status == "FAILED"
    monkeypatch.undo()
    assert (await engine.force_retry(d.id)).status == "READY"
    await engine.run_until_idle()
    assert (await engine.delivery(d.id)).status == "DISPATCHED"


async def test_a_success_the_table_does_not_allow_leaves_the_status_and_is_sent_again(engine, receiver, setup_config,
                                                                                      monkeypatch) -> None:
    await setup_config(receiver.url, timeouts={"connect": 5, "total": 30})
    monkeypatch.delitem(states.TRANSITIONS, (Status.READY, Status.DISPATCHED))
    t0 = engine.clock.now()
    await engine.create_activity("acme", ACT)
    await engine.run_for(10)
    [d] = await engine.deliveries()
    [a] = await engine.attempts(d.id)
    # the endpoint answered 2xx and the attempt says so, but READY -> DISPATCHED is not in the table
    assert (d.status, a.outcome, d.lease_until is not None) == ("READY", "SUCCESS", True)
    [refused] = _events(engine, "delivery.transition_refused")
    assert refused["delivery_id"] == d.id and "READY -> DISPATCHED" in refused["error"]
    assert not _events(engine, "delivery.dispatched")
    monkeypatch.undo()
    await engine.run_until_idle()
    # the lease (30 s timeout + 30 s margin) ends; the delivery goes again and may now be DISPATCHED
    assert (await engine.delivery(d.id)).status == "DISPATCHED"
    assert [round(h.at - t0) for h in receiver.posts()] == [0, 60]
