"""`dispatchsim run`: exit codes, human summary, JSON, JUnit, event log, record, SVG plot."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from dispatchsim.cli import main

PASSING = """\
name: small-pass
seed: 3
providers:
  crm:
    behaviour: {sequence: [{times: 2, status: 500}, {status: 200}]}
tenants: [acme]
configurations:
  - {id: c1, tenant: acme, provider: crm, auth: {type: bearer, token: tok-VERYSECRET}}
timeline:
  - at: 0s
    create: {count: 2}
expect:
  all_delivered: true
  retry_delays: [1m, 2m]
  no_secrets_in_logs: true
"""

FAILING = PASSING.replace("name: small-pass", "name: small-fail").replace("retry_delays: [1m, 2m]",
                                                                         "retry_delays: [1m, 3m]")


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_passing_scenario_exits_0_with_summary(tmp_path, capsys):
    f = write(tmp_path, "pass.yaml", PASSING)
    assert main(["run", f]) == 0
    out = capsys.readouterr().out
    assert "scenario small-pass" in out
    assert "PASS  retry_delays" in out and "observed 1m00s, 2m00s" in out
    assert "result: PASS (3/3 expectations)" in out
    assert "crm" in out and "500 x2" in out


def test_failing_expectation_exits_1_and_names_observed(tmp_path, capsys):
    f = write(tmp_path, "fail.yaml", FAILING)
    assert main(["run", f]) == 1
    out = capsys.readouterr().out
    assert "FAIL  retry_delays" in out and "expected delivery 1: 1m00s, 3m00s; observed 1m00s, 2m00s" in out
    assert "(line 14)" in out


def test_invalid_file_exits_2_before_running_anything(tmp_path, capsys):
    good = write(tmp_path, "pass.yaml", PASSING)
    bad = write(tmp_path, "bad.yaml", PASSING.replace("seed: 3", "seed: 3\ncolour: blue"))
    events = tmp_path / "events"
    assert main(["run", good, bad, "--events", str(events)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: colour: unknown key 'colour'" in err
    assert not events.exists()  # nothing ran


def test_reports_json_junit_events_record_and_plot(tmp_path, capsys):
    good = write(tmp_path, "pass.yaml", PASSING)
    bad = write(tmp_path, "fail.yaml", FAILING)
    rc = main(["run", good, bad, "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml"),
               "--events", str(tmp_path / "ev"), "--record", str(tmp_path / "rec"), "--plot", str(tmp_path / "svg"),
               "--quiet"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "PASS  small-pass" in out and "FAIL  small-fail" in out and "1/2 scenarios passed" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["ok"] for r in report] == [True, False]
    assert report[0]["counts"]["DISPATCHED"] == 2 and report[0]["simulated_seconds"] == 180
    suites = ET.parse(tmp_path / "r.xml").getroot()
    assert suites.get("tests") == "6" and suites.get("failures") == "1"
    failure = suites.find(".//testcase[@name='retry_delays']/failure")
    assert failure is not None and "observed 1m00s, 2m00s" in failure.get("message")
    lines = (tmp_path / "ev" / "small-pass.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events if e["event"].startswith("delivery.")][:3] == [
        "delivery.created", "delivery.created", "delivery.retrying"]
    assert all("127.0.0.1" not in line for line in lines)  # ports are replaced by sim://NAME
    assert "VERYSECRET" not in (tmp_path / "ev" / "small-pass.jsonl").read_text()
    record = (tmp_path / "rec" / "small-pass.record.jsonl").read_text().splitlines()
    assert len(record) == 5  # the verification GET and 4 POSTs (delivery 1: 500, 500, 200; delivery 2: 200)
    svg = ET.parse(tmp_path / "svg" / "small-pass.svg").getroot()
    circles = svg.findall(".//{http://www.w3.org/2000/svg}circle")
    assert len(circles) >= 4


def test_same_seed_gives_identical_event_log(tmp_path):
    f = write(tmp_path, "pass.yaml", PASSING)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["run", f, "--events", str(a), "-q"]) == 0
    assert main(["run", f, "--events", str(b), "-q"]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_a_directory_or_a_device_is_named_for_what_it_is(tmp_path, capsys):
    """A folder given as a scenario (or one to explore) was 'no such file or bundled scenario', which sends
    people looking for a typo in a path that exists."""
    for command in ("run", "explore"):
        assert main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path}: is a directory, not a scenario file; `dispatchsim {command} --list`" in err, err
        assert err.count("\n") == (2 if command == "run" else 1), err
    assert main(["run", "/dev/null"]) == 2
    assert "/dev/null: not a regular file;" in capsys.readouterr().err
