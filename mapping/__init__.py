"""Payload mapping: compile, validate and apply a declarative mapping of the activity payload.

A tenant's provider may want another shape than the seed's activity JSON; a mapping (data, YAML
or JSON) describes that shape. It is compiled once — every problem reported with its field and
line — and applied per delivery without parsing. See ``docs/mapping.md`` for the format.
This package knows nothing of the engine.
"""
from __future__ import annotations

from .cli import register_cli
from .compiler import CompiledMapping, compile_mapping
from .errors import MappingApplyError, MappingError, MappingSpecError, Problem
from .functions import FUNCTIONS
from .loader import load_mapping_file
from .activity import SEED_PAYLOAD, seed_payload

__all__ = [
    "SEED_PAYLOAD", "seed_payload", "MappingError", "MappingSpecError", "MappingApplyError", "Problem",
    "compile_mapping", "CompiledMapping", "load_mapping_file", "register_cli", "FUNCTIONS",
]
