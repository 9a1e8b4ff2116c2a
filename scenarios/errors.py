"""The error a scenario file raises before anything runs."""
from __future__ import annotations

from dispatchsim.errors import LocatedError


class ScenarioError(LocatedError):
    """The scenario file is invalid; nothing was run.

    Each problem names the file, the line, the key and what was expected.
    """

    @property
    def key(self) -> str | None:
        """The key as written in the file (``configurations[0].retry``); the same as ``field``."""
        return self.field
