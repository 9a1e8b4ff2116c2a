"""The engine's errors: subclasses of the one root, each saying what went wrong and what to do."""
from __future__ import annotations

from dispatchsim.errors import DispatchsimError, LocatedError


class ConfigError(LocatedError):
    """The dispatch configuration is invalid; nothing was stored.

    ``field`` names the configuration field (``retry``, ``auth.type``, …) when one is at fault; ``str()``
    is ``field: message``. A scenario file adds where the field is written (``file:line``).
    """

    def __init__(self, message: str, *, field: str | None = None, source: str | None = None,
                 line: int | None = None) -> None:
        super().__init__(message, source=source, line=line, field=field)


class AlreadyExists(ConfigError):
    """An id (tenant, provider, configuration) is taken already; nothing was stored."""


class NotFound(DispatchsimError):
    """No such object."""


class ActivationRefused(DispatchsimError):
    """The endpoint's verification GET failed, so the configuration stays inactive."""


class InvalidTransition(DispatchsimError):
    """That status change is not allowed."""


class ConfigInUse(InvalidTransition):
    """The configuration still has deliveries waiting to be sent (READY or RETRYING): deleting it would
    leave them pending for ever, with nothing to send them or end them."""


class ClockError(DispatchsimError, RuntimeError):
    """The virtual clock cannot run here (on a loop whose time does not jump; a RuntimeError too)."""


class InvalidArgument(LocatedError):
    """A library call got an argument of the wrong type or out of its range; nothing was done.

    ``field`` is the argument's name; ``str()`` is ``argument: message (Class.method)``.
    """


class ConfigDeleted(InvalidTransition):
    """The delivery's configuration was deleted: retried, it would wait for ever (nothing sends it)."""

    def __init__(self, delivery_id: int) -> None:
        super().__init__(f"delivery {delivery_id} cannot be retried: its configuration was deleted")


class ActivityError(DispatchsimError, ValueError):
    """The activity is invalid; nothing was stored.

    ``fields`` are the dotted fields at fault (``activityDetails.assignedOperator.name``), in the order
    the message names them; ``field`` is the first, or None when only unknown keys are at fault.
    """

    def __init__(self, message: str | None = None, *, fields: tuple[str, ...] = (),
                 problems: tuple[tuple[str | None, str], ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields
        self.field = fields[0] if fields else None
        #: Each problem as (dotted field or None, message), so a file can place each on its own line.
        self.problems = problems


class ActivityExists(DispatchsimError):
    """An activity with the id the caller supplied exists already; nothing was stored."""


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


__all__ = ["ActivationRefused", "ActivityError", "AlreadyExists", "ConfigError", "DatabaseInUse", "DispatchsimError",
           "InvalidTransition", "NotFound", "PayloadUnmappable", "ResultConflict", "StorageUnavailable", "StoreError"]
