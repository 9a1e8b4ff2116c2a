"""``python -m chaos``: kill -9 cycles, SIGTERM cycles and a fuzz run of every route, bounded in time.

Prints acknowledged / stored / delivered / lost / duplicates for each run and exits 1 on any loss,
any duplicate with a different webhook-id, any bad exit, any HTTP 500 or crash in the logs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos.cycles import run_cycles  # noqa: E402
from chaos.fuzz import run_fuzz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--kill-cycles", type=int, default=20, help="kill -9 cycles (default 20; the long run: 1000)")
    p.add_argument("--term-cycles", type=int, default=20, help="SIGTERM cycles (default 20; the long run: 1000)")
    p.add_argument("--fuzz", type=int, default=2000, help="fuzz requests over every route (default 2000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=900.0, help="per run: stop cycling after this long")
    p.add_argument("--dir", type=Path, help="keep databases and logs here (default: a temporary folder)")
    args = p.parse_args(argv)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="dispatchsim-chaos-"))
    ok = True
    started = time.monotonic()
    if args.kill_cycles:
        r = run_cycles(folder / "kill", kind="kill", cycles=args.kill_cycles, seed=args.seed,
                       max_seconds=args.max_seconds)
        print("\n".join(r.lines()), flush=True)
        ok &= r.ok
    if args.term_cycles:
        r = run_cycles(folder / "term", kind="term", cycles=args.term_cycles, seed=args.seed,
                       max_seconds=args.max_seconds)
        print("\n".join(r.lines()), flush=True)
        ok &= r.ok
    if args.fuzz:
        f = run_fuzz(folder / "fuzz", requests=args.fuzz, seed=args.seed)
        print("\n".join(f.lines()), flush=True)
        ok &= f.ok
    print(f"chaos: {'OK' if ok else 'FAILED'} in {time.monotonic() - started:.0f}s (files in {folder})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
