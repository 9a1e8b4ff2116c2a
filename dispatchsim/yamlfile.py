"""The one reader of input files (YAML, and JSON payload files): strict, with errors that say where.

Scenario files, provider configurations, mapping files and JSON payload files all go through here, so
they agree on what a valid file is: UTF-8 text (a BOM is allowed), one document, no duplicate keys
(PyYAML and Python's json alone keep the last one silently), no text that is not valid Unicode (a
``"\\ud800"`` escape), no alias that contains itself, and no aliases that repeat more than
:data:`MAX_ALIASED_VALUES` values (a "billion laughs" file), nothing nested deeper than :data:`MAX_YAML_DEPTH`. Every problem is a :class:`~dispatchsim.errors.LocatedError` naming ``file:line``;
all problems of a file are reported at once.

This module imports nothing of ours but the error root, so every part may use it.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import LocatedError

KeyPath = tuple[Any, ...]
Lines = dict[KeyPath, int]


def file_path(path: Any, what: str = "the file") -> str:
    """``path`` as text; a value that is no file path is refused as Python refuses a wrong type, but naming
    what it was for (``os.fspath`` says only "expected str, bytes or os.PathLike object")."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path of {what}: expected a file path (str or pathlib.Path), got {type(path).__name__}")
    return os.fspath(path)


def is_file(path: str | os.PathLike[str], *, error: type[LocatedError] = LocatedError) -> bool:
    """Whether ``path`` names a regular file. A name the system refuses (too long, ...) is one located error:
    pathlib's own check raises OSError for it instead of answering."""
    try:
        return Path(path).is_file()
    except OSError as exc:
        raise error(f"cannot read the file: {exc.strerror or exc}", source=os.fspath(path)) from None


def read_text(path: str | os.PathLike[str], *, error: type[LocatedError] = LocatedError,
              what: str = "the file") -> str:
    """The file's text; unreadable or not UTF-8 is one located error (the line of the first bad byte)."""
    source = file_path(path, what)
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
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        walk = _Walk(loader, source, error)
        walk.lines[()] = node.start_mark.line + 1
        walk.node(node, (), node.start_mark.line + 1)
        if walk.problems:
            raise error.of(walk.problems)
        return loader.construct_document(node), walk.lines
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
    return load_yaml(read_text(path, error=error, what=what), source=file_path(path, what), error=error)


#: How deep a YAML document may nest: a JSON value at its deepest (:data:`MAX_JSON_DEPTH`) inside a
#: file's own structure, with room to spare. PyYAML composes a document recursively and would fail past
#: a few hundred levels with a ``RecursionError`` that names no line.
MAX_YAML_DEPTH = 2 * MAX_JSON_DEPTH
#: How many values the aliases (``*name``) of one document may repeat in all. An alias makes a second
#: reference, not a copy, so nine short lines of aliases of aliases stand for 9^9 values that every
#: reader of the data (the line map here, the checks, a payload's JSON) walks one by one.
MAX_ALIASED_VALUES = 10_000


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than :data:`MAX_YAML_DEPTH` where it starts, and
    keeping the line of every alias (PyYAML gives an alias the node of its anchor, with the anchor's line).
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        #: (id of the collection, index of the item or id of the key node) -> the line of the alias there
        self.alias_lines: dict[tuple[int, int], int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if parent is not None and self.check_event(yaml.AliasEvent):
            place = index if isinstance(index, int) else id(index)
            self.alias_lines[(id(parent), place)] = self.peek_event().start_mark.line + 1
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels (the limit for a YAML file)",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1


class _Walk:
    """One walk over a composed document: the line of every key path, and every problem PyYAML lets by.

    An alias is the node of its anchor, met again: met inside itself it is refused (its data would be
    infinite); every later meeting counts the values it repeats against :data:`MAX_ALIASED_VALUES`.
    """

    def __init__(self, loader: _Loader, source: str, error: type[LocatedError]) -> None:
        self.loader, self.source, self.error = loader, source, error
        self.lines: Lines = {}
        self.problems: list[LocatedError] = []
        self.open: set[int] = set()  # the collections the walk is inside of
        self.seen: set[int] = set()
        self.repeated = 0
        self.alias: tuple[KeyPath, int] | None = None  # the outermost alias being walked: its path and line

    def fail(self, message: str, line: int, path: KeyPath) -> None:
        self.problems.append(self.error(message, source=self.source, line=line, field=dotted(path) or None))

    def node(self, node: yaml.Node, path: KeyPath, line: int) -> None:
        """Walk ``node`` at ``path``, written on ``line`` (an alias's own line, not its anchor's)."""
        outermost = self.alias is None and id(node) in self.seen
        if outermost:
            self.alias = (path, line)
        try:
            self.value(node, path, line)
        finally:
            if outermost:
                self.alias = None

    def value(self, node: yaml.Node, path: KeyPath, line: int) -> None:
        if id(node) in self.seen:
            self.repeated += 1
            if self.repeated > MAX_ALIASED_VALUES:
                at, at_line = self.alias or (path, line)
                self.fail(f"aliases repeat more than {MAX_ALIASED_VALUES:,} values in this file; write the values "
                          "out, or use fewer aliases", at_line, at)
                raise self.error.of(self.problems)  # stop: walking on is the hang
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:str" and not valid_text(node.value):
                self.fail(f"not valid Unicode text: {ascii(node.value)} ({_SURROGATE})", line, path)
            return
        if id(node) in self.open:
            self.fail("an alias inside its own anchor (its value would contain itself without end)", line, path)
            return
        if len(self.open) >= MAX_YAML_DEPTH:
            # written out, the composer refused this already; reached through aliases, every alias adds its
            # anchor's own depth (twenty anchors of fifty levels, each holding the last: a thousand)
            self.fail(f"nested deeper than {MAX_YAML_DEPTH} levels through aliases (the limit for a YAML file)",
                      line, path)
            raise self.error.of(self.problems)  # stop: walking on is the crash
        self.open.add(id(node))
        if isinstance(node, yaml.MappingNode):
            self.mapping(node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                item_line = self.loader.alias_lines.get((id(node), i), item.start_mark.line + 1)
                self.lines.setdefault(path + (i,), item_line)
                self.node(item, path + (i,), item_line)
        self.open.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> None:
        seen: dict[Any, int] = {}
        merged: list[tuple[yaml.Node, int]] = []  # the mappings merged in (``<<: *base``), each with its line
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                line = self.loader.alias_lines.get((id(node), id(key_node)), key_node.start_mark.line + 1)
                if isinstance(value_node, yaml.SequenceNode):
                    merged += [(item, self.loader.alias_lines.get((id(value_node), i), line))
                               for i, item in enumerate(value_node.value)]
                else:
                    merged.append((value_node, line))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and not valid_text(key):
                self.fail(f"the key {ascii(key)} is not valid Unicode text ({_SURROGATE})", line, path)
                continue
            if key in seen:
                self.fail(f"duplicate key '{key}' (first on line {seen[key]})", line, path + (key,))
                continue
            seen[key] = line
            self.lines.setdefault(path + (key,), line)
            self.node(value_node, path + (key,), self.loader.alias_lines.get((id(node), id(key_node)), line))
        for source, line in merged:  # after the keys written here, whose lines win (setdefault)
            self.node(source, path, line)


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
