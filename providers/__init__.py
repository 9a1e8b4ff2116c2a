"""Simulated provider endpoints that fail realistically, and a recorder of what they received.

Depends on nothing else in dispatchsim: the engine, scenarios and people at a terminal all
drive it the same way — a config (YAML or dict), an :class:`EndpointSet` in the running
event loop, and its :class:`Recorder`.
"""
from __future__ import annotations

from .behaviour import FAULTS, REQUEST_FAULTS
from .checks import sign
from .config import (
    EndpointConfig,
    ProvidersConfig,
    load_config,
    parse_behaviour,
    parse_config,
)
from .endpoint import Endpoint, EndpointSet
from .errors import ProviderConfigError, RecordsNotKept
from .recorder import (
    CallbackRecord,
    DuplicateInfo,
    EndpointEvent,
    OrderReport,
    OrderViolation,
    Record,
    Recorder,
)

__all__ = [
    "FAULTS",
    "REQUEST_FAULTS",
    "CallbackRecord",
    "DuplicateInfo",
    "Endpoint",
    "EndpointConfig",
    "EndpointEvent",
    "EndpointSet",
    "OrderReport",
    "OrderViolation",
    "RecordsNotKept",
    "ProviderConfigError",
    "ProvidersConfig",
    "Record",
    "Recorder",
    "load_config",
    "parse_behaviour",
    "parse_config",
    "sign",
]
