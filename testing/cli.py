"""``dispatchsim explore SCENARIO.yaml --examples N --seed S``: vary a scenario's marked values."""
from __future__ import annotations

import argparse
import sys

from dispatchsim.cliargs import number


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explore", help="let hypothesis vary a scenario's marked values and shrink any failure",
        description="Run many variations of one scenario file on the virtual clock: values written as "
                    "{between: [LOW, HIGH]}, {one_of: [A, B]} or {maybe: true} change from example to example, "
                    "configurations and expectations stay. The first example that breaks an expectation is "
                    "shrunk to the simplest one that still does and printed as a ready-to-run scenario file. "
                    "Exit code: 0 every example passed, 1 an expectation failed, 2 the file is invalid.")
    p.add_argument("scenario", metavar="SCENARIO", nargs="?",
                   help="a scenario YAML file with marked values, or the name of a bundled one (see --list)")
    p.add_argument("--list", action="store_true", help="list the bundled explorations, one line each, and exit")
    p.add_argument("--examples", type=number(int, low=1), default=50, metavar="N", help="examples to try (default: 50)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the exploration (default: 0)")
    p.add_argument("--out", metavar="FILE", help="also write the minimal counterexample to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from dispatchsim.scenarios import ScenarioError, catalogue
    from dispatchsim.outputs import check_output_file, write_output, write_text_file
    from dispatchsim.yamlfile import is_file

    from .explore import Template, explore, report

    if args.list:
        rows = catalogue.entries(catalogue.EXPLORE)
        width = max(len(e.name) for e in rows)
        for e in rows:
            print(f"{e.name:<{width}}  {e.summary}")
        return 0
    if args.scenario is None:
        print("dispatchsim explore: name a scenario file with marked values or a bundled exploration (--list "
              "shows them)", file=sys.stderr)
        return 2
    # before the exploration, not after it; its folder is made only if a counterexample is written
    problem = check_output_file("--out", args.out, create=False)
    if problem:
        print(f"dispatchsim explore: {problem}", file=sys.stderr)
        return 2
    try:
        if is_file(args.scenario, error=ScenarioError):
            template = Template.load(args.scenario)
        else:  # the name of a bundled exploration (a file in the current directory wins)
            text, source, base_dir = catalogue.bundled(args.scenario, catalogue.EXPLORE)
            template = Template(text, source=source, base_dir=base_dir)
        tty = sys.stderr.isatty() and not args.quiet

        def progress(n: int, ok: bool) -> None:
            if tty:
                sys.stderr.write(f"\r\033[Kexample {n}: {'pass' if ok else 'FAIL (shrinking)'}")
                sys.stderr.flush()

        found = explore(template, examples=args.examples, seed_value=args.seed, on_example=progress)
        if tty:
            sys.stderr.write("\r\033[K")
    except ScenarioError as exc:
        print(f"dispatchsim explore: invalid scenario: {exc}", file=sys.stderr)
        return 2
    print(report(found, examples=args.examples, seed_value=args.seed), end="")
    counterexample = found.counterexample
    if counterexample is not None and args.out:
        problem = write_output("--out", args.out, lambda: write_text_file(args.out, counterexample.text))
        if problem:  # the counterexample is printed above: nothing is lost
            print(f"dispatchsim explore: {problem}; the counterexample is printed above", file=sys.stderr)
            return 2
    return 0 if found.ok else 1
