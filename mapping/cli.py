"""``dispatchsim mapping check|preview``: validate a mapping file, or show what it sends."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dispatchsim.errors import LocatedError
from dispatchsim.yamlfile import load_json, read_text

from .compiler import CompiledMapping, compile_mapping
from .errors import MappingApplyError, MappingSpecError
from .activity import SEED_PAYLOAD

EXIT_OK = 0
EXIT_APPLY_FAILED = 1
EXIT_INVALID = 2


def register_cli(subparsers: Any) -> None:
    """Add ``mapping check FILE`` and ``mapping preview FILE [--payload JSON_FILE]``."""
    mapping = subparsers.add_parser(
        "mapping", help="check or preview a payload mapping file",
        description="Validate a payload mapping (YAML or JSON) or show the payload it produces.")
    sub = mapping.add_subparsers(dest="mapping_command", metavar="SUBCOMMAND", required=True)
    check = sub.add_parser(
        "check", help="report errors and warnings with file:line (exit 0 valid, 2 invalid)",
        description="Compile a mapping file and report every error and warning as FILE:LINE. Warnings "
                    "(sources that find nothing in the documented example activity) do not fail the check.")
    check.add_argument("file", help="mapping file (.yaml, .yml or .json)")
    check.set_defaults(func=run_check)
    preview = sub.add_parser(
        "preview", help="print the mapped payload as JSON",
        description="Apply a mapping to the documented example activity (or --payload) and print the result.")
    preview.add_argument("file", help="mapping file (.yaml, .yml or .json)")
    preview.add_argument("--payload", metavar="JSON_FILE",
                         help="activity payload to map (default: the documented example activity)")
    preview.set_defaults(func=run_preview)


def _compile_file(path: str) -> CompiledMapping:
    from .loader import load_mapping_file

    spec, lines = load_mapping_file(path)
    try:
        return compile_mapping(spec, lines=lines)
    except MappingSpecError as exc:
        raise MappingSpecError(exc.problems, source=path) from None


def run_check(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    try:
        compiled = _compile_file(args.file)
    except MappingSpecError as exc:
        for problem in exc.problems:
            print(problem.located(exc.source or args.file, "error"), file=out)
        print(f"{args.file}: invalid mapping ({_count(len(exc.problems), 'error')})", file=out)
        return EXIT_INVALID
    for warning in compiled.warnings:
        print(warning.located(args.file, "warning"), file=out)
    fields = len(compiled.spec.get("fields", {}))
    summary = f"{args.file}: ok, version {compiled.digest}, {_count(fields, 'field')}"
    if compiled.warnings:
        summary += f", {_count(len(compiled.warnings), 'warning')}"
    print(summary, file=out)
    return EXIT_OK


def run_preview(args: argparse.Namespace, out: Any = None, err: Any = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        compiled = _compile_file(args.file)
    except MappingSpecError as exc:
        for problem in exc.problems:
            print(problem.located(exc.source or args.file, "error"), file=err)
        return EXIT_INVALID
    for warning in compiled.warnings:
        print(warning.located(args.file, "warning"), file=err)
    payload: Any = SEED_PAYLOAD
    if getattr(args, "payload", None):
        try:  # the shared strict reader: NaN, lone surrogates, duplicate keys, deep nesting are file:line
            payload = load_json(read_text(args.payload, what="the payload"), source=args.payload)
        except LocatedError as exc:
            for problem in exc.errors:
                print(problem.located(), file=err)
            return EXIT_INVALID
        if not isinstance(payload, dict):  # an activity is a JSON object; a list or a number mapped to nothing
            print(f"{args.payload}:1: the payload must be a JSON object (an activity), not {_json_kind(payload)}",
                  file=err)
            return EXIT_INVALID
    try:
        result = compiled.apply(payload)
    except MappingApplyError as exc:
        print(f"{args.payload or 'example activity'}: cannot be mapped: {exc}", file=err)
        return EXIT_APPLY_FAILED
    print(json.dumps(result, indent=2, ensure_ascii=False), file=out)
    return EXIT_OK


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    return "a string" if isinstance(value, str) else "a number"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
