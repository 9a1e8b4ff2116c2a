"""The one error the providers package raises on bad input."""
from __future__ import annotations


class ProviderConfigError(ValueError):
    """The provider endpoint configuration is invalid.

    The message says where (``file:line``), which field (a dotted path such as
    ``endpoints.acme.behaviour.status``) and what is wrong with it.
    """

    def __init__(self, message: str, *, source: str = "<config>", line: int | None = None,
                 field: str | None = None) -> None:
        self.source = source
        self.line = line
        self.field = field
        where = source if line is None else f"{source}:{line}"
        prefix = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(prefix + message)
