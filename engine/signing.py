"""Webhook headers and signatures, Standard Webhooks style: one implementation for every sender.

Each delivery carries ``webhook-id`` (the same on every retry, so a receiver can drop copies),
``webhook-timestamp`` (Unix seconds of this try) and, when the configuration has a signing secret,
``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``. The engine's sender and
the probe both build requests here, so what the probe checks is what the engine sends. The simulated
receiver's verification (``providers.checks``) is a deliberate second copy: a check that shared this
code could not catch a bug in it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Auth

#: The secret prefix of Standard Webhooks: ``whsec_`` followed by the base64 key.
SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """``whsec_<base64>`` is the key's base64; any other secret is its own UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except binascii.Error:
            pass
    return secret.encode("utf-8")


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    mac = hmac.new(signing_key(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def webhook_headers(*, webhook_id: str, timestamp: int, body: bytes, auth: Auth, signing_secret: str | None,
                    signature: str | None = None) -> dict[str, str]:
    """Every header a delivery carries besides the client's own; ``signature`` replaces the computed
    one (the probe sends tampered signatures on purpose)."""
    headers = {"Content-Type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
    if auth.type != "none":  # (an endpoint without credentials, the usual case, builds no second dictionary)
        headers.update(auth.headers())
    if signature is not None:
        headers["webhook-signature"] = signature
    elif signing_secret:
        headers["webhook-signature"] = sign(signing_secret, webhook_id, timestamp, body)
    return headers
