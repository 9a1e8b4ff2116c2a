"""Compile a mapping spec once into closures; apply it per delivery with no parsing.

Compiling validates everything (reporting every problem with its target field and file line),
normalises the spec (so equivalent spellings share one digest, the mapping "version") and
checks the mapping against the seed payload, where a source that finds nothing is a warning.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

from jmespath import exceptions as jexc

from .errors import MappingApplyError, MappingSpecError, Problem
from .functions import ArgumentError, Step, StepError, build_step
from .paths import ExpressionError, Source, compile_source, explain_missing, json_type
from .activity import SEED_PAYLOAD

TOP_KEYS = ("description", "fields", "include_rest", "drop", "wrap", "root")
FIELD_OPTIONS = ("from", "const", "default", "required", "map", "map_default", "fn")
_OPTION_SET = frozenset(FIELD_OPTIONS)

Path = tuple[Any, ...]
ValueOf = Callable[[Any], Any]
_MISSING = object()


class CompiledMapping:
    """A validated mapping, ready to apply. Build it with :func:`compile_mapping`."""

    spec: dict[str, Any]
    digest: str
    warnings: list[Problem]

    def __init__(self, spec: dict[str, Any], apply: Callable[[Any], Any], shape: Callable[[Any], Any],
                 warnings: list[Problem]) -> None:
        self.spec = spec
        self.digest = spec_digest(spec)
        self.warnings = warnings
        self._apply = apply
        self._shape = shape

    def apply(self, payload: dict[str, Any]) -> Any:
        """Map one payload; raises :class:`MappingApplyError`. The output is JSON-serialisable."""
        return self._apply(payload)

    def __repr__(self) -> str:
        return f"<CompiledMapping {self.digest}>"


def spec_digest(spec: dict[str, Any]) -> str:
    """First 12 hex chars of sha256 over the canonical JSON of a normalised spec.

    Keys keep their order: field order is output order, so it is part of the version.
    """
    text = json.dumps(spec, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def compile_mapping(spec: dict[str, Any], *, lines: dict[Path, int] | None = None) -> CompiledMapping:
    """Validate, normalise and compile ``spec``; raise :class:`MappingSpecError` listing every problem.

    ``lines`` maps a path in the raw spec (``("fields", "task", "ref", "fn", 0)``) to its 1-based
    line, as :func:`mapping.load_mapping_file` returns it, so problems can say where they are.
    """
    return _Compiler(lines or {}).compile(spec)


class _Leaf:
    __slots__ = ("target", "raw", "spec", "source", "value_of", "has_default", "required")

    def __init__(self, target: tuple[str, ...], raw: Path) -> None:
        self.target = target
        self.raw = raw
        self.spec: dict[str, Any] = {}
        self.source: Source | None = None
        self.value_of: ValueOf = _null
        self.has_default = False
        self.required = False

    @property
    def name(self) -> str:
        return ".".join(self.target)


def _null(payload: Any) -> Any:
    return None


class _Compiler:
    def __init__(self, lines: dict[Path, int]) -> None:
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, field: str, message: str, raw: Path) -> None:
        self.problems.append(Problem(field, message, self._line(raw)))

    def _line(self, raw: Path) -> int | None:
        for end in range(len(raw), -1, -1):
            line = self.lines.get(tuple(raw[:end]))
            if line is not None:
                return line
        return None

    # -- validation and normalisation -------------------------------------------------------

    def compile(self, spec: Any) -> CompiledMapping:
        if not isinstance(spec, dict):
            raise MappingSpecError([Problem("", f"a mapping must be an object with 'fields' (and optionally "
                                                f"{', '.join(k for k in TOP_KEYS if k != 'fields')}), "
                                                f"got {json_type(spec)}", self._line(()))])
        for key in spec:
            if key not in TOP_KEYS:
                self.problem(str(key), f"unknown key (expected one of: {', '.join(sorted(TOP_KEYS))})", (key,))

        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            self.problem("description", f"expected a string, got {json_type(description)}", ("description",))

        include_rest = spec.get("include_rest", False)
        if not isinstance(include_rest, bool):
            self.problem("include_rest", f"expected true or false, got {json_type(include_rest)}", ("include_rest",))
            include_rest = False

        leaves: list[_Leaf] = []
        tree: dict[str, Any] = {}
        fields = spec.get("fields")
        if fields is None:
            if not include_rest:
                self.problem("fields", "missing: a mapping needs 'fields', or 'include_rest: true' to pass "
                                       "the payload through", ())
        elif not isinstance(fields, dict):
            self.problem("fields", f"expected an object of target fields, got {json_type(fields)}", ("fields",))
        else:
            if not fields and not include_rest:
                self.problem("fields", "empty: name at least one target field, or set 'include_rest: true'",
                             ("fields",))
            self._targets(fields, (), ("fields",), leaves, tree)

        drops = self._drops(spec.get("drop"), include_rest, tree)

        wrap = spec.get("wrap")
        if wrap is not None and wrap != "array":
            self.problem("wrap", f"expected 'array' (send the object inside a JSON array), got "
                                 f"{json.dumps(wrap) if _is_json(wrap) else json_type(wrap)}", ("wrap",))
        root = spec.get("root")
        if root is not None and (not isinstance(root, str) or not root):
            self.problem("root", f"expected a non-empty key name to wrap the output in, got {json_type(root)}",
                         ("root",))

        if self.problems:
            raise MappingSpecError(self.problems)

        ordered = _tree_order(tree)
        normal: dict[str, Any] = {}
        if description:
            normal["description"] = description
        if ordered:
            normal["fields"] = {leaf.name: leaf.spec for leaf in ordered}
        if include_rest:
            normal["include_rest"] = True
        if drops:
            normal["drop"] = [".".join(d) for d in drops]
        if wrap is not None:
            normal["wrap"] = wrap
        if root is not None:
            normal["root"] = root

        shape = _build_shape(tree, ordered, include_rest, drops)
        apply = _build_apply(shape, wrap == "array", root)
        warnings = self._seed_warnings(ordered, drops, tree, include_rest)
        return CompiledMapping(normal, apply, shape, warnings)

    def _targets(self, targets: dict[Any, Any], prefix: tuple[str, ...], raw: Path,
                 leaves: list[_Leaf], tree: dict[str, Any]) -> None:
        for key, value in targets.items():
            where = raw + (key,)
            shown = ".".join(prefix + (str(key),))
            if not isinstance(key, str):
                self.problem(shown, f"target names must be strings, got {json_type(key)}", where)
                continue
            segments = tuple(key.split("."))
            if any(not s.strip() for s in segments):
                self.problem(shown or repr(key), "empty target name (check for a stray or doubled '.')", where)
                continue
            target = prefix + segments
            name = ".".join(target)
            if isinstance(value, dict) and value and not (_OPTION_SET & value.keys()):
                self._targets(value, target, where, leaves, tree)
                continue
            leaf = _Leaf(target, where)
            if not self._leaf(leaf, value):
                continue
            clash = _place(tree, target, leaf)
            if clash:
                self.problem(name, clash, where)
                continue
            leaves.append(leaf)

    def _leaf(self, leaf: _Leaf, value: Any) -> bool:
        name, raw = leaf.name, leaf.raw
        if isinstance(value, str):
            value = {"from": value}
            shorthand = True
        elif isinstance(value, dict):
            shorthand = False
            if not value:
                self.problem(name, "empty object: give {from: <JMESPath>} or {const: <value>} "
                                   "(for a constant {} write {const: {}})", raw)
                return False
            stray = [k for k in value if k not in _OPTION_SET]
            if stray:
                shown = ", ".join(repr(k) for k in stray)
                if "from" in value or "const" in value:
                    self.problem(name, f"unknown option {shown} (expected: {', '.join(FIELD_OPTIONS)})",
                                 raw + (stray[0],))
                    self._leaf(leaf, {k: v for k, v in value.items() if k in _OPTION_SET})
                else:
                    options = [k for k in value if k in _OPTION_SET]
                    self.problem(name, f"mixes field options ({', '.join(options)}) with target names ({shown}); "
                                       f"to map a target named like an option write it dotted, e.g. "
                                       f"'{name}.{options[0]}'", raw + (options[0],))
                return False
        else:
            hint = f"; for a constant write {{const: {json.dumps(value)}}}" if _is_json(value) else ""
            self.problem(name, f"expected a JMESPath string, an object {{from: ...}} / {{const: ...}}, or nested "
                               f"target fields, got {json_type(value)}{hint}", raw)
            return False

        ok = True
        opt_raw = (lambda opt: raw) if shorthand else (lambda opt: raw + (opt,))
        normal: dict[str, Any] = {}
        has_from, has_const = "from" in value, "const" in value
        if has_from and has_const:
            self.problem(name, "give either 'from' or 'const', not both", raw)
            ok = False
        elif not has_from and not has_const:
            self.problem(name, "needs a source: 'from' (a JMESPath expression) or 'const' (a value)", raw)
            ok = False
        if has_from:
            expression = value["from"]
            if not isinstance(expression, str):
                self.problem(name, f"from: expected a JMESPath string, got {json_type(expression)}", opt_raw("from"))
                ok = False
            else:
                try:
                    leaf.source = compile_source(expression)
                    normal["from"] = expression
                except ExpressionError as exc:
                    self.problem(name, str(exc), opt_raw("from"))
                    ok = False
        if has_const:
            ok &= self._json_option(name, "const", value["const"], opt_raw("const"))
            normal["const"] = value["const"]

        vmap = None
        if "map" in value:
            vmap = self._value_map(name, value["map"], opt_raw("map"))
            if vmap is None:
                ok = False
            else:
                normal["map"] = vmap
        has_map_default = "map_default" in value
        if has_map_default:
            if "map" not in value:
                self.problem(name, "map_default: only makes sense with 'map'", opt_raw("map_default"))
                ok = False
            ok &= self._json_option(name, "map_default", value["map_default"], opt_raw("map_default"))
            normal["map_default"] = value["map_default"]

        steps: list[Step] = []
        if "fn" in value:
            built = self._pipeline(name, value["fn"], opt_raw("fn"))
            if built is None:
                ok = False
            else:
                steps, normal["fn"] = built

        has_default = "default" in value
        if has_default:
            ok &= self._json_option(name, "default", value["default"], opt_raw("default"))
            normal["default"] = value["default"]
        required = value.get("required", False)
        if not isinstance(required, bool):
            self.problem(name, f"required: expected true or false, got {json_type(required)}", opt_raw("required"))
            ok = False
        elif required:
            if has_default:
                self.problem(name, "required and default contradict each other: with a default the value is "
                                   "never missing (drop one)", opt_raw("required"))
                ok = False
            elif has_const and value["const"] is None and not steps:
                self.problem(name, "required with const null can never succeed", opt_raw("required"))
                ok = False
            normal["required"] = True
        if not ok:
            return False

        leaf.spec = normal
        leaf.has_default = has_default
        leaf.required = required
        if leaf.source is not None:
            get, label = leaf.source.get, leaf.source.expression
        else:
            const = value["const"]
            get, label = (lambda payload: const), "const"
        leaf.value_of = _value_of(
            leaf.name, label, get, plain=leaf.source is None or leaf.source.steps is not None,
            vmap=vmap, map_default=value.get("map_default"), has_map_default=has_map_default, steps=steps,
            default=value.get("default"), has_default=has_default, required=required)
        return True

    def _json_option(self, name: str, option: str, value: Any, raw: Path) -> bool:
        bad = _not_json(value)
        if bad is None:
            return True
        self.problem(name, f"{option}: {bad}", raw)
        return False

    def _value_map(self, name: str, vmap: Any, raw: Path) -> dict[str, Any] | None:
        if not isinstance(vmap, dict):
            self.problem(name, f"map: expected an object of value -> replacement, got {json_type(vmap)}", raw)
            return None
        if not vmap:
            self.problem(name, "map: empty (give at least one value -> replacement)", raw)
            return None
        out: dict[str, Any] = {}
        ok = True
        for key, replacement in vmap.items():
            if key is None:
                self.problem(name, "map: a null key never matches (null values skip 'map'; use 'default')",
                             raw + (key,))
                ok = False
                continue
            if isinstance(key, (str, bool, int, float)):
                text = map_key(key)
                if text in out:
                    first = next(k for k in vmap if k is not None and map_key(k) == text)
                    self.problem(name, f"map: keys {first!r} and {key!r} both match the value {text!r}",
                                 raw + (key,))
                    ok = False
                    continue
            else:
                self.problem(name, f"map: keys must be strings, numbers or booleans, got {json_type(key)}",
                             raw + (key,))
                ok = False
                continue
            bad = _not_json(replacement)
            if bad is not None:
                self.problem(name, f"map: value for {text!r}: {bad}", raw + (key,))
                ok = False
            out[text] = replacement
        return out if ok else None

    def _pipeline(self, name: str, fn: Any, raw: Path) -> tuple[list[Step], list[Any]] | None:
        entries = [(fn, raw)] if isinstance(fn, (str, dict)) else None
        if isinstance(fn, list):
            if not fn:
                self.problem(name, "fn: empty list (name at least one function, or leave 'fn' out)", raw)
                return None
            entries = [(entry, raw + (i,)) for i, entry in enumerate(fn)]
        if entries is None:
            self.problem(name, f"fn: expected a function name, an object {{name: argument}} or a list of them, "
                               f"got {json_type(fn)}", raw)
            return None
        steps: list[Step] = []
        normal: list[Any] = []
        ok = True
        for entry, where in entries:
            if isinstance(entry, str):
                fname, argument, has_argument = entry, None, False
            elif isinstance(entry, dict) and len(entry) == 1:
                ((fname, argument),) = entry.items()
                has_argument = True
                where = where + (fname,)
                if not isinstance(fname, str):
                    self.problem(name, f"fn: function names are strings, got {json_type(fname)}", where)
                    ok = False
                    continue
            else:
                got = (f"an object with {len(entry)} keys" if isinstance(entry, dict) else json_type(entry))
                self.problem(name, f"fn: each step is a function name or a one-key object {{name: argument}}, "
                                   f"got {got}", where)
                ok = False
                continue
            try:
                steps.append(build_step(fname, argument, has_argument))
            except ArgumentError as exc:
                self.problem(name, str(exc), where)
                ok = False
                continue
            normal.append(fname if argument is None else {fname: argument})
        return (steps, normal) if ok else None

    def _drops(self, drop: Any, include_rest: bool, tree: dict[str, Any]) -> list[tuple[str, ...]]:
        if drop is None:
            return []
        if isinstance(drop, str):
            drop = [drop]
            raws: list[Path] = [("drop",)]
        elif isinstance(drop, list):
            raws = [("drop", i) for i in range(len(drop))]
        else:
            self.problem("drop", f"expected a list of field paths, got {json_type(drop)}", ("drop",))
            return []
        out: list[tuple[str, ...]] = []
        for i, (path, raw) in enumerate(zip(drop, raws)):
            label = f"drop[{i}]"
            if not isinstance(path, str):
                self.problem(label, f"expected a dotted field path such as 'activityResult', got {json_type(path)}",
                             raw)
                continue
            segments = tuple(path.split("."))
            if any(not s.strip() for s in segments):
                self.problem(label, f"{path!r}: empty segment in the path", raw)
                continue
            if segments in out:
                self.problem(label, f"{path!r} is listed twice", raw)
                continue
            node: Any = tree
            under_leaf = False
            for depth, seg in enumerate(segments):
                if not isinstance(node, dict) or seg not in node:
                    break
                node = node[seg]
                if isinstance(node, _Leaf):
                    under_leaf = depth < len(segments) - 1
                    if not under_leaf:
                        self.problem(label, f"{path!r} would remove the mapped field '{node.name}'", raw)
                        segments = ()
                    break
            else:
                self.problem(label, f"{path!r} would remove mapped fields ({', '.join(_leaf_names(node))})", raw)
                continue
            if not segments:
                continue
            if not include_rest and not under_leaf:
                self.problem(label, f"{path!r} can never match: without include_rest the output holds only the "
                                    f"mapped fields", raw)
                continue
            out.append(segments)
        return out

    # -- checking against the seed payload --------------------------------------------------

    def _seed_warnings(self, leaves: list[_Leaf], drops: list[tuple[str, ...]], tree: dict[str, Any],
                       include_rest: bool) -> list[Problem]:
        warnings: list[Problem] = []

        def warn(field: str, message: str, raw: Path) -> None:
            warnings.append(Problem(field, message, self._line(raw)))

        for leaf in leaves:
            source = leaf.source
            where = leaf.raw
            if source is not None:
                try:
                    found = source.get(SEED_PAYLOAD)
                except jexc.JMESPathError as exc:
                    warn(leaf.name, f"'{source.expression}' fails on the example activity: {_one_line(exc)}", where)
                    continue
                if found is None:
                    reason = explain_missing(source.steps, SEED_PAYLOAD) if source.steps is not None else None
                    if reason is not None:
                        hint = ""
                        if len(source.steps or ()) == 1 and "did you mean" not in reason:
                            hint = f"; for a constant string write {{const: {json.dumps(source.expression)}}}"
                        warn(leaf.name, f"'{source.expression}' resolves to nothing in the example activity: "
                                        f"{reason}{hint}", where)
                        continue
                    if not leaf.has_default:
                        tail = " (required: such a delivery would fail)" if leaf.required else ""
                        what = "is null" if source.steps is not None else "resolves to nothing (null)"
                        warn(leaf.name, f"'{source.expression}' {what} in the example activity{tail}", where)
                        continue
            try:
                leaf.value_of(SEED_PAYLOAD)
            except MappingApplyError as exc:
                warn(leaf.name, f"fails on the example activity: {exc.message}", where)
        if drops:
            try:
                shaped = _build_shape(tree, leaves, include_rest, [])(SEED_PAYLOAD)
            except MappingApplyError:
                return warnings
            for i, segments in enumerate(drops):
                node: Any = shaped
                for seg in segments:
                    node = node.get(seg, _MISSING) if isinstance(node, dict) else _MISSING
                if node is _MISSING:
                    warn(f"drop[{i}]", f"'{'.'.join(segments)}' matches nothing in the mapped example activity",
                         ("drop", i))
        return warnings


# -- helpers --------------------------------------------------------------------------------


def map_key(value: Any) -> str:
    """How a value looks up a ``map`` entry: strings as is, numbers and booleans as JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


