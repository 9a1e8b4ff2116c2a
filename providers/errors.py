"""The errors of the providers package: bad input, and a record asked for that was not kept."""
from __future__ import annotations

from dispatchsim.errors import DispatchsimError, LocatedError


class ProviderConfigError(LocatedError):
    """The provider endpoint configuration is invalid.

    Each problem says where (``file:line``), which field (a dotted path such as
    ``endpoints.acme.behaviour.status``) and what is wrong with it.
    """

    def __init__(self, message: str, *, source: str | None = "<config>", line: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, source=source, line=line, field=field)


class RecordsNotKept(DispatchsimError, LookupError):
    """The recorder kept each request's receipt only (``Recorder(keep=False)``): the record itself,
    its headers and body, cannot be read back."""
