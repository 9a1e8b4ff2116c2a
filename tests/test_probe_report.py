"""A probe report a team acts on: verification channels, unverified checks, per-check deadlines,
--only/--skip, --payload, curl reproductions that really reproduce, JSON and JUnit carrying the same."""
from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from dispatchsim.cli import build_parser
from dispatchsim.engine.clock import RealClock, VirtualClock
from dispatchsim.probe import CHECKS, ResultsListener, Status, run_probe
from dispatchsim.probe.cli import probe_command
from dispatchsim.probe.report import Evidence
from dispatchsim.probe.runner import _error_said

from probe_corpus import API_KEY, PROBE_SETTINGS, SECRET, CorrectReceiver, LostUpdate, NoTimestampTolerance
from test_probe import Receiver
from test_probe_corpus import probe


def args(*argv: str):
    return build_parser().parse_args(["probe", *argv])


async def test_without_a_channel_the_report_names_the_checks_it_could_not_verify():
    clock = VirtualClock()
    async with CorrectReceiver(callback_url="http://127.0.0.1:9/unused", now=clock.now) as receiver:
        report = await run_probe(receiver.url, clock=clock, **PROBE_SETTINGS)
    unverified = report.verification["unverified"]
    assert {"seed_post", "duplicate", "burst_ordered", "burst_concurrent", "edge_unicode"} <= set(unverified)
    assert not {"verify_get", "auth_missing", "malformed_json", "abort_mid_body"} & set(unverified)
    assert report.check("duplicate").status is Status.WARN and report.ok
    text = report.table()
    assert "not verified (processing not observed): seed_post" in text and "--results" in text
    assert "--status-url" in text


async def test_each_channel_alone_and_both_together():
    """A lost update still sends its results callback: only the status URL sees the loss, so both are used."""
    clock = VirtualClock()
    async with ResultsListener() as listener:
        async with LostUpdate(callback_url=listener.url, now=clock.now) as receiver:
            only_callbacks = await run_probe(receiver.url, clock=clock, results_listener=listener,
                                             **{**PROBE_SETTINGS, "only": ["burst_concurrent"]})
    assert only_callbacks.check("burst_concurrent").status is Status.PASS
    assert only_callbacks.verification["channels"] == ["results callback"]
    clock = VirtualClock()
    async with LostUpdate(callback_url="http://127.0.0.1:9/unused", now=clock.now) as receiver:
        only_status = await run_probe(receiver.url, clock=clock, status_url=receiver.status_url,
                                      **{**PROBE_SETTINGS, "only": ["burst_concurrent"]})
    lost = only_status.check("burst_concurrent")
    assert lost.status is Status.FAIL and "status URL processed = 0" in lost.findings[0]
    assert any(e.label.startswith("status URL for burst") and e.response_excerpt for e in lost.evidence)


async def test_a_hanging_check_fails_alone_and_later_checks_still_run():
    async with Receiver(hang_on_slow_body=True) as receiver:
        report = await run_probe(receiver.url, clock=VirtualClock(), timeout=100, check_time=20)
    slow = report.check("slow_body")
    assert slow.status is Status.FAIL and "hangs: not finished within the check's 20s deadline" in slow.summary
    assert slow.duration == pytest.approx(20, abs=0.5)
    assert report.check("connection_reuse").status is Status.PASS
    assert report.check("abort_mid_body").status is Status.PASS


async def test_only_and_skip_select_checks():
    async with Receiver() as receiver:
        report = await run_probe(receiver.url, clock=VirtualClock(), only=["seed_post", "edge_nulls"])
        assert [c.id for c in report.checks] == ["seed_post", "edge_nulls"]
        report = await run_probe(receiver.url, clock=VirtualClock(), skip=["slow_body", "abort_mid_body"])
    assert [c.id for c in report.checks] == [c for c in CHECKS if c not in ("slow_body", "abort_mid_body")]