def _place(tree: dict[str, Any], target: tuple[str, ...], leaf: _Leaf) -> str | None:
    node = tree
    for depth, seg in enumerate(target[:-1]):
        child = node.get(seg)
        if isinstance(child, _Leaf):
            return f"conflicts with the field '{child.name}' (a field cannot also hold nested targets)"
        if child is None:
            child = node[seg] = {}
        node = child
    last = target[-1]
    existing = node.get(last)
    if isinstance(existing, _Leaf):
        return "mapped twice (each target field once)"
    if existing is not None:
        return f"conflicts with nested targets under it ({', '.join(_leaf_names(existing))})"
    node[last] = leaf
    return None


def _leaf_names(node: Any) -> list[str]:
    if isinstance(node, _Leaf):
        return [node.name]
    return [name for child in node.values() for name in _leaf_names(child)]


def _tree_order(tree: dict[str, Any]) -> list[_Leaf]:
    out: list[_Leaf] = []
    for child in tree.values():
        if isinstance(child, _Leaf):
            out.append(child)
        else:
            out.extend(_tree_order(child))
    return out


def _is_json(value: Any) -> bool:
    return _not_json(value) is None


def _not_json(value: Any) -> str | None:
    """Why ``value`` is not plain JSON data (None when it is)."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a JSON number"
    if isinstance(value, list):
        for item in value:
            bad = _not_json(item)
            if bad:
                return bad
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"object keys must be strings, got {json_type(key)} {key!r}"
            bad = _not_json(item)
            if bad:
                return bad
        return None
    hint = f" (quote it in YAML: '{value}')" if type(value).__name__ in ("date", "datetime") else ""
    return f"expected a JSON value, got a {type(value).__name__}{hint}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _value_of(name: str, label: str, get: Callable[[Any], Any], *, plain: bool, vmap: dict[str, Any] | None,
              map_default: Any, has_map_default: bool, steps: list[Step], default: Any, has_default: bool,
              required: bool) -> ValueOf:
    """One field's closure: source -> map -> fn steps (null short-circuits) -> default / required."""
    if plain and vmap is None and not steps and not required:
        if not has_default:
            return get

        def with_default(payload: Any) -> Any:
            v = get(payload)
            return default if v is None else v
        return with_default

    steps_t = tuple(steps)

    def value_of(payload: Any) -> Any:
        try:
            v = get(payload)
            if v is not None:
                if vmap is not None:
                    key = v if v.__class__ is str else (map_key(v) if isinstance(v, (bool, int, float)) else None)
                    hit = vmap.get(key, _MISSING) if key is not None else _MISSING
                    if hit is not _MISSING:
                        v = hit
                    elif has_map_default:
                        v = map_default
                for step in steps_t:
                    if v is None:
                        break
                    v = step(v, payload)
        except StepError as exc:
            raise MappingApplyError(name, str(exc), label) from None
        except jexc.JMESPathError as exc:
            raise MappingApplyError(name, f"JMESPath error: {_one_line(exc)}", label) from None
        if v is None:
            if has_default:
                return default
            if required:
                raise MappingApplyError(name, "required value missing", label)
        return v
    return value_of


