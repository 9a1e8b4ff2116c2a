"""The one error the providers package raises on bad input."""
from __future__ import annotations

from dispatchsim.errors import LocatedError


class ProviderConfigError(LocatedError):
    """The provider endpoint configuration is invalid.

    Each problem says where (``file:line``), which field (a dotted path such as
    ``endpoints.acme.behaviour.status``) and what is wrong with it.
    """

    def __init__(self, message: str, *, source: str | None = "<config>", line: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, source=source, line=line, field=field)
