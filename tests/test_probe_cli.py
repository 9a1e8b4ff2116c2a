"""``dispatchsim probe``: options, reports on disk, exit codes, remote-target confirmation, redaction."""
from __future__ import annotations

import io
import json
import unicodedata
from xml.dom import minidom
from xml.etree import ElementTree as ET

import pytest
from aiohttp import web

from dispatchsim.cli import build_parser
from dispatchsim.engine.clock import VirtualClock
from dispatchsim.probe import CHECKS, ProbeError, ProbeSettings, RemoteNotConfirmed, ResultsListener, run_probe
from dispatchsim.probe.cli import parse_auth, probe_command
from dispatchsim.probe.http import redactor_for
from dispatchsim.providers import EndpointSet, parse_config

from support import start_site
from test_probe import KEY, SECRET, good_spec


def args(*argv: str):
    return build_parser().parse_args(["probe", *argv])


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_parse_auth_forms(monkeypatch):
    assert parse_auth("api_key:X-Api-Key:a:b") == {"type": "api_key", "header": "X-Api-Key", "value": "a:b"}
    assert parse_auth("bearer:t0k") == {"type": "bearer", "token": "t0k"}
    assert parse_auth("basic:ana:pa:ss") == {"type": "basic", "username": "ana", "password": "pa:ss"}
    monkeypatch.setenv("PROBE_TOKEN", "from-env")
    assert parse_auth("bearer:env:PROBE_TOKEN") == {"type": "bearer", "token": "from-env"}
    assert parse_auth(None) is None
    for bad in ("api_key:only", "bearer:", "basic:user", "digest:x", "bearer:env:PROBE_UNSET_VAR"):
        with pytest.raises(ProbeError):
            parse_auth(bad)


def test_help_lists_probe_and_its_auth_forms(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["probe", "--help"])
    text = capsys.readouterr().out
    assert "api_key:HEADER:VALUE" in text and "bearer:TOKEN" in text and "basic:USER:PASSWORD" in text
    assert "--results-port" in text and "--yes" in text


async def test_cli_good_endpoint_writes_reports_without_secrets(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBE_KEY", KEY)
    clock = VirtualClock()
    async with ResultsListener() as listener:
        async with EndpointSet(parse_config({"endpoints": {"p": good_spec(listener.url)}}), now=clock.now) as eps:
            # the listener is already running: the CLI's --results-port would start its own
            out = io.StringIO()
            a = args(eps.url("p"), "--auth", "api_key:X-Api-Key:env:PROBE_KEY", "--secret", SECRET,
                     "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "reports" / "r.xml"),
                     "--report", str(tmp_path / "r.txt"), "--callback-wait", "0", "-v")
            code = await probe_command(a, clock=clock, out=out)
    assert code == 0, out.getvalue()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] is True and data["counts"]["fail"] == 0
    assert data["counts"]["warn"] == 2  # the duplicates: no results listener given to the CLI
    suite = ET.fromstring((tmp_path / "reports" / "r.xml").read_text())  # its missing folder was made
    assert suite.get("tests") == str(len(CHECKS)) and suite.get("failures") == "0"
    texts = [out.getvalue(), (tmp_path / "r.json").read_text(), (tmp_path / "reports" / "r.xml").read_text(),
             (tmp_path / "r.txt").read_text(), capsys.readouterr().err]
    for text in texts:
        assert KEY not in text and SECRET not in text and SECRET[6:] not in text
    assert '"X-Api-Key": "***"' in texts[1]


async def test_cli_results_port_and_failing_check_exit_1(tmp_path, unused_tcp_port):
    clock = VirtualClock()
    spec = good_spec(f"http://127.0.0.1:{unused_tcp_port}/api/integration/activity-results/tasks")
    spec["results_callback"]["once"] = False
    async with EndpointSet(parse_config({"endpoints": {"p": spec}}), now=clock.now) as eps:
        out = io.StringIO()
        a = args(eps.url("p"), "--auth", f"api_key:X-Api-Key:{KEY}", "--secret", SECRET,
                 "--results-port", str(unused_tcp_port), "--junit", str(tmp_path / "r.xml"))
        code = await probe_command(a, clock=clock, out=out)
    assert code == 1
    assert "FAIL  duplicate" in out.getvalue() and "processed 2 times" in out.getvalue()
    suite = ET.fromstring((tmp_path / "r.xml").read_text())
    assert [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None] == ["duplicate", "duplicate_overlap"]


#: what a hostile (or broken) receiver may answer: a title-setting OSC, colours, NUL, BS, VT, a bidi override
HOSTILE_BODY = "\x1b]0;PWNED\x07\x1b[31mRED\x1b[0m\x00\x08\x0b ctl \u202e evil"


async def _hostile_cli(tmp_path, *extra: str) -> tuple[int, str]:
    """``dispatchsim probe`` against a real endpoint answering every request 500 with HOSTILE_BODY."""
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text=HOSTILE_BODY)

    app = web.Application()
    app.router.add_route("*", "/hook", answer)
    runner, port = await start_site(app)
    try:
        out = io.StringIO()
        code = await probe_command(args(f"http://127.0.0.1:{port}/hook", "--callback-wait", "0",
                                        "--only", "seed_post,malformed_json", *extra),
                                   clock=VirtualClock(), out=out)
    finally:
        await runner.cleanup()
    return code, out.getvalue()


