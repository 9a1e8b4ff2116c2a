"""Shared fixtures: every async test runs on a virtual-time loop (no real sleeps)."""
from __future__ import annotations

import pytest

from engine.clock import new_virtual_loop


def pytest_asyncio_loop_factories(config, item):
    """All async tests and fixtures run on a time-compacting loop."""
    return {"virtual": new_virtual_loop}
