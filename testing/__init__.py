"""Property-based testing of retry and ordering, for users of dispatchsim.

- :mod:`dispatchsim.testing.strategies`: hypothesis strategies for configurations, endpoint
  behaviour over time, activity streams and crashes;
- :mod:`dispatchsim.testing.invariants`: the promises of retry and ordering as plain functions over
  a :class:`History`, each explaining itself when it fails;
- :func:`simulate`: run one example on the virtual clock and get its :class:`History`;
- the pytest plugin (:mod:`dispatchsim.testing.plugin`, loaded automatically once dispatchsim is
  installed): fixtures for an engine on the virtual clock, simulated endpoints and their recorder;
- ``dispatchsim explore SCENARIO.yaml``: let hypothesis vary a scenario file's marked values and
  shrink any failure to a minimal scenario.
"""
from __future__ import annotations

from .history import Arrival, Attempt, ConfigRules, Delivery, Event, History
from .simulate import example_scenario, scenario_yaml, simulate

__all__ = ["Arrival", "Attempt", "ConfigRules", "Delivery", "Event", "History", "example_scenario",
           "scenario_yaml", "simulate"]
