"""``dispatchsim``: a thin shell over the library."""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from .cliargs import duration


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked for (see ``dispatchsim._version``)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from . import __version__

        print(f"dispatchsim {__version__}")  # on standard output, as argparse's own version action
        parser.exit()


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(outage=args.outage * 60)


def _status(args: argparse.Namespace) -> int:
    from .status import print_status

    return print_status(args.db)


#: The module that registers each command, in the order ``--help`` lists them. Only the chosen
#: command's module is imported (every module imports the engine, and some much more: the test
#: tools import hypothesis), so ``dispatchsim run`` does not pay for ``probe`` or ``explore``.
COMMANDS: dict[str, str] = {"mapping": "mapping", "provider": "providers", "run": "scenarios", "probe": "probe",
                            "serve": "server", "keys": "server", "explore": "testing"}


def _modules(argv: Sequence[str] | None) -> list[str]:
    """The command modules to register: the one named by the first word of ``argv``, or all of them
    (no command, a misspelt one, or only options such as ``--help``)."""
    words = [a for a in argv or () if not a.startswith("-")]
    if words and words[0] in COMMANDS:
        return [COMMANDS[words[0]]]
    if words and words[0] in ("demo", "status"):
        return []
    return list(dict.fromkeys(COMMANDS.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line when ``argv`` (the arguments to come) is None or names no known command;
    otherwise only the named command's module is registered (the others would only cost imports)."""
    parser = argparse.ArgumentParser(
        prog="dispatchsim",
        description="Dispatch engine and simulator for webhook-style push delivery "
                    "(the sender side of Reten dispatch and Reteno webhooks).")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="built-in demo: 3 activities, an endpoint down for 10 simulated minutes",
                          description="Send 3 activities to an endpoint on 127.0.0.1 that answers 503 for a "
                                      "while, on the virtual clock, and print every attempt.")
    demo.add_argument("--outage", type=duration, default=10.0, metavar="MINUTES",
                      help="how long the endpoint fails, in simulated minutes (default: 10)")
    demo.set_defaults(func=_demo)
    status = sub.add_parser("status", help="counts per status and queue of a dispatchsim database",
                            description="Summarise a dispatchsim database (SQLite or PostgreSQL): deliveries per status and "
                                        "queue, oldest pending, blocked queues, recent failures.")
    status.add_argument("db", help="the SQLite file, or a postgresql:// URL")
    status.set_defaults(func=_status)
    for name in _modules(argv):
        importlib.import_module(f"dispatchsim.{name}.cli").register_cli(sub)
    return parser


#: allocations (less deallocations) between two collections of the youngest generation, in a program's run
GC_YOUNG = 20_000


def main(argv: Sequence[str] | None = None) -> int:
    """The ``dispatchsim`` command; ``argv`` None: this process's own arguments (a program's run)."""
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if argv is None:
        # a program's run: what the imports made lives as long as the process, so the cyclic garbage
        # collector stops looking at it (a 10,000-activity run spent 0.08 s of CPU in collections,
        # 0.02 s after this). Not when called with arguments: a caller's objects are not ours to pin.
        gc.freeze()
        # and it looks at the young objects every GC_YOUNG allocations instead of every 700: an
        # attempt allocates hundreds of short-lived objects, which reference counting frees, and the
        # 10,000-activity run made 455 collections (0.047 s) where it now makes 3 (0.012 s), its
        # peak memory unchanged
        gc.set_threshold(GC_YOUNG)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .engine.errors import DispatchsimError

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except DispatchsimError as exc:  # e.g. a database that cannot be used: one line, no traceback
        print(f"{parser.prog} {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


#: the exit status of a command whose standard output was closed: what a shell reports for a
#: process that SIGPIPE ended (128 + 13), as ``yes | head -1`` shows for ``yes``
EXIT_STDOUT_CLOSED = 141


def _stdout_closed() -> int:
    """The reader of standard output went away (``dispatchsim demo | head -2``): stop quietly, as
    command-line tools do. Standard output is pointed at /dev/null first, so the interpreter's own
    flush at exit finds somewhere to put what is still buffered instead of printing another error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # a standard output with no file descriptor (captured): nothing to flush
        pass
    return EXIT_STDOUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
