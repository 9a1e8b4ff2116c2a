"""Read a mapping file (YAML or JSON) with a line map, so problems can point at ``file:line``."""
from __future__ import annotations

import json
import os
from typing import Any

from dispatchsim.errors import LocatedError
from dispatchsim.yamlfile import load_yaml, read_text

from .errors import MappingSpecError, Problem

Path = tuple[Any, ...]


def load_mapping_file(path: str | os.PathLike[str]) -> tuple[Any, dict[Path, int]]:
    """Return ``(spec, lines)``; ``lines`` maps raw spec paths (``("fields", "task", "ref")``) to lines.

    ``.json`` files are read as JSON, anything else as YAML. Unreadable files, text that is not UTF-8,
    syntax errors and duplicate keys raise :class:`MappingSpecError` naming ``file:line``.
    """
    source = os.fspath(path)
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
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise MappingSpecError([Problem("", f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno)],
                               source=source) from None
    try:
        same, lines = _load_yaml(text, source)
    except MappingSpecError as exc:
        if duplicates:
            found = [p for p in exc.problems if p.message.startswith("duplicate key")]
            raise MappingSpecError(found or [Problem("", f"duplicate key '{k}'") for k in duplicates],
                                   source=source) from None
        same, lines = None, {}
    if duplicates:
        raise MappingSpecError([Problem("", f"duplicate key '{k}'") for k in duplicates], source=source)
    return data, (lines if same == data else {})


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    try:
        return load_yaml(text, source=source)
    except LocatedError as exc:
        raise _spec_error(exc, source) from None
