"""The bundled catalogue: every scenario runs and all of its expectations hold; runs are reproducible."""
from __future__ import annotations

from pathlib import Path

import pytest

from dispatchsim.scenarios.runner import run_scenario
from dispatchsim.scenarios.spec import load_scenario, parse_scenario

CATALOGUE = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))


def _failures(result) -> str:
    bad = [c for c in result.checks if not c.ok]
    return "\n".join(f"  line {c.line}: {c.name}: expected {c.expected}; observed {c.observed}" for c in bad)


def test_catalogue_is_complete():
    names = {p.stem for p in CATALOGUE}
    assert {"happy_path_seed_payload", "reteno_backoff", "ordered_head_outage", "skip_vs_block",
            "partitioned_by_commerce", "flaky_at_load", "timeouts_duplicates", "retry_after_429",
            "force_retry_failed", "mapping_own_format", "fan_out_one_down", "verification_refused",
            "crash_restart", "outage_6h_10k", "svix_schedule", "auto_disable_reenable", "circuit_breaker_flapping",
            "recover_since_long_outage"} <= names


@pytest.mark.timeout(300)  # the catalogue includes the 10,000-activity outage (about 20 s alone, more on a busy machine)
@pytest.mark.parametrize("path", CATALOGUE, ids=[p.stem for p in CATALOGUE])
def test_bundled_scenario_passes(path):
    scenario = load_scenario(path)
    assert scenario.description.strip(), f"{path.name} needs a description"
    assert scenario.expect, f"{path.name} states no expectation"
    result = run_scenario(scenario)
    assert result.checks, f"{path.name}: no checks were evaluated"
    assert result.ok, f"{path.name}: failing checks:\n{_failures(result)}"


def test_timeouts_give_duplicate_receptions_with_one_webhook_id_each():
    """What the receiver sees: 4 copies per webhook-id, exactly one of them acknowledged."""
    result = run_scenario(load_scenario(CATALOGUE[0].parent / "timeouts_duplicates.yaml"))
    dups = result.recorder.duplicates("crm")
    assert len(dups) == 5
    assert {(d.received, d.acknowledged) for d in dups.values()} == {(4, 1)}
    assert {d["webhook_id"] for d in result.deliveries} == set(dups)


def test_same_seed_gives_identical_event_log_and_record():
    """Concurrent deliveries (ordering none, 10 in flight), seeded 503s and latencies: byte-identical twice."""
    text = """
name: determinism
seed: 21
duration: 2h
providers:
  crm:
    behaviour:
      mix: [{p: 0.3, status: 503}, {p: 0.1, status: 200, latency: 40s}, {status: 200, latency: {uniform: [10ms, 2s]}}]
tenants: [acme]
configurations:
  - {id: c, tenant: acme, provider: crm, ordering: {mode: none, concurrency: 10}, timeouts: {connect: 5, total: 30}}
timeline:
  - at: 0s
    create: {count: 40}
  - at: 5m
    crash: {restart_after: 1m}
  - at: 10m
    create: {rate: 2/s, for: 30s}
"""
    first = run_scenario(parse_scenario(text, source="determinism.yaml"))
    second = run_scenario(parse_scenario(text, source="determinism.yaml"))
    assert first.counts == second.counts and first.counts["DISPATCHED"] == 100
    assert len(first.attempts) > 100  # retries and timeouts really happened
    assert first.events_jsonl() == second.events_jsonl()
    assert first.recorder.jsonl() == second.recorder.jsonl()
    assert first.recorder.records[1].headers["host"] == "sim:crm"  # not the run's own port
