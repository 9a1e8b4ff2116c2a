"""What a finished run keeps, kept small: the event log in a temporary file (what goes in comes back
the same, in order); deliveries and attempts streamed from the run's database, which stays until the
result is closed or collected; expectations that give the same verdicts from those streams as from
lists held in memory."""
from __future__ import annotations

import asyncio
import gc
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from dispatchsim.engine import open_store
from dispatchsim.providers import Recorder, RecordsNotKept
from dispatchsim.scenarios import eventlog, load_scenario, run_scenario
from dispatchsim.scenarios.eventlog import EventLog
from dispatchsim.scenarios.expect import AttemptsPerDelivery, DeliveredBy, evaluate, order_violations
from dispatchsim.scenarios.report import provider_table, to_json

CATALOGUE = Path(__file__).resolve().parent.parent / "scenarios"


def test_lines_come_back_in_order_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "_CHUNK", 7)  # lines cross chunk edges, one is longer than a chunk
    lines = [json.dumps({"event": "delivery.created", "n": i, "text": "é" * (i % 5)}, ensure_ascii=False)
             for i in range(50)]
    log = EventLog()
    for line in lines[:20]:
        log.append(line)
    assert list(log) == lines[:20]  # read while the run still writes ...
    for line in lines[20:]:
        log.append(line)
    assert list(log) == lines and len(log) == 50  # ... and the writing goes on where it was
    assert log.head(3) == lines[:3] and log.tail(3) == lines[-3:] and log.tail(0) == []
    assert log.jsonl() == "".join(line + "\n" for line in lines)
    log.write_to(tmp_path / "events.jsonl")
    assert (tmp_path / "events.jsonl").read_text(encoding="utf-8") == log.jsonl()
    log.close()
    assert len(log) == 0
    with pytest.raises(ValueError):
        log.append("{}")


def test_an_empty_log():
    log = EventLog()
    assert list(log) == [] and log.jsonl() == "" and log.head(5) == [] and len(log) == 0


async def _stored(db: Path) -> tuple[list[dict], list[dict], list[str]]:
    store = await open_store(db, readonly=True)
    try:
        return ([d.to_json() for d in await store.deliveries()], [a.to_json() for a in await store.attempts()],
                await store.activity_ids())
    finally:
        await store.close()


def test_deliveries_and_attempts_are_read_from_the_database_on_each_pass(tmp_path):
    db = tmp_path / "run.db"
    result = run_scenario(load_scenario(CATALOGUE / "retry_after_429.yaml"), db=db)
    deliveries, attempts, activities = asyncio.run(_stored(db))
    assert len(attempts) > len(deliveries) > 0  # retried
    assert list(result.deliveries) == deliveries and list(result.deliveries) == deliveries  # a second pass too
    assert list(result.attempts) == attempts and list(result.activities) == activities
    assert (len(result.deliveries), len(result.attempts), len(result.activities)) == (
        len(deliveries), len(attempts), len(activities))
    first = deliveries[0]["id"]
    assert result.attempts_of(first) == [a for a in attempts if a["delivery_id"] == first]
    assert result.counts == {s: sum(d["status"] == s for d in deliveries)
                             for s in ("READY", "RETRYING", "DISPATCHED", "FAILED")}
    result.close()
    assert db.exists()  # a database the caller named is the caller's


def test_a_temporary_database_lives_as_long_as_its_result():
    result = run_scenario(load_scenario(CATALOGUE / "retry_after_429.yaml"))
    folder = Path(result.reader.path).parent
    assert folder.is_dir() and len(result.deliveries) > 0
    result.close()
    assert not folder.exists()
    again = run_scenario(load_scenario(CATALOGUE / "retry_after_429.yaml"))
    folder = Path(again.reader.path).parent
    del again
    gc.collect()
    assert not folder.exists()  # dropped without close: removed with it


def _in_memory(result):
    """The same run with its rows and records as plain lists, as results held them before."""
    recorder = Recorder()
    recorder.records = list(result.recorder.records)  # type: ignore[assignment]
    return replace(result, deliveries=list(result.deliveries), attempts=list(result.attempts),
                   activities=list(result.activities), recorder=recorder, reader=None, _cleanup=None)


@pytest.mark.parametrize("name", ["timeouts_duplicates", "ordered_head_outage", "mapping_own_format",
                                  "reteno_message_events", "force_retry_failed"])
def test_streamed_rows_give_the_verdicts_of_lists(name):
    result = run_scenario(load_scenario(CATALOGUE / f"{name}.yaml"))
    held = _in_memory(result)
    assert evaluate(held) == result.checks and result.checks
    assert to_json(held) == to_json(result) and provider_table(held) == provider_table(result)
    result.close()


@pytest.mark.parametrize("name", ["ordered_head_outage", "circuit_breaker_flapping", "crash_restart",
                                  "recover_since_long_outage", "skip_vs_block"])
def test_a_run_that_keeps_no_event_log_nor_records_gives_the_same_verdicts_receipts_and_rows(name):
    kept = run_scenario(load_scenario(CATALOGUE / f"{name}.yaml"))
    unkept = run_scenario(load_scenario(CATALOGUE / f"{name}.yaml"), keep_events=False, keep_records=False)
    assert unkept.events is None and len(kept.events) > 0
    assert unkept.checks == kept.checks and kept.checks
    assert list(unkept.recorder.records.receipts()) == list(kept.recorder.records.receipts())
    assert len(unkept.recorder.records) == len(kept.recorder.records) > 0
    with pytest.raises(RecordsNotKept):
        unkept.recorder.records[0]
    assert list(unkept.deliveries) == list(kept.deliveries) and list(unkept.attempts) == list(kept.attempts)
    # the timeline's own notes stay; the deliveries' story, told by their events, is not followed
    assert set(unkept.key_events) <= set(kept.key_events)
    assert "events not kept" in repr(unkept)
    with pytest.raises(ValueError, match="did not keep its event log"):
        unkept.events_jsonl()
    kept.close()
    unkept.close()


