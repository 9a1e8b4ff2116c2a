"""dispatchsim: a dispatch engine and simulator for webhook-style push delivery.

The public face of the package. Everything the ``dispatchsim`` command does is a plain call here first::

    from dispatchsim import Engine, run_scenario, run_probe

Names are imported on first use, so ``import dispatchsim`` stays cheap and the parts below
(``dispatchsim.engine``, ``dispatchsim.mapping``, ``dispatchsim.providers``, ``dispatchsim.scenarios``,
``dispatchsim.probe``, ``dispatchsim.server``) are loaded only when needed.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    "Engine": "dispatchsim.engine",
    "RunSummary": "dispatchsim.engine",
    "Status": "dispatchsim.engine",
    "RetryPolicy": "dispatchsim.engine",
    "OrderingPolicy": "dispatchsim.engine",
    "VirtualClock": "dispatchsim.engine",
    "RealClock": "dispatchsim.engine",
    "run_virtual": "dispatchsim.engine",
    "DispatchsimError": "dispatchsim.errors",
    "LocatedError": "dispatchsim.errors",
    "ScenarioError": "dispatchsim.scenarios",
    "run_scenario": "dispatchsim.scenarios",
    "run_scenario_async": "dispatchsim.scenarios",
    "load_scenario": "dispatchsim.scenarios",
    "run_probe": "dispatchsim.probe",
    "ProbeSettings": "dispatchsim.probe",
    "compile_mapping": "dispatchsim.mapping",
    "load_mapping_file": "dispatchsim.mapping",
    "EndpointSet": "dispatchsim.providers",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from .engine import Engine, OrderingPolicy, RealClock, RetryPolicy, RunSummary, Status, VirtualClock, run_virtual
    from .errors import DispatchsimError, LocatedError
    from .mapping import compile_mapping, load_mapping_file
    from .probe import ProbeSettings, run_probe
    from .providers import EndpointSet
    from .scenarios import ScenarioError, load_scenario, run_scenario, run_scenario_async


def _version() -> str:
    """The installed distribution's version, read on first use: ``importlib.metadata`` costs a
    command that never asks for it (``dispatchsim run``) about 0.03 s of CPU at start."""
    from importlib import metadata

    try:
        return metadata.version("dispatchsim")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dispatchsim' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
