"""Scenario files: format (spec), runner, expectations, reports and the bundled catalogue."""
from __future__ import annotations

from .expect import Check, evaluate
from .runner import RunResult, run_scenario, run_scenario_async
from .errors import EventsNotKept, ScenarioError
from .spec import Scenario, load_scenario, parse_scenario

__all__ = ["Check", "EventsNotKept", "RunResult", "Scenario", "ScenarioError", "evaluate", "load_scenario",
           "parse_scenario", "run_scenario", "run_scenario_async"]