@pytest.mark.parametrize("name", ["happy_path_seed_payload", "mapping_own_format", "reteno_message_events"])
def test_an_expectation_that_reads_the_event_log_or_the_records_keeps_them(name):
    """``no_secrets_in_logs`` reads the event log and the records, ``mapping_shape`` and
    ``events_received`` the records' bodies: a run asked to keep neither keeps what they read."""
    scenario = load_scenario(CATALOGUE / f"{name}.yaml")
    result = run_scenario(scenario, keep_events=False, keep_records=False)
    assert result.ok and result.checks
    if scenario.expect.get("no_secrets_in_logs") is not None:
        assert result.events is not None and len(result.events) > 0
    assert result.recorder.records.keep and any(rec.body for rec in result.recorder.records)
    result.close()


def _acked(rec: Recorder, webhook_id: str, status: int = 200) -> None:
    r = rec.open(endpoint="crm", at=0.0, offset=0.0, method="POST", path="/hooks", query="",
                 headers={"webhook-id": webhook_id}, body="{}")
    r.response_status = status
    rec.close(r, 0.0)


def test_order_violations_name_the_queue_and_both_deliveries():
    rec = Recorder()
    for wid, status in (("w1", 503), ("w2", 200), ("w1", 200), ("w3", 200), ("w5", 200), ("w4", 200)):
        _acked(rec, wid, status)
    deliveries = [{"id": i, "webhook_id": f"w{i}", "config_id": "c", "queue": "c:A" if i < 4 else "c:B"}
                  for i in range(1, 6)]
    run = SimpleNamespace(scenario=SimpleNamespace(configurations=[]), deliveries=deliveries, recorder=rec,
                          force_retried=set())
    assert order_violations(run) == ["queue c:A: delivery 1 acknowledged after 2",
                                     "queue c:B: delivery 4 acknowledged after 5"]
    run.force_retried = {1}
    assert order_violations(run) == ["queue c:B: delivery 4 acknowledged after 5"]


def test_timeline_steps_merge_in_time_then_file_then_step_order():
    """The runner merges each event's steps instead of sorting one list of them all: the order is
    the one a sort gave (time, the event's place in the file, step), out-of-order offsets included."""
    from dispatchsim.scenarios.runner import ScenarioRun

    def event(index, at, offsets):
        return SimpleNamespace(index=index, at=at, action=SimpleNamespace(offsets=offsets))

    events = [event(0, 0.0, (0.0, 0.0, 60.0, 120.0)), event(1, 60.0, (0.0,)), event(2, 30.0, (90.0, 0.0, 30.0))]
    run = SimpleNamespace(s=SimpleNamespace(timeline=events))
    got = [(t, i, k) for t, i, k, _ in ScenarioRun._steps(run)]  # type: ignore[arg-type]
    want = sorted((ev.at + off, ev.index, k) for ev in events for k, off in enumerate(ev.action.offsets))
    assert got == want
    assert got[:4] == [(0.0, 0, 0), (0.0, 0, 1), (30.0, 2, 1), (60.0, 0, 2)]


def test_a_run_that_fails_removes_its_temporary_database(monkeypatch):
    from dispatchsim.scenarios import runner

    made: list[str] = []
    mkdtemp = runner.tempfile.mkdtemp

    def recording_mkdtemp(**kwargs):
        made.append(mkdtemp(**kwargs))
        return made[-1]

    async def broken_drain(self, remaining):
        raise RuntimeError("the drain broke")

    monkeypatch.setattr(runner.tempfile, "mkdtemp", recording_mkdtemp)
    monkeypatch.setattr(runner.ScenarioRun, "drain", broken_drain)
    with pytest.raises(RuntimeError, match="the drain broke"):
        run_scenario(load_scenario(CATALOGUE / "retry_after_429.yaml"))
    assert len(made) == 1 and not Path(made[0]).exists()


@pytest.mark.parametrize("name", ["skip_vs_block", "ordered_head_outage"])
def test_attempt_bounds_and_delivered_by_read_from_the_database_give_the_verdicts_of_lists(name):
    """With the run's database, the attempts-per-delivery and delivered-by checks read aggregates and
    the late deliveries only, not every row: passing and failing verdicts, and what they show, are
    those of the rows held as lists (FAILED deliveries in skip_vs_block; times to the millisecond)."""
    result = run_scenario(load_scenario(CATALOGUE / f"{name}.yaml"))
    held = _in_memory(result)
    spans = [3600 * h + s for h in range(0, 8) for s in (0, 179.999, 180, 180.0015)]
    exps = [AttemptsPerDelivery(bounds=b, line=1) for b in (
        {"max": 1}, {"max": 12}, {"min": 1}, {"min": 2}, {"exactly": 1}, {"exactly": 11, "delivery": 1},
        {"exactly": 11, "delivery": 2}, {"min": 1, "max": 3, "delivery": 999})] + [
        DeliveredBy(by=by, line=1) for by in spans]
    verdicts = [c for e in exps for c in e.check(result)]
    assert verdicts == [c for e in exps for c in e.check(held)]
    assert {c.ok for c in verdicts} == {True, False}
    assert any(c.observed.startswith("late or missing: [") and c.observed != "late or missing: []" for c in verdicts)
    result.close()
