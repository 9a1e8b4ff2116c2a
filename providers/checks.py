"""The checks a careful receiver runs before accepting a webhook: credentials, signature, payload shape.

Each returns ``None`` when the request passes, or a short reason (recorded as the record's ``note``).
The signature check is the receiver's own, written apart from the engine's signing on purpose.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from .config import AuthCheck, SchemaCheck

#: Header names whose values never reach the record.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})
#: The same marker as the engine's redaction (``dispatchsim.engine.redact``), which this package may not import.
REDACTED = "***"


def check_auth(auth: AuthCheck, headers: Mapping[str, str]) -> str | None:
    if auth.type == "api_key":
        got = headers.get(auth.header)
        if got is None:
            return f"auth: missing {auth.header} header"
        return None if hmac.compare_digest(got.encode(), auth.value.encode()) else f"auth: wrong {auth.header}"
    got = headers.get("Authorization")
    if got is None:
        return "auth: missing Authorization header"
    if auth.type == "bearer":
        expected = f"Bearer {auth.value}"
    else:
        token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
        expected = f"Basic {token}"
    return None if hmac.compare_digest(got.encode(), expected.encode()) else f"auth: wrong {auth.type} credentials"


def signing_key(secret: str) -> bytes:
    """Standard Webhooks: ``whsec_<base64 key>``; any other secret is used as raw UTF-8 bytes.

    The receiver's own copy of the signing rules, deliberately independent of the engine's
    (``dispatchsim.engine.signing``): a verifier that shared the sender's code would accept whatever
    that code got wrong. This package imports nothing of the engine.
    """
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except binascii.Error:
            pass
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes | str) -> str:
    """The ``webhook-signature`` header value for a message (``v1,<base64 HMAC-SHA256>``)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + raw
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def check_signature(secret: str, headers: Mapping[str, str], body: bytes, *, now: float,
                    tolerance: float | None) -> str | None:
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not timestamp or not signatures:
        return "signature: missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts = int(timestamp)
    except ValueError:
        return "signature: webhook-timestamp is not an integer"
    if tolerance is not None and abs(now - ts) > tolerance:
        return "signature: webhook-timestamp outside tolerance"
    expected = sign(secret, msg_id, timestamp, body).encode()
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return None
    return "signature: no valid v1 signature"


def check_schema(schema: SchemaCheck, payload: Any) -> str | None:
    """Every object (or every element of a batch array) must carry the required fields."""
    if payload is None:
        return "schema: body is not JSON"
    items = payload if isinstance(payload, list) else [payload]
    for i, item in enumerate(items):
        for name in schema.required:
            if lookup(item, name) is _MISSING:
                where = f"[{i}]." if isinstance(payload, list) else ""
                return f"schema: missing {where}{name}"
    return None


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Missing()


def lookup(obj: Any, dotted: str) -> Any:
    """``a.b.c`` in nested dicts; ``_MISSING`` when absent (a present ``null`` counts as present)."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def redact(headers: Mapping[str, str], extra: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """Lower-cased header names, secrets replaced; repeated headers joined with ``, ``.

    The simulated receiver's own record-keeping: it hides whole header values by name, and knows
    nothing of the engine (whose one redaction scrubs everything the engine lets out).
    """
    secret = SECRET_HEADERS | {h.lower() for h in extra} if extra else SECRET_HEADERS
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        value = REDACTED if key in secret else value
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out
