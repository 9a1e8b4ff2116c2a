"""Read a mapping file (YAML or JSON) with a line map, so problems can point at ``file:line``."""
from __future__ import annotations

import os
from typing import Any

from dispatchsim.errors import LocatedError
from dispatchsim.yamlfile import file_path, load_json, load_yaml, read_text

from .errors import MappingSpecError, Problem

Path = tuple[Any, ...]


def load_mapping_file(path: str | os.PathLike[str]) -> tuple[Any, dict[Path, int]]:
    """Return ``(spec, lines)``; ``lines`` maps raw spec paths (``("fields", "task", "ref")``) to lines.

    ``.json`` files are read as JSON, anything else as YAML. Unreadable files, text that is not UTF-8,
    syntax errors and duplicate keys raise :class:`MappingSpecError` naming ``file:line``.
    """
    source = file_path(path, "the mapping file")
    try:
        text = read_text(source, what="the mapping file")
    except LocatedError as exc:
        raise _spec_error(exc, source) from None
    if not text.strip():
        raise MappingSpecError([Problem("", "the file is empty; a mapping needs at least 'fields'", 1)],
                               source=source)
    if source.lower().endswith(".json"):
        return _load_json(text, source)
    return _load_yaml(text, source)


def _spec_error(exc: LocatedError, source: str) -> MappingSpecError:
    """The shared reader's problems as mapping problems (their ``field`` is a target field, so it is left out)."""
    return MappingSpecError([Problem("", e.message, e.line) for e in exc.errors], source=source)


def _load_json(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """The value read strictly as JSON (see :func:`load_json`); the line map from reading the same text as
    YAML, kept only when it reads as the same value (JSON that is not also YAML gets no line map)."""
    try:
        data = load_json(text, source=source)
    except LocatedError as exc:
        raise _spec_error(exc, source) from None
    try:
        same, lines = load_yaml(text, source=source)
    except LocatedError:
        return data, {}
    return data, (lines if same == data else {})


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    try:
        return load_yaml(text, source=source)
    except LocatedError as exc:
        raise _spec_error(exc, source) from None
