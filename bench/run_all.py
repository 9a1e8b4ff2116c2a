"""Run every benchmark in turn (make bench)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ("bench_throughput.py", "bench_simulation.py", "bench_scale.py", "bench_mapping.py",
               "bench_scenario.py", "bench_serve_ordered.py", "bench_ordered.py", "bench_api.py", "bench_console.py"):
    path = HERE / script
    if path.exists():
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(path)], check=True)
