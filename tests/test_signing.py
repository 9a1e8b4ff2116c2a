"""One signing implementation (engine.signing) for the sender and the probe, checked against the simulated
receiver's independent verifier (providers.checks)."""
from __future__ import annotations

import base64

import pytest

from dispatchsim.engine.config import Auth
from dispatchsim.engine.signing import sign, webhook_headers
from dispatchsim.providers.checks import check_signature

BODY = '{"id":"a1","commerceName":"Café"}'.encode()


@pytest.mark.parametrize("secret", [
    "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
    "plain-secret-not-base64",
    "whsec_not base64!",  # not base64 after the prefix: both sides use the raw bytes
])
def test_engine_signature_verifies_with_the_independent_receiver_check(secret):
    headers = webhook_headers(webhook_id="msg_1", timestamp=1_700_000_000, body=BODY,
                              auth=Auth.parse({"type": "bearer", "token": "tok-123"}), signing_secret=secret)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["Authorization"] == "Bearer tok-123"
    assert headers["Content-Type"] == "application/json"
    assert check_signature(secret, headers, BODY, now=1_700_000_000, tolerance=300) is None
    assert check_signature(secret, headers, BODY + b" ", now=1_700_000_000, tolerance=300) is not None


def test_signature_override_and_unsigned_requests():
    auth = Auth()
    tampered = webhook_headers(webhook_id="m", timestamp=5, body=b"{}", auth=auth, signing_secret="s3cret",
                               signature="v1,AAAA")
    assert tampered["webhook-signature"] == "v1,AAAA"
    assert "webhook-signature" not in webhook_headers(webhook_id="m", timestamp=5, body=b"{}", auth=auth,
                                                      signing_secret=None)
    assert sign("s3cret", "m", 5, b"{}") != sign("s3cret", "m", 6, b"{}")
