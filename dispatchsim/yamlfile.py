"""The one reader of input files (YAML, and JSON payload files): strict, with errors that say where.

Scenario files, provider configurations, mapping files and JSON payload files all go through here, so
they agree on what a valid file is: UTF-8 text (a BOM is allowed), one document, no duplicate keys
(PyYAML and Python's json alone keep the last one silently), no text that is not valid Unicode (a
``"\\ud800"`` escape). Every problem is a :class:`~dispatchsim.errors.LocatedError` naming ``file:line``;
all problems of a file are reported at once.

This module imports nothing of ours but the error root, so every part may use it.
"""
from __future__ import annotations

import json
import math
import os
import re
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


#: How deep a user's JSON value may nest (objects and arrays inside one another), wherever it comes in:
#: a file read here (a payload to preview, a mapping, a probe's payload) or a value handed to the engine
#: (``engine/values.py``), so that what a preview accepts the engine accepts too. Deeper is refused where
#: it happens, not walked (Python's own parser would hit its recursion limit near 1,000 levels and raise
#: an error naming no line); no receiver needs more.
MAX_JSON_DEPTH = 32
#: The refusal of a value nested deeper than :data:`MAX_JSON_DEPTH`, the same wherever it is refused.
TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels (the limit for any JSON value)"
#: Python refuses to read or print an integer of more digits than this (``sys.int_info``)
_MAX_DIGITS = 4300
#: every token of valid JSON text that the checks need: strings (whole, so nothing inside one is
#: seen as a token), brackets, commas, numbers, and the constants Python accepts but JSON has not
_JSON_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{},]|-?(?:0|[1-9]\d*+)(?:\.\d+)?(?:[eE][+-]?\d+)?|NaN|-?Infinity')
_COLON = re.compile(r"\s*:")


def load_json(text: str, *, source: str = "<json>", error: type[LocatedError] = LocatedError) -> Any:
    """One JSON value from a user's file, refused as :func:`load_yaml` refuses YAML: with ``file:line``.

    Python's ``json`` module takes text JSON does not allow (``NaN``, ``Infinity``, a number too big for
    a float becomes ``inf``), strings that are not valid Unicode (an escaped lone surrogate, ``"\\ud800"``),
    duplicate keys (the last one wins silently), and fails on deep nesting with a ``RecursionError``.
    Each of these is a located error here, naming the line and the dotted field; every problem at once.
    """
    unread: Exception | None = None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"invalid JSON: {exc.msg} (column {exc.colno})", source=source, line=exc.lineno) from None
    except (RecursionError, ValueError) as exc:  # too deep, or an integer too long: the scan says where
        value, unread = None, exc
    problems = _json_problems(text, source, error)
    if problems:
        raise error.of(problems)
    if unread is not None:
        raise error(f"invalid JSON: {unread}", source=source)
    return value


def _json_problems(text: str, source: str, error: type[LocatedError]) -> list[LocatedError]:
    """Walk the tokens of valid JSON text, keeping the path (keys and array indexes) to each one."""
    problems: list[LocatedError] = []
    frames: list[list[Any]] = []  # per open bracket: [bracket, current key or index, {key seen: its offset}]
    line, counted = 1, 0

    def fail(pos: int, message: str, path: KeyPath) -> None:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        problems.append(error(message, source=source, line=line, field=dotted(path) or None))

    def here(depth: int | None = None) -> KeyPath:
        """The path to the current token (to its object, with ``depth`` one less than the frames)."""
        return tuple(f[1] if isinstance(f[1], int) or valid_text(f[1]) else ascii(f[1]) for f in frames[:depth]
                     if f[1] is not None)

    for m in _JSON_TOKEN.finditer(text):
        token, pos = m.group(), m.start()
        first = token[0]
        if first in "[{":
            if len(frames) >= MAX_JSON_DEPTH:
                fail(pos, TOO_DEEP, ())
                return problems  # nothing deeper is read
            frames.append([first, 0 if first == "[" else None, {}])
        elif first in "]}":
            if frames:
                frames.pop()
        elif first == ",":
            if frames and frames[-1][0] == "[":
                frames[-1][1] += 1
        elif first == '"':
            try:
                string = json.loads(token)
            except ValueError:  # only in text the parser refused past its own error
                continue
            frame = frames[-1] if frames else None
            if frame is not None and frame[0] == "{" and _COLON.match(text, m.end()):
                if not valid_text(string):
                    fail(pos, f"the key {ascii(string)} is not valid Unicode text ({_SURROGATE})", here(-1))
                elif string in frame[2]:
                    first_line = text.count("\n", 0, frame[2][string]) + 1
                    fail(pos, f"duplicate key '{string}' (first on line {first_line})", here(-1) + (string,))
                frame[1] = string
                frame[2].setdefault(string, pos)
            elif not valid_text(string):
                fail(pos, f"not valid Unicode text: {ascii(string)} ({_SURROGATE})", here())
        elif token[-1] in "Ny":  # NaN, Infinity, -Infinity
            fail(pos, f"{token} is not a JSON number", here())
        elif len(token) > _MAX_DIGITS:
            fail(pos, f"a number of {len(token)} characters: at most {_MAX_DIGITS} digits", here())
        elif not token.lstrip("-").isdigit() and not math.isfinite(float(token)):
            fail(pos, f"{token} is too large for a floating-point number", here())
    return problems


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


_SURROGATE = "a lone surrogate such as \\ud800: an escape can write it, UTF-8 text cannot hold it"


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
