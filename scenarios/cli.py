"""``dispatchsim run SCENARIO...``: run scenario files, report, exit 0/1/2."""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from dispatchsim.engine import is_url
from dispatchsim.errors import LocatedError

from . import catalogue
from .errors import ScenarioError
from dispatchsim.outputs import check_output_dir, check_output_file, write_output
from .progress import ProgressBar
from .report import human, junit, svg_timeline, write_json
from .runner import RunResult, check_new_database, run_scenario
from .spec import Scenario


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run scenario files (virtual clock) and check their expectations",
        description="Run one or more scenario files: simulated providers and the engine on one clock "
                    "(virtual by default: hours pass in seconds), then check the expectations. Every file "
                    "is validated before anything runs. Exit code: 0 all expectations hold, 1 some failed, "
                    "2 a file is invalid.")
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help="scenario YAML files (e.g. scenarios/*.yaml) or names of bundled scenarios "
                        "(e.g. ordered_head_outage; see --list)")
    p.add_argument("--list", action="store_true", help="list the bundled scenarios, one line each, and exit")
    p.add_argument("--json", metavar="FILE", help="write a JSON report (one object, or a list for several files)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per expectation)")
    p.add_argument("--events", metavar="PATH", help="write the event log as JSON lines (a directory when "
                                                     "running several files: one NAME.jsonl each)")
    p.add_argument("--record", metavar="DIR", help="write what each simulated provider received (JSON lines)")
    p.add_argument("--html", metavar="FILE", help="write one self-contained HTML report of the run (expectations, "
                                                  "timelines per queue, backlog, latency, retry schedules, "
                                                  "searchable event log)")
    p.add_argument("--plot", metavar="DIR", help="write a retry-timeline SVG per scenario into DIR")
    p.add_argument("--db", metavar="FILE", help="keep the SQLite database (one scenario only; default: temporary)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the result line per scenario")
    p.set_defaults(func=main)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "scenario"


#: how a variable marker of `dispatchsim explore` shows in a located error ("got {'between': [...]}")
_MARKER = re.compile(r"got \{'(between|one_of|maybe)': ")


def main(args: argparse.Namespace) -> int:
    if args.list:
        rows = catalogue.entries()
        width = max(len(e.name) for e in rows)
        for e in rows:
            print(f"{e.name:<{width}}  {e.summary}")
        return 0
    if not args.scenarios:
        print("dispatchsim run: name at least one scenario file or bundled scenario (--list shows them)",
              file=sys.stderr)
        return 2
    scenarios = []
    problems: list[LocatedError] = []
    for arg in args.scenarios:  # every file is checked, so one run shows every mistake in all of them
        try:
            scenarios.append(catalogue.resolve(arg))
        except ScenarioError as exc:
            problems.extend(exc.errors)
    if problems:
        for problem in problems:
            print(problem.located(), file=sys.stderr)
        print(f"dispatchsim run: {_plural(len(problems), 'problem')} in the scenario files; nothing was run",
              file=sys.stderr)
        if any(_MARKER.search(str(problem)) for problem in problems):
            print("dispatchsim run: values like {between: …}, {one_of: …} or {maybe: …} mark a file for "
                  "exploration: run it with `dispatchsim explore FILE`", file=sys.stderr)
        return 2
    clashes = _output_clashes(scenarios, args)
    if clashes:
        for clash in clashes:
            print(f"dispatchsim run: {clash}", file=sys.stderr)
        return 2
    if args.db and len(scenarios) > 1:
        print("dispatchsim run: --db needs exactly one scenario", file=sys.stderr)
        return 2
    if args.db and is_url(args.db):
        print("dispatchsim run: --db takes a SQLite file: a scenario runs on the virtual clock, and a PostgreSQL "
              "database runs on the real clock (use it with dispatchsim serve)", file=sys.stderr)
        return 2
    if args.db:
        check_new_database(args.db)  # before any output folder is made
    problem = _check_outputs(args, several=len(scenarios) > 1)
    if problem:
        print(f"dispatchsim run: {problem}", file=sys.stderr)
        return 2
    results: list[RunResult] = []
    tty = sys.stderr.isatty() and not args.quiet
    # the event log is read by the full report (its timeline), --events, --html and --json (its
    # timeline); the endpoints' whole records by the full report and --json (the provider table),
    # --record and --html: a quiet run without them keeps neither (see run_scenario_async)
    keep_events = not args.quiet or bool(args.events or args.html or args.json)
    keep_records = not args.quiet or bool(args.record or args.html or args.json)
    for sc in scenarios:
        progress = ProgressBar(sc, stream=sys.stderr) if tty else None
        try:
            result = run_scenario(sc, db=args.db, progress=progress, keep_events=keep_events,
                                  keep_records=keep_records)
        finally:
            if progress is not None:
                progress.close()
        results.append(result)
        if args.quiet:
            print(f"{'PASS' if result.ok else 'FAIL'}  {sc.name}  ({sc.source}, "
                  f"{sum(c.ok for c in result.checks)}/{len(result.checks)} expectations, {result.wall:.2f} s)")
        else:
            print(human(result))
    several = len(results) > 1
    unwritten = _write_outputs(args, results)
    for problem in unwritten:
        print(f"dispatchsim run: {problem}", file=sys.stderr)
    if several:
        ok = sum(r.ok for r in results)
        print(f"{ok}/{len(results)} scenarios passed")
    if unwritten:
        return 2
    return 0 if all(r.ok for r in results) else 1


