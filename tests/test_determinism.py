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

from dispatchsim.scenarios.runner import _Sanitizer

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))
# the 10k-activity scenario is a benchmark, not a determinism check (it takes ~20 s on its own)
FAST = [name for name in CATALOGUE if "10k" not in name]


def _run(workdir: Path, names: list[str], hashseed: str, *, extra: dict[str, str] | None = None,
         options: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Run the scenarios ``names`` (bundled, or written from ``extra``: name -> text) from ``workdir``."""
    shutil.copytree(ROOT / "scenarios", workdir / "scenarios", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for name, text in (extra or {}).items():
        (workdir / "scenarios" / name).write_text(text)
    out = workdir / "out"
    args = (sys.executable, "-m", "dispatchsim", "run", "-q", *[f"scenarios/{n}" for n in names],
            "--json", "out/report.json", "--events", "out/events", "--record", "out/record", *options)
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


#: One endpoint refuses connections from the start (so the verification GET of its configuration fails
#: too), the other for ten minutes after the activation: the sender's errors name the refused address.
REFUSING = """\
name: refusing-endpoints
seed: 5
duration: 1h
providers:
  down:
    behaviour:
      windows: [{from: 0s, to: 10m, fault: refuse}]
      else: {status: 200}
  flaky:
    behaviour:
      windows: [{from: 1s, to: 10m, fault: refuse}]
      else: {status: 200}
tenants: [acme]
configurations:
  - {id: c-down, tenant: acme, provider: down, activation: refused}
  - {id: c-flaky, tenant: acme, provider: flaky, retry: reteno}
timeline:
  - {at: 2s, create: {count: 2}}
expect:
  activation_refused: [c-down]
  all_delivered: true
  counts: {DISPATCHED: 2}
"""


@pytest.mark.timeout(180)
def test_endpoints_refusing_connections_are_byte_identical(tmp_path: Path) -> None:
    """aiohttp names a refused address as ``('127.0.0.1', PORT)``: that form differed run to run in the
    event log, the timeline, the activation's expectation and every report."""
    extra = {"refusing.yaml": REFUSING}
    first = _run(tmp_path / "a", ["refusing.yaml"], "5", extra=extra, options=("--html", "out/report.html"))
    second = _run(tmp_path / "b", ["refusing.yaml"], "6", extra=extra, options=("--html", "out/report.html"))
    assert first.keys() == second.keys() and "report.html" in first
    assert [n for n in first if first[n] != second[n]] == []
    assert b"Connect call failed (sim:flaky)" in first["events"]
    assert b"NOT activated: connect_error" in first["report.json"]
    assert b"Connect call failed (sim:down)" in first["report.json"]
    assert [n for n in first if b"127.0.0.1" in first[n]] == []


def test_every_form_of_a_simulated_endpoints_address_is_replaced_by_its_name() -> None:
    sanitize = _Sanitizer()
    sanitize.endpoint("crm", "http://127.0.0.1:4321/hook", "127.0.0.1", 4321)
    sanitize.endpoint("erp", "http://[::1]:4322/hook", "::1", 4322)
    assert sanitize("POST http://127.0.0.1:4321/hook: Cannot connect to host 127.0.0.1:4321 ssl:default "
                    "[Connect call failed ('127.0.0.1', 4321)]") == (
        "POST sim://crm: Cannot connect to host sim:crm ssl:default [Connect call failed (sim:crm)]")
    assert sanitize("http://[::1]:4322/hook [::1]:4322 [Connect call failed ('::1', 4322, 0, 0)]") == (
        "sim://erp sim:erp [Connect call failed (sim:erp, 0, 0)]")
    assert sanitize("port 4321 of 127.0.0.1, ('127.0.0.1', 43210)") == "port 4321 of 127.0.0.1, ('127.0.0.1', 43210)"
