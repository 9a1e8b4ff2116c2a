"""``dispatchsim``: a thin shell over the library."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(outage=args.outage * 60)


def _status(args: argparse.Namespace) -> int:
    from .status import print_status

    return print_status(args.db)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatchsim",
        description="Dispatch engine and simulator for webhook-style push delivery "
                    "(the sender side of Reten dispatch and Reteno webhooks).")
    parser.add_argument("--version", action="version", version=f"dispatchsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="built-in demo: 3 activities, an endpoint down for 10 simulated minutes",
                          description="Send 3 activities to an endpoint on 127.0.0.1 that answers 503 for a "
                                      "while, on the virtual clock, and print every attempt.")
    demo.add_argument("--outage", type=float, default=10.0, metavar="MINUTES",
                      help="how long the endpoint fails, in simulated minutes (default: 10)")
    demo.set_defaults(func=_demo)
    status = sub.add_parser("status", help="counts per status and queue of a dispatchsim database",
                            description="Summarise a dispatchsim SQLite database: deliveries per status and "
                                        "queue, oldest pending, blocked queues, recent failures.")
    status.add_argument("db", help="path to the SQLite file")
    status.set_defaults(func=_status)
    from .mapping import cli as mapping_cli
    from .probe import cli as probe_cli
    from .providers import cli as providers_cli
    from .scenarios import cli as scenarios_cli
    from .server import cli as server_cli
    from .testing import cli as testing_cli

    for mod in (mapping_cli, providers_cli, scenarios_cli, probe_cli, server_cli, testing_cli):
        mod.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .engine.errors import DispatchsimError

    try:
        return int(args.func(args) or 0)
    except DispatchsimError as exc:  # e.g. a database that cannot be used: one line, no traceback
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
