"""The one redaction (engine.redact): its rule in small, exact cases, and the engine log it guards. The end-to-end proof, with a real
receiver echoing credentials around every cut-off, is tests/test_secrets_at_the_edge.py."""
from __future__ import annotations

import io
import json
from urllib.parse import quote

from dispatchsim.engine.log import make_logger
from dispatchsim.engine.redact import FRAGMENT, REDACTED, Redactor, cut

SECRET = "tok~Zq8/Xw+Kd3~Vm"


def test_every_echoed_form_of_a_secret_is_hidden():
    r = Redactor(SECRET)
    for form in (SECRET, json.dumps(SECRET)[1:-1].replace("/", "\\/"), quote(SECRET, safe=""),
                 repr(SECRET.encode())[2:-1]):
        assert r.text(f"a {form} b") == f"a {REDACTED} b", form


def test_overlapping_secrets_become_one_marker_and_leave_nothing_behind():
    r = Redactor("abcdXYZ1", "XYZ1efgh")
    assert r.text("..abcdXYZ1efgh..") == f"..{REDACTED}.."
    assert r.text("abcdXYZ1 XYZ1efgh") == f"{REDACTED} {REDACTED}"


def test_signing_secret_key_part_and_short_values():
    r = Redactor("whsec_c2VjcmV0a2V5", "ab", None, "")
    assert r.text("c2VjcmV0a2V5 ab") == f"{REDACTED} ab"  # 2-char values are not secrets: too common


def test_cut_is_on_a_character_boundary():
    assert cut("ééé", 3) == "é"
    assert cut("abc", 3) == "abc"


def test_excerpt_scrubs_before_it_cuts():
    r = Redactor(SECRET)
    for k in range(20 - len(SECRET), 22):
        body = ("." * k + SECRET + "." * 30).encode()
        out = r.excerpt(body, 20)
        assert out is not None and len(out.encode()) <= 20
        assert all(SECRET[i:i + FRAGMENT] not in out for i in range(len(SECRET) - FRAGMENT + 1)), (k, out)


def test_a_body_cut_by_someone_else_loses_a_trailing_secret_head():
    r = Redactor(SECRET)
    for n in range(1, len(SECRET)):
        out = r.excerpt(b"xx " + SECRET[:n].encode(), 100, truncated=True)
        if n >= FRAGMENT:
            assert out == "xx " + REDACTED
        else:
            assert out == "xx " + SECRET[:n]  # shorter than FRAGMENT: not a leak by the rule


def test_bytes_quoted_in_an_error_lose_both_cut_edges():
    r = Redactor(SECRET)
    head, tail = SECRET[:9], SECRET[-7:]
    msg = f"400, message:\n  Got more than 8190 bytes when reading: b'{tail} filler {head}...'."
    assert r.error(msg) == f"400, message:\n  Got more than 8190 bytes when reading: b'{REDACTED} filler {REDACTED}...'."
    assert r.error("x" * 5000, cap=100) == "x" * 100


def test_scrub_structures_and_header_names():
    r = Redactor(SECRET, headers=["X-Key"])
    assert r.scrub({"token": "anything", "nested": [f"v={SECRET}"], "n": 3}) == {
        "token": REDACTED, "nested": [f"v={REDACTED}"], "n": 3}
    assert r.headers({"x-key": "k", "Authorization": "Bearer z", "X-Echo": SECRET}) == {
        "x-key": REDACTED, "Authorization": REDACTED, "X-Echo": REDACTED}
    assert r.url(f"http://u:{quote(SECRET, safe='')}@h/x?page=2") == f"http://{REDACTED}@h/x?page=2"


def test_secret_header_values_quoted_in_an_error_are_hidden():
    r = Redactor(headers=["X-Key"])
    msg = ("BadHttpMessage: 400, message: Invalid: b'GET / HTTP/1.1\\r\\nHost: h\\r\\nX-Api-Key: adm-123\\r\\n"
           "Authorization: Bearer abc\\r\\nX-Key: k-9\\r\\nX-Other: visible'")
    assert r.error(msg) == ("BadHttpMessage: 400, message: Invalid: b'GET / HTTP/1.1\\r\\nHost: h\\r\\nX-Api-Key: ***\\r\\n"
                            "Authorization: ***\\r\\nX-Key: ***\\r\\nX-Other: visible'")


def test_the_engine_log_does_nothing_until_someone_listens() -> None:
    """No stream, no subscriber: an event is not even time-stamped. A subscriber added later gets
    every event from then on, redacted and on the engine's clock."""
    stamped: list[float] = []

    def now() -> float:
        stamped.append(1.0)
        return 0.0

    sinks: list = []
    log = make_logger(now=now, redactor=Redactor("s3cret-value"), sinks=sinks)
    log.info("delivery.dispatched", delivery_id=1)
    assert stamped == []
    got: list[dict] = []
    sinks.append(got.append)
    log.warning("delivery.retrying", error="token s3cret-value refused")
    assert got == [{"event": "delivery.retrying", "error": "token *** refused", "level": "warning",
                    "ts": "1970-01-01T00:00:00.000Z"}] and stamped == [1.0]
    stream = io.StringIO()
    make_logger(now=now, redactor=Redactor(), stream=stream).error("store.unavailable", retry_in=1.0)
    assert json.loads(stream.getvalue())["event"] == "store.unavailable"
