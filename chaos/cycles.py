"""Kill -9 and SIGTERM cycles of a real ``dispatchsim serve`` with activities arriving.

Each cycle starts serve on the same database, lets activities (some of them large) arrive for a
random moment while the receiver is up or in an outage, then kills the process: ``kill -9``
(nothing may be lost: at-least-once, duplicates only with the same ``webhook-id``) or SIGTERM
(the process must exit 0, every time, with no traceback or crash in its log). A last run ends
the outage and waits until every acknowledged activity is delivered to both configurations.
"""
from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from .harness import (ChaosError, Load, Receiver, ServeProcess, Tally, setup_configs, settle, wait_for,
                      write_config)

#: what in a serve log means the process did not stop cleanly
CRASH_MARKERS = ("Traceback", "Segmentation", "CancelledError", "Fatal Python error", '"api.error"', "job.failed")


@dataclass
class CycleReport:
    kind: str
    cycles: int = 0
    seconds: float = 0.0
    bad_exits: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    tally: Tally | None = None

    @property
    def ok(self) -> bool:
        return (not self.bad_exits and not self.log_problems and not self.server_errors
                and self.tally is not None and self.tally.ok)

    def lines(self) -> list[str]:
        out = [f"{self.kind}: {self.cycles} cycles in {self.seconds:.1f}s: "
               + (self.tally.line() if self.tally else "no tally")]
        if self.bad_exits:
            out.append(f"  bad exits ({len(self.bad_exits)}): " + "; ".join(self.bad_exits[:5]))
        if self.log_problems:
            out.append(f"  log problems ({len(self.log_problems)}): " + "; ".join(self.log_problems[:3]))
        if self.server_errors:
            out.append(f"  HTTP 5xx ({len(self.server_errors)}): " + "; ".join(self.server_errors[:3]))
        if self.tally and self.tally.lost:
            out.append("  lost: " + ", ".join(self.tally.lost[:10]))
        out.append("  " + ("OK" if self.ok else "FAILED"))
        return out


def run_cycles(folder: Path, *, kind: str, cycles: int, seed: int = 1, max_seconds: float = 600.0,
               large_every: int = 5, large_bytes: int = 200_000, settle_timeout: float = 120.0) -> CycleReport:
    """``kind``: "kill" (SIGKILL during an outage half of the time) or "term" (SIGTERM, exit 0 required).
    Stops early (reporting the cycles run) when ``max_seconds`` would be exceeded."""
    folder.mkdir(parents=True, exist_ok=True)
    db, log = folder / f"{kind}.db", folder / f"{kind}.log"
    for p in folder.glob(f"{kind}.*"):
        p.unlink()
    cfg = write_config(folder)
    rng = random.Random(seed)
    receiver = Receiver()
    load = Load(seed=seed, large_every=large_every, large_bytes=large_bytes)
    report = CycleReport(kind="kill -9" if kind == "kill" else "SIGTERM")
    started = time.monotonic()
    try:
        srv = ServeProcess(db, cfg, log)
        setup_configs(srv.base, receiver)
        load.start()
        for n in range(cycles):
            if n:
                try:
                    srv = ServeProcess(db, cfg, log, shutdown_deadline=rng.choice((0.05, 2.0)))
                except ChaosError as exc:  # a finding: serve refused to start after the previous cycle
                    report.bad_exits.append(f"cycle {n}: {exc}")
                    break
            receiver.outage = kind == "kill" and rng.random() < 0.5
            load.target = srv.base
            before = len(load.acked)
            # let some activities in (at least one acknowledged), then strike at a random moment
            wait_for(lambda: len(load.acked) > before, 30, "an activity to be acknowledged")
            moment = time.monotonic() + rng.uniform(0.0, 0.4)
            wait_for(lambda: time.monotonic() >= moment, 1, "the moment to strike")
            if kind == "kill":
                srv.signal(signal.SIGKILL)
                srv.wait()
            else:
                srv.signal(signal.SIGTERM)
                code, out = srv.wait()
                if code != 0:
                    report.bad_exits.append(f"cycle {n}: exit {code}")
            load.target = None
            report.cycles = n + 1
            if time.monotonic() - started > max_seconds:
                break
        load.stop()
        report.server_errors = list(load.server_errors)
        try:
            report.tally = settle(db, cfg, log, receiver, load.acked, settle_timeout)
        except ChaosError as exc:
            report.bad_exits.append(f"settling: {exc}")
    finally:
        load.target = None
        if load._thread.is_alive():
            load.stop()
        receiver.close()
        report.seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    report.log_problems = [ln[:300] for ln in text.splitlines() if any(m in ln for m in CRASH_MARKERS)]
    return report