async def test_a_hostile_response_reaches_the_text_report_escaped(tmp_path):
    code, text = await _hostile_cli(tmp_path, "-v")
    assert code == 1
    responses = [line for line in text.splitlines() if "response: " in line]
    assert responses
    for line in responses:
        assert r"\x1b]0;PWNED\x07\x1b[31mRED\x1b[0m\x00\x08" in line and r"ctl \u202e evil" in line
    bad = [c for c in text if c != "\n" and (unicodedata.category(c) in ("Cc", "Cf"))]
    assert not bad, bad


async def test_a_hostile_response_keeps_the_junit_file_well_formed(tmp_path):
    code, _ = await _hostile_cli(tmp_path, "--junit", str(tmp_path / "r.xml"), "--json", str(tmp_path / "r.json"))
    assert code == 1
    doc = minidom.parse(str(tmp_path / "r.xml"))
    failures = doc.getElementsByTagName("failure")
    assert failures
    detail = "".join(n.data for f in failures for n in f.childNodes if n.nodeType == n.TEXT_NODE)
    assert r"\x1b]0;PWNED\x07" in detail and r"\x00\x08" in detail
    # the JSON report keeps the answer exactly as it came
    data = json.loads((tmp_path / "r.json").read_text())
    excerpts = [e["response_excerpt"] for c in data["checks"] for e in c["evidence"] if e["response_excerpt"]]
    assert HOSTILE_BODY in excerpts


async def test_remote_target_without_terminal_is_refused(capsys):
    code = await probe_command(args("https://hooks.example.com/in"), stdin=io.StringIO())
    assert code == 2
    err = capsys.readouterr().err
    assert "not a loopback address" in err and "--yes" in err


async def test_remote_target_not_confirmed_at_the_prompt(capsys):
    code = await probe_command(args("https://user:pw@hooks.example.com/in"), stdin=Tty("n\n"))
    assert code == 2
    err = capsys.readouterr().err
    assert "Is this endpoint yours" in err and "nothing sent" in err and "pw@" not in err


async def test_library_refuses_remote_unless_allowed():
    with pytest.raises(RemoteNotConfirmed, match="allow_remote=True"):
        await run_probe("https://hooks.example.com/in")


def test_remote_settings_are_capped():
    s, notes = ProbeSettings.build(rate=50, burst=500, concurrency=20, ordered=10).capped(loopback=False)
    assert (s.rate, s.burst, s.concurrency, s.ordered) == (5.0, 50, 4, 10)
    assert len(notes) == 3
    local, notes = ProbeSettings.build(rate=50).capped(loopback=True)
    assert local.rate == 50 and notes == []


async def test_usage_errors_exit_2(capsys):
    assert await probe_command(args("ftp://127.0.0.1/x")) == 2
    assert await probe_command(args("http://127.0.0.1:9/x", "--auth", "bearer:")) == 2
    assert await probe_command(args("http://127.0.0.1:9/x", "--status-url", "http://127.0.0.1:9/s")) == 2
    with pytest.raises(SystemExit) as exc:  # a count below 1 is refused by argparse itself
        args("http://127.0.0.1:9/x", "--burst", "0")
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("error:") == 4


@pytest.mark.parametrize("flag", ["--json", "--junit", "--report"])
async def test_a_report_path_that_cannot_be_written_is_refused_before_any_request(tmp_path, capsys, flag):
    """A directory (or a folder that cannot be made) named as a report was a traceback at the end, after
    every request had been sent, and the result was lost."""
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.method)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/hooks", handle)
    runner, port = await start_site(app)
    try:
        (tmp_path / "file").write_text("")
        for bad, why in ((tmp_path, "is a directory"), (tmp_path / "file" / "r.out", "cannot create its folder")):
            code = await probe_command(args(f"http://127.0.0.1:{port}/hooks", flag, str(bad)), clock=VirtualClock(),
                                       out=io.StringIO())
            err = capsys.readouterr().err
            assert code == 2 and err.count("\n") == 1 and f"error: {flag} {bad}: {why}" in err, err
        assert hits == []  # refused before the probe sent anything
    finally:
        await runner.cleanup()


def test_redactor_hides_every_form_of_a_credential():
    from dispatchsim.engine.config import Auth
    r = redactor_for(Auth.parse({"type": "basic", "username": "ana", "password": "hunter22"}), "whsec_c2VjcmV0a2V5")
    headers = r.headers({**Auth.parse({"type": "basic", "username": "ana", "password": "hunter22"}).headers(),
                         "X-Echo": "pw=hunter22"})
    assert headers == {"Authorization": "***", "X-Echo": "pw=***"}
    assert r.text("body says whsec_c2VjcmV0a2V5 and c2VjcmV0a2V5") == "body says *** and ***"
    assert r.url("http://ana:hunter22@h/x") == "http://***@h/x"
