"""dispatchsim engine: the sender side of Reten dispatch / Reteno webhooks, on SQLite."""
from __future__ import annotations

from .clock import Clock, RealClock, VirtualClock, iso, new_virtual_loop, run_virtual
from .core import Engine, RunSummary
from .errors import (ActivationRefused, ActivityError, ConfigError, DispatchsimError, InvalidTransition,
                     NotFound)
from .policy import PRESETS, OrderingPolicy, RetryPolicy, Timeouts, delay
from .sender import Outcome, OutcomeKind
from .states import ACTIVE, TERMINAL, TRANSITIONS, Status

__all__ = [
    "ACTIVE", "ActivationRefused", "ActivityError", "Clock", "ConfigError", "DispatchsimError", "Engine",
    "InvalidTransition", "NotFound", "OrderingPolicy", "Outcome", "OutcomeKind", "PRESETS", "RealClock",
    "RetryPolicy", "RunSummary", "Status", "TERMINAL", "TRANSITIONS", "Timeouts", "VirtualClock", "delay", "iso",
    "new_virtual_loop", "run_virtual",
]
