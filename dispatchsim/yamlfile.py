"""The one YAML reader for input files: strict, with the line of every key, and errors that say where.

Scenario files, provider configurations and mapping files all go through here, so they agree on what
a valid file is: UTF-8 text (a BOM is allowed), one YAML document, no duplicate keys (PyYAML alone
would keep the last one silently), no text that is not valid Unicode (a ``"\\ud800"`` escape). Every problem is a :class:`~dispatchsim.errors.LocatedError`
naming ``file:line``; all duplicate keys of a file are reported at once.

This module imports nothing of ours but the error root, so every part may use it.
"""
from __future__ import annotations

import os
from typing import Any

import yaml

from .errors import LocatedError

KeyPath = tuple[Any, ...]
Lines = dict[KeyPath, int]


def read_text(path: str | os.PathLike[str], *, error: type[LocatedError] = LocatedError,
              what: str = "the file") -> str:
    """The file's text; unreadable or not UTF-8 is one located error (the line of the first bad byte)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}", source=source) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(f"{what} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column} cannot be "
                    "decoded; save it as UTF-8", source=source, line=line) from None


def load_yaml(text: str, *, source: str = "<yaml>", error: type[LocatedError] = LocatedError) -> tuple[Any, Lines]:
    """Parse one YAML document; return ``(data, lines)``.

    ``lines`` maps every key path (``("configurations", 0, "retry")``) to its 1-based line, and ``()`` to
    the document's first line. An empty document gives ``(None, {})``.
    """
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: Lines = {(): node.start_mark.line + 1}
        duplicates: list[LocatedError] = []
        _walk(loader, node, (), lines, duplicates, source, error)
        if duplicates:
            raise error.of(duplicates)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(exc.problem or exc).split())
        raise error(f"invalid YAML: {reason}", source=source, line=line) from None
    except yaml.reader.ReaderError as exc:  # a control character YAML does not allow
        line = text[:exc.position].count("\n") + 1
        raise error(f"invalid YAML: character U+{exc.character:04X} is not allowed in YAML text", source=source,
                    line=line) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: str | os.PathLike[str], *, error: type[LocatedError] = LocatedError,
              what: str = "the file") -> tuple[Any, Lines]:
    """:func:`read_text` then :func:`load_yaml`."""
    return load_yaml(read_text(path, error=error, what=what), source=os.fspath(path), error=error)


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, lines: Lines, duplicates: list[LocatedError],
          source: str, error: type[LocatedError]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and not valid_text(key):
                duplicates.append(error(f"the key {ascii(key)} is not valid Unicode text ({_SURROGATE})",
                                        source=source, line=line, field=dotted(path) or None))
                continue
            if key in seen:
                duplicates.append(error(f"duplicate key '{key}' (first on line {seen[key]})", source=source,
                                        line=line, field=dotted(path + (key,))))
                continue
            seen[key] = line
            lines[path + (key,)] = line
            _walk(loader, value_node, path + (key,), lines, duplicates, source, error)
    elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str" and not valid_text(node.value):
        duplicates.append(error(f"not valid Unicode text: {ascii(node.value)} ({_SURROGATE})", source=source,
                                line=node.start_mark.line + 1, field=dotted(path) or None))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(loader, item, path + (i,), lines, duplicates, source, error)


_SURROGATE = "a lone surrogate such as \\ud800: YAML's escapes allow it, UTF-8 text cannot hold it"


def valid_text(text: str) -> bool:
    """True when ``text`` is valid Unicode, i.e. encodable as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dotted(path: KeyPath) -> str:
    """``("configurations", 0, "retry")`` -> ``configurations[0].retry``: a key as a user writes it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) and not isinstance(part, bool) else (
            f".{part}" if out else str(part))
    return out


def lines_under(lines: Lines, prefix: KeyPath) -> Lines:
    """Re-root a line map at ``prefix`` (e.g. a scenario's ``("providers",)`` part)."""
    n = len(prefix)
    return {p[n:]: line for p, line in lines.items() if p[:n] == prefix}
