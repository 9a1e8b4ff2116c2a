"""Real ``dispatchsim serve`` processes under abuse: SIGTERM and kill -9 cycles with large activities
arriving, a second process on the same database, a crash with an ordered queue in flight, a fuzz run
of every route. The short versions of ``python -m chaos`` (the long runs are in the README)."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos.cycles import run_cycles  # noqa: E402
from chaos.fuzz import run_fuzz  # noqa: E402
from chaos.harness import Receiver, ServeProcess, call, setup_configs, wait_for, write_config  # noqa: E402

from dispatchsim.engine.store import Claim, Store  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_cycles_under_load_exit_zero_every_time(tmp_path) -> None:
    report = run_cycles(tmp_path, kind="term", cycles=20, large_every=3, large_bytes=300_000)
    assert report.cycles == 20
    assert report.ok, "\n".join(report.lines())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill9_cycles_during_an_outage_lose_nothing(tmp_path) -> None:
    report = run_cycles(tmp_path, kind="kill", cycles=10)
    assert report.cycles == 10 and report.tally is not None and report.tally.acknowledged > 0
    assert report.ok, "\n".join(report.lines())


@pytest.mark.timeout(300)
def test_fuzz_of_every_route_never_answers_500(tmp_path) -> None:
    report = run_fuzz(tmp_path, requests=600, seed=7)
    assert report.requests == 600 and len(report.statuses) > 5
    assert report.ok, "\n".join(report.lines())


@pytest.mark.timeout(120)
def test_second_serve_on_the_same_database_is_refused_naming_the_holder(tmp_path) -> None:
    cfg = write_config(tmp_path)
    first = ServeProcess(tmp_path / "one.db", cfg, tmp_path / "one.log")
    try:
        with pytest.raises(Exception, match="serve did not start"):
            ServeProcess(tmp_path / "one.db", cfg, tmp_path / "two.log")
        err = (tmp_path / "two.log").read_text()
        assert f"in use by another dispatchsim serve or engine (pid {first.pid})" in err and "Traceback" not in err
    finally:
        first.signal(signal.SIGTERM)
        assert first.wait()[0] == 0


@pytest.mark.timeout(180)
def test_after_kill9_an_ordered_queue_resumes_at_once(tmp_path) -> None:
    """The head of an ordered queue is in flight when serve is killed; the next serve holds the owner
    lock, so it knows the lease is a dead process's and sends the head again at once, not after the
    lease (timeouts.total 5 s + 30 s margin)."""
    cfg = write_config(tmp_path)
    db, log = tmp_path / "o.db", tmp_path / "o.log"
    receiver = Receiver()
    srv = ServeProcess(db, cfg, log)
    try:
        setup_configs(srv.base, receiver)
        receiver.hold_path = "/ordered"
        status, _, raw = call(srv.base, "POST", "/api/activities", {"channel": "SALESMAN"})
        assert status == 201
        wait_for(receiver.held.is_set, 20, "the head's attempt to reach the receiver")
        srv.signal(signal.SIGKILL)
        srv.wait()
        receiver.release.set()
        started = time.monotonic()
        srv = ServeProcess(db, cfg, log)
        wait_for(lambda: len(receiver.delivered) == 2, 20, "both configurations to receive the activity")
        assert time.monotonic() - started < 15  # far below the 35 s lease
        assert '"serve.recovered"' in log.read_text()
    finally:
        srv.signal(signal.SIGTERM)
        srv.wait()
        receiver.close()


async def test_shutdown_releases_only_its_own_leases(tmp_path) -> None:
    store = Store(tmp_path / "l.db")
    await store.add_tenant("t", "t", 0.0)
    await store.add_provider("p", "p", 0.0)
    await store.insert_config("c", "t", "p", "S", {"endpoint_url": "http://127.0.0.1:9/"}, 0.0)
    for n in range(2):
        await store.insert_activity(f"a{n}", "t", "TASK", "S", {}, 0.0)
        await store.insert_delivery(webhook_id=f"w{n}", activity_id=f"a{n}", config_id="c", config_version=1,
                                    queue="c", ordered=False, now=0.0)
    mine: list[Claim] = await store.claim([(1, 100.0)], token="me:1", now=0.0)
    theirs = await store.claim([(2, 100.0)], token="other:1", now=0.0)
    assert mine and theirs
    assert await store.release_own_leases(1.0, "me") == [1]
    assert (await store.delivery(2)).lease_token == "other:1" and (await store.delivery(1)).lease_token is None
    await store.close()
