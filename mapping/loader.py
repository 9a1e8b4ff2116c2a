"""Read a mapping file (YAML or JSON) with a line map, so problems can point at ``file:line``."""
from __future__ import annotations

import json
import os
from typing import Any

import yaml

from .errors import MappingSpecError, Problem

Path = tuple[Any, ...]


def load_mapping_file(path: str | os.PathLike[str]) -> tuple[Any, dict[Path, int]]:
    """Return ``(spec, lines)``; ``lines`` maps raw spec paths (``("fields", "task", "ref")``) to lines.

    ``.json`` files are read as JSON, anything else as YAML. Unreadable files, syntax errors and
    duplicate keys raise :class:`MappingSpecError` naming ``file:line``.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MappingSpecError([Problem("", f"cannot read the mapping file: {reason}")], source=source) from None
    if source.lower().endswith(".json"):
        return _load_json(text, source)
    return _load_yaml(text, source)


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
    except MappingSpecError:
        same, lines = None, {}
    if duplicates:
        found = [p for p in _yaml_duplicates(text)] or [Problem("", f"duplicate key '{k}'") for k in duplicates]
        raise MappingSpecError(found, source=source)
    return data, (lines if same == data else {})


def _yaml_duplicates(text: str) -> list[Problem]:
    try:
        _load_yaml(text, "")
    except MappingSpecError as exc:
        return [p for p in exc.problems if p.message.startswith("duplicate key")]
    return []


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_lines: dict[int, tuple[Any, dict[Any, int]]] = {}
        self.item_lines: dict[int, tuple[Any, list[int]]] = {}
        self.duplicates: list[Problem] = []

    def construct_line_map(self, node: yaml.MappingNode) -> Any:
        data: dict[Any, Any] = {}
        yield data
        self.flatten_mapping(node)
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found an unhashable key",
                    key_node.start_mark) from None
            line = key_node.start_mark.line + 1
            if key in lines:
                self.duplicates.append(Problem("", f"duplicate key '{key}' (first on line {lines[key]})", line))
            lines[key] = line
            data[key] = self.construct_object(value_node, deep=False)
        self.key_lines[id(data)] = (data, lines)

    def construct_line_seq(self, node: yaml.SequenceNode) -> Any:
        data: list[Any] = []
        yield data
        data.extend(self.construct_object(child, deep=False) for child in node.value)
        self.item_lines[id(data)] = (data, [child.start_mark.line + 1 for child in node.value])


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_line_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_line_seq)


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(getattr(exc, "problem", None) or exc).split())
        context = getattr(exc, "context", None)
        if context:
            reason = f"{reason} ({context})"
        raise MappingSpecError([Problem("", f"invalid YAML: {reason}", line)], source=source) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise MappingSpecError(loader.duplicates, source=source)
    lines: dict[Path, int] = {(): 1}
    _collect(data, (), loader, lines)
    return data, lines


def _collect(value: Any, path: Path, loader: _LineLoader, lines: dict[Path, int]) -> None:
    if isinstance(value, dict):
        entry = loader.key_lines.get(id(value))
        for key, child in value.items():
            if entry is not None and entry[0] is value and key in entry[1]:
                lines[path + (key,)] = entry[1][key]
            _collect(child, path + (key,), loader, lines)
    elif isinstance(value, list):
        entry_l = loader.item_lines.get(id(value))
        for i, child in enumerate(value):
            if entry_l is not None and entry_l[0] is value and i < len(entry_l[1]):
                lines[path + (i,)] = entry_l[1][i]
            _collect(child, path + (i,), loader, lines)