def _build_shape(tree: dict[str, Any], leaves: list[_Leaf], include_rest: bool,
                 drops: list[tuple[str, ...]]) -> Callable[[Any], Any]:
    """The output object before wrapping: built fresh (strict) or copied on write (include_rest)."""
    if include_rest:
        writes = tuple((leaf.target, leaf.value_of) for leaf in leaves)

        def shape(payload: Any) -> Any:
            if not isinstance(payload, dict):
                raise MappingApplyError("", f"include_rest needs the payload to be an object, got "
                                            f"{json_type(payload)}")
            out = dict(payload)
            owned = {id(out)}
            for target, value_of in writes:
                if len(target) == 1:
                    out[target[0]] = value_of(payload)
                else:
                    parent = _owned_parent(out, target, owned, create=True)
                    parent[target[-1]] = value_of(payload)
            for segments in drops:
                _drop(out, segments, owned)
            return out
        return shape

    build = _node_builder(tree)
    if not drops:
        return build

    def shape_and_drop(payload: Any) -> Any:
        out = build(payload)
        owned = {id(out)}
        for segments in drops:
            _drop(out, segments, owned)
        return out
    return shape_and_drop


def _node_builder(tree: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    items = tuple((key, child.value_of if isinstance(child, _Leaf) else _node_builder(child))
                  for key, child in tree.items())

    def node(payload: Any) -> dict[str, Any]:
        return {key: value_of(payload) for key, value_of in items}
    return node


def _owned_parent(out: dict[str, Any], target: tuple[str, ...], owned: set[int], *, create: bool) -> Any:
    """The dict that holds ``target[-1]``, copying any shared (payload) dict on the way."""
    node = out
    for seg in target[:-1]:
        child = node.get(seg)
        if isinstance(child, dict):
            if id(child) not in owned:
                child = dict(child)
                node[seg] = child
                owned.add(id(child))
        elif create:
            child = {}
            node[seg] = child
            owned.add(id(child))
        else:
            return None
        node = child
    return node


def _drop(out: dict[str, Any], segments: tuple[str, ...], owned: set[int]) -> None:
    node: Any = out
    for seg in segments[:-1]:
        node = node.get(seg) if isinstance(node, dict) else None
    if not isinstance(node, dict) or segments[-1] not in node:
        return
    parent = _owned_parent(out, segments, owned, create=False)
    if parent is not None:
        del parent[segments[-1]]


def _build_apply(shape: Callable[[Any], Any], wrap: bool, root: str | None) -> Callable[[Any], Any]:
    if not wrap and root is None:
        return shape
    if root is None:
        return lambda payload: [shape(payload)]
    if not wrap:
        return lambda payload: {root: shape(payload)}
    return lambda payload: {root: [shape(payload)]}
