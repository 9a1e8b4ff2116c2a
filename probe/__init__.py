"""Probe: a conformance and robustness check a provider team runs against its own receiving endpoint.

``await run_probe(url, auth=..., secret=...)`` sends what a real sender sends — and the awkward
things it sometimes does — bounded in count and time, and returns a :class:`ProbeReport` of
pass/warn/fail checks with the exchanges as evidence. ``dispatchsim probe URL`` is the same call.
"""
from __future__ import annotations

from .checks import CHECKS, CheckSpec
from .listener import RESULTS_PATH, ResultsListener
from .report import CheckResult, Evidence, ProbeReport, Status
from .runner import run_probe
from .settings import ProbeError, ProbeSettings, RemoteNotConfirmed, check_target

__all__ = [
    "CHECKS", "RESULTS_PATH", "CheckResult", "CheckSpec", "Evidence", "ProbeError", "ProbeReport", "ProbeSettings",
    "RemoteNotConfirmed", "ResultsListener", "Status", "check_target", "run_probe",
]
