"""Determinism is a promise: the same scenario and seed give byte-identical outputs.

Every bundled scenario runs twice, from two different working directories, through the real CLI in
separate processes (so ports, pids, hash seeds and temporary paths all differ), and the event logs,
JSON reports and recorder files are compared byte for byte.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))
# the 10k-activity scenario is a benchmark, not a determinism check (it takes ~20 s on its own)
FAST = [name for name in CATALOGUE if "10k" not in name]


def _run(workdir: Path, names: list[str], hashseed: str) -> dict[str, bytes]:
    shutil.copytree(ROOT / "scenarios", workdir / "scenarios", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    out = workdir / "out"
    args = [sys.executable, "-m", "dispatchsim", "run", "-q", *[f"scenarios/{n}" for n in names],
            "--json", "out/report.json", "--events", "out/events", "--record", "out/record"]
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.timeout(600)  # the whole catalogue, twice, in subprocesses
def test_every_bundled_scenario_is_byte_identical_across_runs(tmp_path: Path) -> None:
    first = _run(tmp_path / "a", FAST, "1")
    second = _run(tmp_path / "b", FAST, "2")
    assert sorted(first) == sorted(second)
    assert len([n for n in first if n.startswith("events/")]) == len(FAST)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


@pytest.mark.timeout(180)
def test_crash_restart_scenario_is_byte_identical(tmp_path: Path) -> None:
    """The quick version for the default suite: the scenario with a crash and a restart in it."""
    first = _run(tmp_path / "a", ["crash_restart.yaml"], "3")
    second = _run(tmp_path / "b", ["crash_restart.yaml"], "4")
    assert first.keys() == second.keys() and first
    assert [n for n in first if first[n] != second[n]] == []
    assert b"crash" in first["report.json"]
