"""Compact JSON text, the one format for every stored value and every body sent.

The stores write payloads in it and the sender posts bodies in it; a body spliced from a stored
payload (``payload.spliced_body``) is byte-identical to one encoded afresh only because both are
this same text. One encoder object, built once: building one per call was a seventh of storing an
activity's payload.
"""
from __future__ import annotations

import json
from typing import Any

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``: the same text."""
    return _ENCODE(value)


def encode_body(value: Any) -> bytes:
    """JSON as every body is sent and every payload is stored: compact, UTF-8, keys in the given order."""
    return _ENCODE(value).encode()
