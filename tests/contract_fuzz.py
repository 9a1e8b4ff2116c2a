"""The contract fuzzer's run: schemathesis against a real ``dispatchsim serve`` on 127.0.0.1.

Run by ``tests/test_contract_fuzz.py`` inside a network namespace of its own that has only the
loopback interface (``unshare --net``), because the fuzzer writes endpoint URLs that the server then
verifies with a GET: in that namespace any address but 127.0.0.1 is unreachable at once, so nothing
leaves the machine whatever URL is drawn. It is a script, not a test module: schemathesis patches
Hypothesis globally when imported, which must not happen inside the test suite's own process.

Steps: start ``dispatchsim serve`` (real clock, SQLite in OUT) and a receiving endpoint (the chaos
harness's), create what the operations act on (configurations, an activity whose id is the
document's example, a DISPATCHED and a FAILED delivery, a message-event webhook), then run
``schemathesis run`` on the served ``/api/openapi.json`` once per key (a tenant's and the admin's):
every check, deterministic generation (the same cases every run), a bounded number of cases per
operation. Writes ``summary.json`` in OUT and exits with the worst exit code of the runs (0: nothing
found).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos.harness import (ADMIN_KEY, TENANT_KEY, ChaosError, Receiver, ServeProcess, call,  # noqa: E402
                           wait_for, write_config)

EXAMPLE_ACTIVITY = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
#: cases per operation in the fuzzing phase, per key (CONTRACT_FUZZ_EXAMPLES=100 for a longer look)
MAX_EXAMPLES = int(os.environ.get("CONTRACT_FUZZ_EXAMPLES", "6"))
#: the tenant's run has every phase (stateful: sequences along the document's links, e.g. a created
#: activity to its deliveries to force-retry); the admin's (the same operations, another scope) skips
#: coverage and stateful: their cases do not depend on the key, and coverage takes most of a run's time
RUNS = (("tenant", TENANT_KEY, "examples,coverage,fuzzing,stateful"), ("admin", ADMIN_KEY, "examples,fuzzing"))
#: unset (the test suite): deterministic generation, the same cases every run; a number: random
#: generation from that seed, other cases each seed (CONTRACT_FUZZ_SEED=7 for a look elsewhere)
SEED = os.environ.get("CONTRACT_FUZZ_SEED")


def _ok(base: str, method: str, path: str, body: Any = None) -> Any:
    status, _, raw = call(base, method, path, body)
    if status >= 300:
        raise ChaosError(f"{method} {path}: HTTP {status} {raw[:300]!r}")
    return json.loads(raw or b"null")


def seed(base: str, receiver: Receiver) -> dict[str, list[str]]:
    """What the operations act on (tenant acme); returns the ids the fuzzer should draw besides its own."""
    for name, channel in (("crm-hook", "SALESMAN"), ("flaky", "PHONE")):
        _ok(base, "POST", "/api/dispatch-configurations", {
            "id": name, "provider_id": "crm", "channel": channel, "endpoint_url": f"{receiver.base}/{name}",
            "retry": {"base": 1, "max_attempts": 1}})
        _ok(base, "POST", f"/api/dispatch-configurations/{name}/activate")
    _ok(base, "PUT", "/api/accounts/acme/webhook", {"url": receiver.base + "/events", "batch_size": 10})

    def delivery(activity: str, status: str) -> str | None:
        items = _ok(base, "GET", f"/api/activities/{activity}/deliveries")["items"]
        return items[0]["id"] if items and items[0]["status"] == status else None

    done = _ok(base, "POST", "/api/activities", {"id": EXAMPLE_ACTIVITY, "channel": "SALESMAN"})
    dispatched = wait_for(lambda: delivery(done["id"], "DISPATCHED"), 15, "a DISPATCHED delivery")
    receiver.outage = True  # from now on every POST fails: the next delivery ends FAILED (one try)
    failed = _ok(base, "POST", "/api/activities", {"channel": "PHONE"})
    given_up = wait_for(lambda: delivery(failed["id"], "FAILED"), 15, "a FAILED delivery")
    return {"deliveries": [dispatched, given_up], "activities": [done["id"], failed["id"]],
            "configs": ["crm-hook", "flaky"], "urls": [receiver.base + "/crm-hook"], "tenants": ["acme"],
            "providers": ["crm"]}


def config_file(out: Path, ids: dict[str, list[str]]) -> Path:
    """schemathesis.toml: real ids drawn often, loopback URLs, and what answers count as accepting.

    A schema-valid request may be answered 422 (``positive_data_acceptance``): the document says so
    for requests of the right shape that the engine's rules refuse (a cap below the base, a mapping
    that does not compile, an Idempotency-Key used for another request) — everything else that
    matches the schema must be accepted, and a 400 for it is a finding."""
    def values(name: str) -> str:
        return f"[dictionaries.{name}]\nvalues = {json.dumps(ids[name])}\n"

    path = out / "schemathesis.toml"
    path.write_text(
        "[checks.positive_data_acceptance]\n"
        'expected-statuses = ["2xx", "401", "403", "404", "409", "422"]\n\n'
        + "".join(values(n) for n in ids)
        + "\n[parameters]\n"
        + "".join(f'"{where}" = {{ dictionary = "{name}", probability = {p} }}\n' for where, name, p in (
            ("path.delivery_id", "deliveries", 0.7), ("path.activity_id", "activities", 0.7),
            ("path.config_id", "configs", 0.7), ("path.tenant_id", "tenants", 0.5),
            ("path.account_id", "tenants", 0.7), ("query.tenant_id", "tenants", 0.7),
            ("body.tenant_id", "tenants", 0.7), ("body.account_id", "tenants", 0.7),
            ("body.provider_id", "providers", 0.8), ("body.endpoint_url", "urls", 0.9),
            ("body.url", "urls", 0.9))),
        encoding="utf-8")
    return path


def run(base: str, key: str, config: Path, out: Path, name: str, phases: str) -> tuple[int, dict[str, Any]]:
    report = out / f"{name}.json"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
           f"{base}/api/openapi.json", "-H", f"X-Api-Key: {key}", "--checks", "all",
           *(["--generation-deterministic"] if SEED is None else ["--seed", SEED]), "-n", str(MAX_EXAMPLES),
           "--phases", phases,
           "--workers", "1", "--request-timeout", "10", "--report", "json", "--report-json-path", str(report)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out, timeout=300,
                          env={**os.environ, "HOME": str(out)})
    (out / f"{name}.out").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return proc.returncode, {"seconds": round(time.monotonic() - started, 1), "exit": proc.returncode,
                             "report": json.loads(report.read_text()) if report.exists() else None}


def main(out: Path) -> int:
    receiver = Receiver()
    serve = ServeProcess(out / "fuzz.db", write_config(out), out / "serve.log")
    try:
        ids = seed(serve.base, receiver)
        config = config_file(out, ids)
        summary: dict[str, Any] = {"base": serve.base, "seed": SEED or "deterministic", "max_examples": MAX_EXAMPLES}
        worst = 0
        for name, key, phases in RUNS:
            code, summary[name] = run(serve.base, key, config, out, name, phases)
            worst = max(worst, code)
    finally:
        serve.signal(15)
        serve.wait()
        receiver.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return worst


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