async def test_cli_only_skip_and_unknown_check(capsys):
    assert await probe_command(args("http://127.0.0.1:9/x", "--only", "seed_post,nope")) == 2
    err = capsys.readouterr().err
    assert "unknown check(s) nope" in err and "verify_get" in err
    async with Receiver() as receiver:
        out = io.StringIO()
        code = await probe_command(args(receiver.url, "--only", "verify_get,seed_post", "--skip", "seed_post"),
                                   clock=VirtualClock(), out=out)
    assert code == 0 and "verify_get" in out.getvalue() and "seed_post" not in out.getvalue()


async def test_team_payloads_go_through_every_check(tmp_path):
    team = [{"id": "theirs-1", "type": "TASK", "channel": "SALESMAN", "commerceExternalId": "C-9",
             "commerceName": "Tienda Uno", "teamField": 1},
            {"id": "theirs-2", "type": "TASK", "channel": "SALESMAN", "commerceExternalId": "C-8",
             "commerceName": "Tienda Dos", "teamField": 2}]
    (tmp_path / "a.json").write_text(json.dumps(team[0]), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps([team[1]]), encoding="utf-8")
    clock = VirtualClock()
    async with ResultsListener() as listener:
        async with CorrectReceiver(callback_url=listener.url, now=clock.now) as receiver:
            out = io.StringIO()
            a = args(receiver.url, "--payload", str(tmp_path / "a.json"), "--payload", str(tmp_path / "b.json"),
                     "--auth", f"api_key:X-Api-Key:{API_KEY}", "--secret", SECRET, "--status-url",
                     receiver.status_url, "--json", str(tmp_path / "r.json"),
                     "--ordered", "4", "--burst", "6", "--slow-body", "1", "--callback-wait", "5")
            code = await probe_command(a, clock=clock, out=out)
            stored = [row for rows in receiver.db.values() for row in rows]
    assert code == 0, out.getvalue()
    assert stored and all(row.get("teamField") in (1, 2) for row in stored)
    assert {row["teamField"] for row in stored} == {1, 2}
    assert not {row["id"] for row in stored} & {"theirs-1", "theirs-2"}  # a fresh id per delivery
    data = json.loads((tmp_path / "r.json").read_text())
    seed = next(c for c in data["checks"] if c["id"] == "seed_post")
    assert [e["label"] for e in seed["evidence"] if e["method"] == "POST"] == ["team payload 1", "team payload 2"]
    assert data["settings"]["payloads"] == 2


async def test_bad_payload_file_is_refused_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text('{\n  "id": "x",\n  oops\n}\n', encoding="utf-8")
    assert await probe_command(args("http://127.0.0.1:9/x", "--payload", str(bad))) == 2
    assert f"{bad}:3: invalid JSON: " in capsys.readouterr().err
    bad.write_text("[1, 2]", encoding="utf-8")
    assert await probe_command(args("http://127.0.0.1:9/x", "--payload", str(bad))) == 2
    assert "expected a JSON object" in capsys.readouterr().err


async def test_results_listener_picks_its_own_port_and_prints_the_url(capsys):
    async with Receiver() as receiver:
        code = await probe_command(args(receiver.url, "--results", "--only", "verify_get"), clock=VirtualClock(),
                                   out=io.StringIO())
    assert code == 0
    err = capsys.readouterr().err
    assert "listening for results callbacks on http://127.0.0.1:" in err
    assert ":0/" not in err
    listener = ResultsListener.at("http://127.0.0.1:9200/cb")
    assert (listener.port, listener.url) == (9200, "http://127.0.0.1:9200/cb")
    assert await probe_command(args(receiver.url, "--results-url", "ftp://x/cb")) == 2


