"""The probe against the corpus of broken receivers: it must fail each one with a check that names
its bug, and pass the correct one. The score (caught / total) is printed at the end of the run."""
from __future__ import annotations

from typing import Any

import pytest

from dispatchsim.engine.clock import VirtualClock
from dispatchsim.probe import CHECKS, ProbeReport, ResultsListener, Status, run_probe

from probe_corpus import CORPUS, PROBE_SETTINGS, SCORE, Case, CorrectReceiver, names_the_bug


async def probe(receiver_cls: type[CorrectReceiver], **settings: Any) -> ProbeReport:
    """The whole probe, both verification channels, against one receiver (a real server on 127.0.0.1)."""
    clock = VirtualClock()
    async with ResultsListener() as listener:
        async with receiver_cls(callback_url=listener.url, now=clock.now) as receiver:
            return await run_probe(receiver.url, clock=clock, results_listener=listener,
                                   status_url=receiver.status_url, **{**PROBE_SETTINGS, **settings})


def failing(report: ProbeReport) -> dict[str, str]:
    return {c.id: c.summary for c in report.checks if c.status is Status.FAIL}


async def test_the_correct_receiver_passes_every_check():
    report = await probe(CorrectReceiver)
    SCORE["CorrectReceiver"] = report.ok
    assert {c.id: c.status for c in report.checks} == dict.fromkeys(CHECKS, Status.PASS), report.table()
    assert report.verification["channels"] == ["results callback", "status URL"]
    assert all(c.verified == ["results callback", "status URL"] for c in report.checks if CHECKS[c.id].delivers)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
async def test_each_broken_receiver_is_caught_by_the_check_that_names_its_bug(case: Case):
    report = await probe(case.receiver)
    failed = failing(report)
    named = {check: names_the_bug(failed.get(check, ""), words) for check, words in case.caught_by.items()}
    SCORE[case.name] = all(named.values())
    assert all(named.values()), f"{case.receiver.bug}: expected {case.caught_by}\n{report.table()}"
    assert set(failed) <= set(case.caught_by) | case.collateral, report.table()
    for check in case.caught_by:
        result = report.check(check)
        assert result.correct and result.evidence, check
        assert any(e.curl for e in result.evidence) or check == "verify_get"


def test_the_corpus_covers_the_bug_kinds_of_issue_20():
    kinds = {c.kind for c in CORPUS}
    for kind in ("acknowledges then loses (for some payloads)", "acknowledges then loses (under concurrency)",
                 "processes a duplicate twice (ignores webhook-id)", "processes out of order and keeps the older state",
                 "accepts a bad or missing signature", "accepts a stale timestamp",
                 "accepts wrong or missing credentials", "2xx on malformed JSON", "5xx on unknown fields",
                 "slow or failing on large bodies", "times out under a burst of concurrent deliveries",
                 "answers 2xx after the sender's timeout (a duplicate follows)",
                 "redirects (3xx, never followed by senders)", "treats header names case-sensitively",
                 "breaks on non-ASCII text", "answers 200 with a body that says error"):
        assert kind in kinds, kind
    assert len(CORPUS) >= 15
