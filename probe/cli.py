"""``dispatchsim probe URL``: a thin shell over :func:`probe.run_probe` (real clock, real HTTP)."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from dispatchsim.errors import LocatedError
from dispatchsim.yamlfile import load_json, read_text
from dispatchsim.cliargs import duration, number, port, positive_duration
from dispatchsim.outputs import check_output_file, write_output
from dispatchsim.engine.clock import Clock
from dispatchsim.engine.redact import redact_url
from dispatchsim.engine.errors import ConfigError

from .listener import RESULTS_PATH, ResultsListener
from .report import ProbeReport
from .checks import CHECKS, select
from .runner import run_probe
from .settings import LOCAL_CAPS, REMOTE_CAPS, ProbeError, ProbeSettings, check_target

_D = ProbeSettings()
_AT_LEAST_ONE = number(int, low=1)
_RATE = number(float, above=True)
_BODY_SIZE = number(int, low=1024, high=16 * 1024 * 1024)

EPILOG = f"""\
auth (--auth):
  api_key:HEADER:VALUE     e.g. api_key:X-Api-Key:s3cret
  bearer:TOKEN
  basic:USER:PASSWORD
  A VALUE, TOKEN, PASSWORD or --secret written as env:NAME is read from the environment
  variable NAME (keeps it out of the process list). Credentials never appear in any report.

checks, in order (select with --only / --skip): {", ".join(CHECKS)}