async def test_failing_check_report_json_and_junit_carry_the_same(tmp_path):
    report = await probe(NoTimestampTolerance, only=["signature_stale", "edge_max_size"])
    stale = report.check("signature_stale")
    assert stale.status is Status.FAIL
    ev = stale.evidence[0]
    assert ev.curl is not None and "$(( $(date +%s) - 3600 ))" in ev.curl and "${PROBE_SECRET#whsec_}" in ev.curl
    assert API_KEY not in ev.curl and SECRET not in ev.curl and "$PROBE_API_KEY" in ev.curl
    data = json.loads(report.to_json())
    check = next(c for c in data["checks"] if c["id"] == "signature_stale")
    assert check["correct"].startswith("rejects a webhook-timestamp outside a tolerance")
    assert check["evidence"][0]["curl"] == ev.curl and check["evidence"][0]["request_body"] == ev.request_body
    big = next(c for c in data["checks"] if c["id"] == "edge_max_size")["evidence"][0]
    assert big["request_size"] == len(big["request_body"].encode()) == 65536  # the whole body, not cut off
    assert "jq -j" in big["curl"] and "probe.json" in big["curl"]
    failure = ET.fromstring(report.to_junit()).find("testcase[@name='signature_stale']/failure")
    assert failure is not None
    assert ev.curl in failure.text and "a correct receiver rejects a webhook-timestamp" in failure.text
    assert "ACCEPTED with a 1-hour-old timestamp" in failure.get("message")
    table = report.table()
    assert "reproduce: " in table and "set PROBE_API_KEY, PROBE_SECRET" in table
    for text in (report.to_json(), report.to_junit(), table):
        assert API_KEY not in text and SECRET not in text


def test_error_bodies_recognised():
    def said(body: str) -> str | None:
        return _error_said(Evidence(label="x", method="POST", url="u", status=200, response_excerpt=body))
    assert said('{"ok": true}') is None and said("accepted") is None and said('{"errors": []}') is None
    assert said('{"ok": false}') == '("ok": false)'
    assert said('{"status": "error", "message": "m"}') == '("status": "error")'
    assert said('{"error": "commerceName is required"}') == '("error": "commerceName is required")'


def _live_probe_and_replay() -> tuple[Any, list[tuple[str, int, int]]]:
    """On the real clock: probe a receiver, then run each reproduction line with bash and curl."""

    async def main() -> tuple[Any, list[tuple[str, int, int]]]:
        async with ResultsListener() as listener:
            async with NoTimestampTolerance(callback_url=listener.url, now=time.time) as receiver:
                report = await run_probe(receiver.url, clock=RealClock(), results_listener=listener,
                                         status_url=receiver.status_url,
                                         **{**PROBE_SETTINGS, "callback_wait": 2, "settle": 0.2,
                                            "only": ["seed_post", "auth_wrong", "signature_tampered",
                                                     "signature_stale"]})
                env = {**os.environ, "PROBE_API_KEY": API_KEY, "PROBE_SECRET": SECRET}
                loop = asyncio.get_running_loop()
                replays = []
                for check in ("seed_post", "auth_wrong", "signature_tampered", "signature_stale"):
                    line = report.check(check).evidence[0].curl
                    before = len(receiver.db)
                    done = await loop.run_in_executor(None, lambda line=line: subprocess.run(
                        ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=20))
                    status = int(done.stdout.split()[1]) if done.stdout.startswith("HTTP/") else -1
                    replays.append((check, status, len(receiver.db) - before))
                return report, replays

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


def test_curl_lines_reproduce_on_the_real_clock():
    report, replays = _live_probe_and_replay()
    assert report.check("seed_post").status is Status.PASS
    assert report.check("signature_stale").status is Status.FAIL
    # a genuine signature recomputed by the shell is accepted (as a duplicate of the probe's delivery: the
    # same webhook-id, so nothing is processed again); the broken requests are repeated as sent
    assert replays == [("seed_post", 200, 0), ("auth_wrong", 401, 0), ("signature_tampered", 401, 0),
                       ("signature_stale", 200, 0)]
