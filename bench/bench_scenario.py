"""The bundled 6-hour / 10,000-activity scenario: wall time and peak RSS (issue target: < 30 s, < 200 MB).

Each run is a separate process (``dispatchsim run``) so its peak RSS is its own. Baseline in the same
run: the same file scaled down to 1,000 activities (the fixed cost of Python, imports and servers).
Usage: python bench/bench_scenario.py
"""
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "outage_6h_10k.yaml"


def run(path: Path) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "dispatchsim.cli", "run", str(path), "-q"], capture_output=True,
                         text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if res.returncode != 0:
        raise SystemExit(f"{path} failed:\n{res.stdout}{res.stderr}")
    return wall, max(peak, before) / 1024, res.stdout.strip()


def main() -> None:
    text = SCENARIO.read_text(encoding="utf-8")
    # with 250 per burst a commerce may first appear after +0s, so the exact POST count is left out
    small = "\n".join(line for line in text.replace("count: 2500", "count: 250")
                       .replace("DISPATCHED: 10000", "DISPATCHED: 1000").splitlines()
                       if not line.strip().startswith("received:"))
    with tempfile.TemporaryDirectory() as d:
        small_path = Path(d) / "outage_6h_1k.yaml"
        small_path.write_text(small, encoding="utf-8")
        base = run(small_path)  # smaller first: RUSAGE_CHILDREN keeps the max so far
        big = run(SCENARIO)
    print("scenario benchmark: scenarios/outage_6h_10k.yaml (6-hour outage, 50 ordered queues, virtual clock)")
    print(f"  1,000 activities (baseline) : wall {base[0]:6.2f} s   peak RSS {base[1]:6.0f} MB   {base[2]}")
    print(f"  10,000 activities           : wall {big[0]:6.2f} s   peak RSS {big[1]:6.0f} MB   {big[2]}")
    print(f"  ratio 10k / 1k              : wall {big[0] / base[0]:.2f}x   RSS {big[1] / base[1]:.2f}x"
          "   (targets for 10k: < 30 s, < 200 MB)")


if __name__ == "__main__":
    main()