processing of every delivery is verified through results callbacks and/or a status URL:
  --results            listen on a free port of 127.0.0.1 and print the callback URL
  --results-url URL    listen at that URL (e.g. http://127.0.0.1:9200{RESULTS_PATH}),
                       the one your endpoint's results call is configured with
  --status-url 'https://…/deliveries/{{id}}' answering {{"processed": N}} (optional "sequence": K)
Given both, both are used. "acknowledged but never processed", "processed more than once" and
"processed in the wrong order" fail the check that sent the delivery. Without either, the report
lists the checks whose processing it could not verify.

limits: loopback targets rate <= {LOCAL_CAPS['rate']:g}/s, burst <= {LOCAL_CAPS['burst']}; any other host needs --yes
(or a typed confirmation) and is capped at rate {REMOTE_CAPS['rate']:g}/s, concurrency {REMOTE_CAPS['concurrency']},
burst {REMOTE_CAPS['burst']}, ordered {REMOTE_CAPS['ordered']}. Exit status: 0 no check failed, 1 a check failed, 2 usage
error or refused.
"""


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "probe", help="check a provider endpoint against realistic sender behaviour (real HTTP)",
        description="Send a provider's receiving endpoint what a real sender sends (verification GET, "
                    "seed-shape activities, bad credentials and signatures, duplicates, bursts, edge "
                    "payloads, slow and aborted requests), bounded in count and time, and report "
                    "pass/warn/fail per check with evidence.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the endpoint URL (only this URL is contacted)")
    p.add_argument("--auth", metavar="SPEC", help="credentials the endpoint expects (see below)")
    p.add_argument("--secret", metavar="SECRET", help="Standard Webhooks signing secret (whsec_… or raw)")
    p.add_argument("--timeout", type=positive_duration, default=_D.timeout, metavar="S",
                   help=f"sender timeout per request, seconds (default {_D.timeout:g})")
    p.add_argument("--connect-timeout", type=positive_duration, default=_D.connect_timeout, metavar="S",
                   help=f"connect timeout, seconds (default {_D.connect_timeout:g})")
    p.add_argument("--ordered", type=_AT_LEAST_ONE, default=_D.ordered, metavar="N",
                   help=f"deliveries of one queue sent in sequence (default {_D.ordered})")
    p.add_argument("--burst", type=_AT_LEAST_ONE, default=_D.burst, metavar="N",
                   help=f"concurrent deliveries in the burst (default {_D.burst})")
    p.add_argument("--rate", type=_RATE, default=_D.rate, metavar="R",
                   help=f"burst start rate per second (default {_D.rate:g})")
    p.add_argument("--concurrency", type=_AT_LEAST_ONE, default=_D.concurrency, metavar="C",
                   help=f"burst requests in flight at most (default {_D.concurrency})")
    p.add_argument("--max-body", type=_BODY_SIZE, default=_D.max_body, metavar="BYTES",
                   help=f"size of the max-size payload (default {_D.max_body})")
    p.add_argument("--slow-body", type=duration, default=_D.slow_body, metavar="S",
                   help=f"seconds over which the slow body is sent (default {_D.slow_body:g})")
    p.add_argument("--results", action="store_true",
                   help="listen for results callbacks on a free port of 127.0.0.1 (the URL is printed)")
    p.add_argument("--results-url", metavar="URL", help="listen for results callbacks at this http://HOST:PORT/… URL")
    p.add_argument("--results-port", type=port, metavar="PORT",
                   help=f"listen on 127.0.0.1:PORT{RESULTS_PATH} for results callbacks (0: a free port)")
    p.add_argument("--callback-wait", type=duration, default=_D.callback_wait, metavar="S",
                   help=f"after the checks, how long deliveries may take to show as processed "
                        f"(default {_D.callback_wait:g})")
    p.add_argument("--settle", type=duration, default=_D.settle, metavar="S",
                   help=f"then how long to wait for late duplicates (default {_D.settle:g})")
    p.add_argument("--status-url", metavar="URL", help="URL with {id}: how many times that delivery was processed")
    p.add_argument("--max-time", type=positive_duration, default=_D.max_time, metavar="S",
                   help=f"time budget of the whole probe (default {_D.max_time:g})")
    p.add_argument("--check-time", type=positive_duration, default=_D.check_time, metavar="S",
                   help=f"each check's own deadline: a check that hangs fails alone (default {_D.check_time:g})")
    p.add_argument("--only", action="append", default=[], metavar="CHECK[,CHECK]", help="run only these checks")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK[,CHECK]", help="do not run these checks")
    p.add_argument("--payload", action="append", default=[], metavar="FILE",
                   help="your own payload (JSON object, or an array of them) sent through every check instead "
                        "of the documented example activity; repeat for several files")
    p.add_argument("--seed", type=int, default=0, help="seed of payload ids and contents (default 0)")
    p.add_argument("--mapping", metavar="FILE", help="the provider's payload mapping (YAML/JSON): payloads are "
                                                     "sent in the shape the endpoint expects")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML (one testcase per check)")
    p.add_argument("--report", metavar="FILE", help="write the report: .json → JSON, .xml → JUnit, else the table")
    p.add_argument("-v", "--verbose", action="store_true", help="show the evidence of every check")
    p.add_argument("--yes", action="store_true", help="probe a non-loopback URL without asking")
    p.set_defaults(func=run_cli)
    return p


def parse_auth(spec: str | None, environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """``api_key:HEADER:VALUE`` / ``bearer:TOKEN`` / ``basic:USER:PASSWORD`` → an engine auth dict."""
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "api_key":
        header, _, value = rest.partition(":")
        if header and value:
            return {"type": "api_key", "header": header, "value": _resolve(value, environ)}
    elif kind == "bearer" and rest:
        return {"type": "bearer", "token": _resolve(rest, environ)}
    elif kind == "basic":
        user, _, password = rest.partition(":")
        if user and password:
            return {"type": "basic", "username": user, "password": _resolve(password, environ)}
    raise ProbeError("--auth: expected api_key:HEADER:VALUE, bearer:TOKEN or basic:USER:PASSWORD "
                     f"(got type {kind!r})")


def _resolve(value: str, environ: dict[str, str] | None = None) -> str:
    if value.startswith("env:"):
        env = os.environ if environ is None else environ
        name = value[4:]
        if name not in env or not env[name]:
            raise ProbeError(f"environment variable {name} is not set or empty")
        return env[name]
    return value


def estimate_requests(s: ProbeSettings) -> int:
    """An upper bound of the requests a probe sends with these settings."""
    # verify; per starting payload: seed (+ its re-send after a timeout) and 4 edges; 2 auth, 3 signature,
    # header case, malformed, 2 duplicates of 2, bursts, slow (+ re-check), 2 x (3 + re-check), abort (+ re-check);
    # then one status URL read per delivery, twice (poll and final)
    bases = max(1, len(s.payloads))
    deliveries = 2 * bases + 4 * bases + 2 + 3 + 1 + 4 + s.ordered + s.burst + 1 + 6
    return 1 + deliveries + 1 + 2 + 2 + (2 * deliveries if s.status_url else 0)


def run_cli(args: argparse.Namespace) -> int:
    return asyncio.run(probe_command(args))


async def probe_command(args: argparse.Namespace, *, clock: Clock | None = None, stdin: TextIO | None = None,
                        out: TextIO | None = None) -> int:
    """The whole command as one async call (tests run it on the virtual clock)."""
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    try:
        settings: dict[str, Any] = dict(
            auth=parse_auth(args.auth), secret=_resolve(args.secret) if args.secret else None,
            timeout=args.timeout, connect_timeout=args.connect_timeout, ordered=args.ordered, burst=args.burst,
            rate=args.rate, concurrency=args.concurrency, max_body=args.max_body, slow_body=args.slow_body,
            callback_wait=args.callback_wait, settle=args.settle, status_url=args.status_url,
            max_time=args.max_time, check_time=args.check_time, seed=args.seed,
            only=_ids(args.only), skip=_ids(args.skip), payloads=load_payloads(args.payload))
        if getattr(args, "mapping", None):
            settings["mapping"] = _load_mapping(args.mapping)
        validated = ProbeSettings.build(**settings)
        select(validated.only, validated.skip)
        loopback = check_target(args.url)
        listener = _listener(args)
    except (ProbeError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the report files are checked (their folders made) before any request is sent: a probe's result
    # must not be lost to a missing folder at its end
    outputs = (("--json", args.json), ("--junit", args.junit), ("--report", args.report))
    for flag, value in outputs:
        problem = check_output_file(flag, value)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if not loopback:
        capped, _ = validated.capped(False)
        if not args.yes and not _confirm(args.url, estimate_requests(capped), capped, stdin):
            return 2
        settings["allow_remote"] = True
    try:
        report = await _run(args.url, settings, listener, clock)
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen for results callbacks: {exc}", file=sys.stderr)
        return 2
    if args.json:
        report.report_path = args.json
    elif args.report and args.report.endswith(".json"):
        report.report_path = args.report
    print(report.table(verbose=args.verbose), file=out)
    renders = {"--json": report.to_json, "--junit": report.to_junit,
               "--report": lambda: _by_extension(report, args.report)}
    failed = False
    for flag, value in outputs:
        if value:
            problem = write_output(flag, value, lambda: Path(value).write_text(renders[flag](), encoding="utf-8"))
            if problem is not None:
                print(f"error: {problem}", file=sys.stderr)
                failed = True
    return 2 if failed else report.exit_code


def _load_mapping(path: str) -> dict[str, Any]:
    """Load and compile the mapping now, so a bad one is refused before anything is sent."""
    from dispatchsim.mapping import MappingError, compile_mapping, load_mapping_file

    try:
        spec, lines = load_mapping_file(path)
        return compile_mapping(spec, lines=lines).spec
    except MappingError as exc:
        raise ProbeError(f"mapping {path}: {exc}") from None


def _ids(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _listener(args: argparse.Namespace) -> ResultsListener | None:
    """The results listener the options ask for (not started yet), or None."""
    if args.results_url:
        return ResultsListener.at(args.results_url)
    if args.results or args.results_port is not None:
        return ResultsListener(port=args.results_port or 0)
    return None


def load_payloads(paths: list[str]) -> tuple[dict[str, Any], ...]:
    """The team's payload files: each a JSON object or an array of objects (``file:line: message`` if not)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = load_json(read_text(path, what="the payload file"), source=path)
        except LocatedError as exc:
            raise ProbeError(str(exc)) from None
        items = data if isinstance(data, list) else [data]
        if not items or not all(isinstance(i, dict) for i in items):
            raise ProbeError(f"{path}:1: payload: expected a JSON object (or an array of objects)")
        out.extend(items)
    if len(out) > MAX_PAYLOADS:
        raise ProbeError(f"--payload: at most {MAX_PAYLOADS} payloads (got {len(out)}): each is sent by every check")
    return tuple(out)


#: Team payloads per probe: single-delivery checks send each one, so this bounds the requests.
MAX_PAYLOADS = 10


async def _run(url: str, settings: dict[str, Any], listener: ResultsListener | None,
               clock: Clock | None) -> ProbeReport:
    if listener is None:
        return await run_probe(url, clock=clock, **settings)
    async with listener:
        print(f"listening for results callbacks on {listener.url}", file=sys.stderr)
        return await run_probe(url, clock=clock, results_listener=listener, **settings)


def _confirm(url: str, requests: int, s: ProbeSettings, stdin: TextIO) -> bool:
    where = redact_url(url)
    if not stdin.isatty():
        print(f"error: {where} is not a loopback address and there is no terminal to confirm: the probe would "
              f"send up to {requests} requests there. Re-run with --yes if this endpoint is yours.",
              file=sys.stderr)
        return False
    print(f"The probe will send up to {requests} requests to {where} (at most {s.rate:g}/s, "
          f"{s.concurrency} at once), including bad credentials and aborted requests.", file=sys.stderr)
    print("Is this endpoint yours to test? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = stdin.readline().strip().lower()
    if answer in ("y", "yes"):
        return True
    print("not confirmed; nothing sent", file=sys.stderr)
    return False


def _by_extension(report: ProbeReport, path: str) -> str:
    if path.endswith(".json"):
        return report.to_json() + "\n"
    if path.endswith(".xml"):
        return report.to_junit()
    return report.table(verbose=True) + "\n"
