"""One exception base; each subclass says what went wrong and what to do."""
from __future__ import annotations


class DispatchsimError(Exception):
    """dispatchsim failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(DispatchsimError):
    """The dispatch configuration is invalid; nothing was stored."""


class NotFound(DispatchsimError):
    """No such object."""


class ActivationRefused(DispatchsimError):
    """The endpoint's verification GET failed, so the configuration stays inactive."""


class InvalidTransition(DispatchsimError):
    """That status change is not allowed."""


class ActivityError(DispatchsimError):
    """The activity is invalid; nothing was stored."""


class ResultConflict(DispatchsimError):
    """The activity already has a different result; results are accepted once per activity."""

    def __init__(self, message: str | None = None, *, current: object = None) -> None:
        super().__init__(message)
        self.current = current


class PayloadUnmappable(DispatchsimError):
    """The payload cannot be mapped for this provider (resending cannot fix it)."""


class StoreError(DispatchsimError):
    """The database cannot be used; nothing was written to it."""


class DatabaseInUse(StoreError):
    """Another process owns this database."""


class StorageUnavailable(DispatchsimError):
    """The database cannot take writes right now (disk full, busy or read-only); nothing was stored."""
