"""The errors of scenarios: a scenario file refused before anything runs, and an event log asked for that
was not kept."""
from __future__ import annotations

from dispatchsim.errors import DispatchsimError, LocatedError


class ScenarioError(LocatedError):
    """The scenario file is invalid; nothing was run.

    Each problem names the file, the line, the key and what was expected.
    """

    @property
    def key(self) -> str | None:
        """The key as written in the file (``configurations[0].retry``); the same as ``field``."""
        return self.field


class EventsNotKept(DispatchsimError, ValueError):
    """The run was asked not to keep its event log (``keep_events=False``): it cannot be read back."""
