"""The contract fuzzer (schemathesis) finds nothing against a real ``dispatchsim serve``.

Every operation of the served ``/api/openapi.json`` is fuzzed with every schemathesis check (no 5xx,
responses that conform to the documented schemas, documented status codes and content types, 401
without a key, 405 with ``Allow``, invalid data refused, valid data accepted …), authenticated with
real API keys (a tenant's and the admin's), with deterministic generation so a run
is repeatable, and a bounded number of cases (about 4,700; ~17 s of CPU). ``tests/contract_fuzz.py``
does the work in a process of its own (schemathesis patches Hypothesis globally when imported) and
in a network namespace that has only the loopback interface, so the endpoint URLs the fuzzer writes
can never send the server's verification GETs off the machine. That needs ``unshare`` with the
right to make a network namespace (root, as CI runs); without it the test fails saying so.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _namespace_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed to fuzz in a loopback-only network namespace"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace (run as root, as CI does): {probe.stderr.strip()}"
    return None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_contract_fuzzer_finds_nothing(tmp_path: Path) -> None:
    problem = _namespace_problem()
    if problem is not None:
        pytest.fail(problem)
    script = f"ip link set lo up && exec {sys.executable} {HERE / 'contract_fuzz.py'} {tmp_path}"
    proc = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=280)
    summary_file = tmp_path / "summary.json"
    assert summary_file.exists(), proc.stdout + proc.stderr
    summary = json.loads(summary_file.read_text())
    findings = {name: (tmp_path / f"{name}.out").read_text() for name in ("tenant", "admin")
                if summary[name]["exit"] != 0}
    assert proc.returncode == 0 and not findings, "\n".join(findings.values()) or proc.stderr
    generated = 0
    for name in ("tenant", "admin"):
        report = summary[name]["report"]
        assert report["complete"] and report["exit_code"] == 0
        assert report["operations"]["tested"] == report["operations"]["total"] >= 34, report["operations"]
        assert report["failures"] == [] and report["errors"] == []
        generated += report["test_cases"]["generated"]
    assert generated > 3000, generated
    phases = summary["tenant"]["report"]["phases"]
    assert phases["coverage"]["status"] == phases["stateful"]["status"] == "success", phases