def _output_clashes(scenarios: list[Scenario], args: argparse.Namespace) -> list[str]:
    """Several scenarios write one file each into ``--events``/``--record``/``--plot`` folders, named after
    the scenario: two of one name would write the same files, and the first one's would be lost."""
    folders = [flag for flag, value in (("--events", args.events), ("--record", args.record), ("--plot", args.plot))
               if value]
    if len(scenarios) < 2 or not folders:
        return []
    first: dict[str, Scenario] = {}
    clashes = []
    for sc in scenarios:
        slug = _slug(sc.name)
        other = first.setdefault(slug, sc)
        if other is not sc:
            names = f"both named {sc.name!r}" if other.name == sc.name else f"named {other.name!r} and {sc.name!r}"
            clashes.append(f"{other.source} and {sc.source} are {names}: their files in {', '.join(folders)} would "
                           f"have one name ({slug}.*) and one would overwrite the other; give one of them another name:")
    return clashes


def _check_outputs(args: argparse.Namespace, *, several: bool) -> str | None:
    """Refuse unusable output paths before a long run, not after it; create missing parent folders."""
    files = [("--json", args.json), ("--junit", args.junit), ("--html", args.html)] + ([] if several else [("--events", args.events)])
    dirs = [("--record", args.record), ("--plot", args.plot)] + ([("--events", args.events)] if several else [])
    problems = [check_output_file(flag, value) for flag, value in files] + \
        [check_output_dir(flag, value) for flag, value in dirs]
    return next((p for p in problems if p), None)


def _write_outputs(args: argparse.Namespace, results: list[RunResult]) -> list[str]:
    """Write every output asked for; each one the file system refuses is one line, the others are written."""
    several = len(results) > 1
    writes: list[tuple[str, str | None, Callable[[], object]]] = [
        ("--events", args.events,
         lambda: _write_each(results, args.events, several, ".jsonl", lambda r, path: r.events.write_to(path))),
        ("--record", args.record,
         lambda: _write_each(results, args.record, True, ".record.jsonl", lambda r, path: r.recorder.to_jsonl(path))),
        ("--plot", args.plot, lambda: _write_each(results, args.plot, True, ".svg",
                                                  lambda r, path: path.write_text(svg_timeline(r), encoding="utf-8"))),
        ("--html", args.html, lambda: _write_html(results, args.html)),
        ("--json", args.json, lambda: write_json(results, args.json)),
        ("--junit", args.junit, lambda: Path(args.junit).write_text(junit(results), encoding="utf-8")),
    ]
    problems = (write_output(flag, value, write) for flag, value, write in writes if value)
    return [p for p in problems if p]


def _write_html(results: list[RunResult], path: str) -> None:
    from .html_report import write_html  # its page and plot code only when a page is asked for

    write_html(results, path)


def _write_each(results: list[RunResult], path: str, several: bool, suffix: str,
                write: Callable[[RunResult, Path], None]) -> None:
    """One file at ``path``, or with several results one ``NAME{suffix}`` each in the folder ``path``."""
    if several:
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        for r in results:
            write(r, d / f"{_slug(r.scenario.name)}{suffix}")
    else:
        write(results[0], Path(path))

