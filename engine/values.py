"""JSON values users hand us, checked before anything is stored: valid Unicode and finite numbers.

A Python ``str`` can hold a lone surrogate (``"\\ud800"``, which ``json.loads`` accepts from an
escape); it cannot be encoded as UTF-8, so storing it would fail later (or half-way) and sending it
would be invalid JSON for a receiver. A ``float`` can be NaN or infinite, which JSON cannot carry.
Both are refused at the door with the dotted field that holds them.
"""
from __future__ import annotations

import math
from typing import Any

from dispatchsim.yamlfile import MAX_JSON_DEPTH, TOO_DEEP, valid_text


def show_key(key: object) -> str:
    """A key as it can safely appear in a message (escaped when it is not valid text)."""
    return key if isinstance(key, str) and valid_text(key) else ascii(key)


def value_problems(value: Any, where: str, *, depth: int = 0) -> list[str]:
    """Every invalid string, key or number inside ``value``, each as ``dotted.field: message``."""
    if isinstance(value, str):
        return [] if valid_text(value) else [f"{where}: not valid Unicode text (a lone surrogate such as \\ud800)"]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where}: must be a finite number, not {value!r}"]
    if isinstance(value, (dict, list)) and depth >= MAX_JSON_DEPTH:  # the limit files have (one for both)
        return [f"{where}: {TOO_DEEP}"]
    problems: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not valid_text(key):
                problems.append(f"{where}: key {show_key(key)} is not valid Unicode text")
                continue
            problems.extend(value_problems(item, f"{where}.{key}", depth=depth + 1))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems.extend(value_problems(item, f"{where}[{i}]", depth=depth + 1))
    return problems
