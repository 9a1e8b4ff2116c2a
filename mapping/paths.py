"""JMESPath sources compiled once into getters.

Plain field/index paths (``activityDetails.assignedOperator.externalId``, ``items[0].id``) — the
bulk of real mappings — and multi-selects of them (``[reason.code, reason.label]``) become nested
``dict.get`` closures with JMESPath's exact semantics (a field of a non-object or an index out of
range is null). Everything else runs on one shared
jmespath ``TreeInterpreter``, skipping the per-call setup of ``ParsedResult.search``.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath import exceptions as jexc
from jmespath import functions as jfunctions
from jmespath import visitor as jvisitor

from dispatchsim.errors import DispatchsimError

Getter = Callable[[Any], Any]

_INTERPRETER = jvisitor.TreeInterpreter()
_JMESPATH_FUNCTIONS: dict[str, Any] = jfunctions.Functions.FUNCTION_TABLE  # type: ignore[attr-defined]

_TOKEN_NAMES = {
    "quoted_identifier": "a field name", "unquoted_identifier": "a field name",
    "lbracket": "'['", "lbrace": "'{'", "rbracket": "']'", "rbrace": "'}'", "rparen": "')'",
    "lparen": "'('", "dot": "'.'", "comma": "','", "colon": "':'", "number": "a number",
    "star": "'*'", "filter": "'[?'", "flatten": "'[]'", "current": "'@'", "expref": "'&'",
    "literal": "a literal", "eof": "the end",
}


class ExpressionError(DispatchsimError, ValueError):
    """A JMESPath expression that cannot be compiled; the message says where and why."""


@dataclass(frozen=True)
class Source:
    expression: str
    get: Getter
    #: Field names / indexes when the expression is a plain path, else None.
    steps: tuple[str | int, ...] | None


def compile_source(expression: str) -> Source:
    """Compile a JMESPath expression; raise :class:`ExpressionError` with its position."""
    if not expression.strip():
        raise ExpressionError("empty JMESPath expression")
    try:
        parsed = jmespath.compile(expression).parsed
    except jexc.LexerError as exc:
        raise ExpressionError(_located(expression, exc.lex_position, exc.message)) from None
    except jexc.IncompleteExpressionError:
        raise ExpressionError(f"incomplete JMESPath expression {expression!r}") from None
    except jexc.ParseError as exc:
        raise ExpressionError(_located(expression, exc.lex_position, _parse_reason(exc))) from None
    _check_functions(parsed)
    steps = _plain_steps(parsed)
    if steps is not None:
        return Source(expression, _path_getter(steps), steps)
    fast = _multi_select_getter(parsed)
    if fast is not None:
        return Source(expression, fast, None)

    def get(value: Any, _visit: Any = _INTERPRETER.visit, _node: Any = parsed) -> Any:
        return _visit(_node, value)

    return Source(expression, get, None)


def _located(expression: str, position: int | None, reason: str) -> str:
    if position is None:
        return f"invalid JMESPath {expression!r}: {reason}"
    before = expression[:position]
    where = f"at position {position}" + (f" (after {before!r})" if before else "")
    return f"invalid JMESPath {expression!r} {where}: {reason}"


def _parse_reason(exc: jexc.ParseError) -> str:
    token = _TOKEN_NAMES.get(str(exc.token_type).lower(), repr(exc.token_value))
    msg = str(exc.msg)
    if msg.startswith("Expecting: "):
        names = msg[len("Expecting: "):].split("], got:")[0].strip("[] ")
        wanted = sorted({_TOKEN_NAMES.get(n.strip(" '"), n.strip(" '")) for n in names.split(",") if n.strip()})
        return f"expected {' or '.join(wanted)}, got {token}"
    return f"unexpected {token}" if exc.token_value is not None else msg


def _check_functions(node: dict[str, Any]) -> None:
    if node.get("type") == "function_expression":
        name = node["value"]
        entry = _JMESPATH_FUNCTIONS.get(name)
        if entry is None:
            raise ExpressionError(
                f"unknown JMESPath function '{name}' (known: {', '.join(sorted(_JMESPATH_FUNCTIONS))})")
        signature = entry["signature"]
        given = len(node["children"])
        if signature and signature[-1].get("variadic"):
            if given < len(signature):
                raise ExpressionError(
                    f"JMESPath function '{name}' takes at least {len(signature)} arguments, got {given}")
        elif given != len(signature):
            raise ExpressionError(f"JMESPath function '{name}' takes {len(signature)} arguments, got {given}")
    for child in node.get("children", ()):
        if isinstance(child, dict):
            _check_functions(child)


def _plain_steps(node: dict[str, Any]) -> tuple[str | int, ...] | None:
    kind = node["type"]
    if kind == "field":
        return (node["value"],)
    if kind == "current":
        return ()
    if kind == "subexpression":
        out: list[str | int] = []
        for child in node["children"]:
            part = _plain_steps(child)
            if part is None:
                return None
            out.extend(part)
        return tuple(out)
    if kind == "index_expression":
        left, right = node["children"]
        if right["type"] != "index":
            return None
        part = _plain_steps(left)
        return None if part is None else part + (right["value"],)
    return None


def _multi_select_getter(node: dict[str, Any]) -> Getter | None:
    """``[a.b, c]`` and ``{x: a.b, y: c}`` over plain paths, as jmespath evaluates them."""
    kind = node["type"]
    if kind == "multi_select_list":
        parts = [_plain_steps(child) for child in node["children"]]
        if any(p is None for p in parts):
            return None
        getters = tuple(_path_getter(p) for p in parts)  # type: ignore[arg-type]

        def select_list(value: Any) -> Any:
            return None if value is None else [get(value) for get in getters]
        return select_list
    if kind == "multi_select_dict":
        pairs = [(child["value"], _plain_steps(child["children"][0])) for child in node["children"]]
        if any(p is None for _, p in pairs):
            return None
        named = tuple((key, _path_getter(p)) for key, p in pairs)  # type: ignore[arg-type]

        def select_dict(value: Any) -> Any:
            return None if value is None else {key: get(value) for key, get in named}
        return select_dict
    return None


def _path_getter(steps: tuple[str | int, ...]) -> Getter:
    if not steps:
        return lambda value: value
    if all(isinstance(s, str) for s in steps):
        if len(steps) == 1:
            (a,) = steps

            def get1(p: Any) -> Any:
                return p.get(a) if isinstance(p, dict) else None
            return get1
        if len(steps) == 2:
            a, b = steps

            def get2(p: Any) -> Any:
                if isinstance(p, dict):
                    v = p.get(a)
                    if isinstance(v, dict):
                        return v.get(b)
                return None
            return get2
        if len(steps) == 3:
            a, b, c = steps

            def get3(p: Any) -> Any:
                if isinstance(p, dict):
                    v = p.get(a)
                    if isinstance(v, dict):
                        v = v.get(b)
                        if isinstance(v, dict):
                            return v.get(c)
                return None
            return get3

    def get(v: Any) -> Any:
        for step in steps:
            if isinstance(step, str):
                if not isinstance(v, dict):
                    return None
                v = v.get(step)
            else:
                if not isinstance(v, list):
                    return None
                try:
                    v = v[step]
                except IndexError:
                    return None
        return v
    return get


def explain_missing(steps: tuple[str | int, ...], payload: Any) -> str | None:
    """Why a plain path finds nothing in ``payload``; None when it finds a (null) value."""
    value = payload
    for depth, step in enumerate(steps):
        here = ".".join(str(s) for s in steps[:depth]) or "the payload"
        if isinstance(step, str):
            if not isinstance(value, dict):
                return f"'{here}' is {json_type(value)}, not an object"
            if step not in value:
                close = difflib.get_close_matches(step, [k for k in value if isinstance(k, str)], n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                return f"'{step}' is not a field of {here}{hint}"
            value = value[step]
        else:
            if not isinstance(value, list):
                return f"'{here}' is {json_type(value)}, not an array"
            if not -len(value) <= step < len(value):
                return f"index {step} is out of range for '{here}' (length {len(value)})"
            value = value[step]
    return None


def json_type(value: Any) -> str:
    """``a string``, ``an object``, ``null`` … for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__
