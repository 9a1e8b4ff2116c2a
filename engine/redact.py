"""One redaction: secrets never leave in logs, reports, API responses, stored excerpts or errors.

Every place that lets text out uses a :class:`Redactor`: the engine's logger (a structlog
processor), the sender (response excerpts and error messages, at the edge where bytes come in),
configuration reads and the probe's reports. One marker, :data:`REDACTED`, stands for whatever
was hidden.

The rule, and how it is kept:

* A secret is every credential in play (API-key value, bearer token, basic password and the
  base64 ``user:password`` token, signing secret and its ``whsec_`` key, notification secret,
  secrets in URLs), in the forms a receiver may echo it: as is, JSON-escaped (also with ``\\/``),
  percent-encoded and as Python writes it inside a ``b'…'`` literal (aiohttp's parser errors).
* Nothing that leaves contains a run of :data:`FRAGMENT` (4) or more consecutive characters of a
  secret unless the same run is also in the text around the secret (a word the secret happens to
  share with ordinary text is not a leak). Shorter runs carry too little of a secret to matter and
  cannot be told from ordinary text.
* Scrub first, then cut: text is scrubbed whole, then cut to its cap (:func:`cut`), so a cap can
  never leave the head of a secret behind. Where someone else already cut the text (a body read up
  to its limit, the bytes aiohttp quotes in an error), an edge that could be part of a secret
  (:data:`FRAGMENT` or more characters of it) is hidden too.
"""
from __future__ import annotations

import codecs
import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import ConfigError

#: The one marker for anything hidden.
REDACTED = "***"
#: Runs of this many characters of a secret count as a leak (see the module docstring).
FRAGMENT = 4
#: Shorter values are not treated as secrets: hiding them would hide ordinary text everywhere.
MIN_SECRET = 3
#: Cap of an error message that is stored or logged (UTF-8 bytes).
ERROR_CAP = 1024

_SECRET_KEY_PARTS = ("secret", "password", "token", "authorization", "api_key", "apikey")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
_SECRET_QUERY = re.compile(r"(?i)(token|key|secret|signature|sig|password|passwd|auth|access_token|api_key)")
_BYTES_LITERAL = re.compile(r"""(?<![\w'"])(b')((?:[^'\\]|\\.)*)(')|(?<![\w'"])(b")((?:[^"\\]|\\.)*)(")""")
_ELLIPSES = ("...", "…")
#: ``Name: value`` inside quoted HTTP bytes (lines end in an escaped ``\r\n``): secret headers' values hidden.
_HEADER_LINE = re.compile(r"((?:^|(?<=\\n))([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*)[^\\]*")
#: Characters that JSON, percent-encoding and bytes literals all leave as they are.
_UNESCAPED = re.compile(r"[A-Za-z0-9_.~-]+")


class Redactor:
    """Hides known secret values (and values under secret-looking keys or headers).

    One instance per engine learns every secret of every configuration as it is created, edited or
    sent with; it is also the engine logger's redaction processor.
    """

    def __init__(self, *values: str | None, headers: Iterable[str] = ()) -> None:
        self._known: set[str] = set()
        self._forms: tuple[str, ...] = ()
        #: one run per secret that each of its forms contains: the quick test before the full search
        self._anchors: tuple[str, ...] = ()
        self._headers = set(_SECRET_HEADERS)
        self.add(*values)
        self.add_headers(*headers)

    def add(self, *values: str | None) -> None:
        """Learn secret values (and the forms a receiver may echo them in)."""
        new = [v for v in values if v and len(v) >= MIN_SECRET and v not in self._known]
        if not new:
            return
        forms, anchors = set(self._forms), set(self._anchors)
        for value in new:
            self._known.add(value)
            for part in _parts(value):
                these = {f for f in _forms(part) if len(f) >= MIN_SECRET}
                forms.update(these)
                anchor = max(_UNESCAPED.findall(part), key=len, default="")
                anchors.update([anchor] if len(anchor) >= MIN_SECRET else these)
        self._forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))
        self._anchors = tuple(sorted(a for a in anchors if not any(b != a and b in a for b in anchors)))

    def add_headers(self, *names: str) -> None:
        """Header names whose values are hidden whole (e.g. an API-key header)."""
        self._headers.update(n.lower() for n in names if n)

    # -- text ------------------------------------------------------------------------------

    def text(self, text: str) -> str:
        """Every occurrence of a known secret replaced by :data:`REDACTED` (overlapping ones as one)."""
        for anchor in self._anchors:  # a plain loop: this runs for every string of every log event
            if anchor in text:
                break
        else:
            return text
        hits = [f for f in self._forms if f in text]
        if not hits:
            return text
        spans: list[tuple[int, int]] = []
        for form in hits:
            at = text.find(form)
            while at != -1:
                spans.append((at, at + len(form)))
                at = text.find(form, at + 1)
        return _replace(text, spans)

    def excerpt(self, raw: bytes | None, cap: int, *, truncated: bool = False) -> str | None:
        """A body as text, scrubbed and then cut to ``cap`` UTF-8 bytes.

        ``truncated``: the body was already cut (read up to a limit), so its end may be the head of a
        secret; that end is hidden too.
        """
        if not raw:
            return None
        if truncated:
            text = codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=False)
            text = self._hide_tail(self.text(text))
        else:
            text = self.text(raw.decode("utf-8", "replace"))
        return cut(text, cap)

    def error(self, text: str, cap: int = ERROR_CAP) -> str:
        """An error message from elsewhere (e.g. aiohttp), scrubbed then cut to ``cap`` UTF-8 bytes.

        aiohttp quotes the bytes it choked on as ``b'…'``, cut at its own limits (a 100-byte line head,
        the end of a network read): both edges of every such literal may be part of a secret.
        """
        text = _BYTES_LITERAL.sub(self._literal, self.text(text))
        return cut(text, cap)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Headers for a report: secret headers hidden whole, other values scrubbed."""
        return {k: REDACTED if k.lower() in self._headers else self.text(v) for k, v in headers.items()}

    def url(self, url: str) -> str:
        """A URL for a report or a log: userinfo and secret-looking query values hidden, known secrets too."""
        return self.text(redact_url(url))

    # -- structured values -------------------------------------------------------------------

    def scrub(self, value: Any) -> Any:
        """Strings scrubbed, and values under secret-looking keys hidden, through dicts and lists."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            # the engine's events are flat dicts of short strings and numbers: those are handled here
            # rather than by a call each (this runs for every field of every log event)
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if v and _secret_key(k):
                    out[k] = REDACTED
                elif isinstance(v, str):
                    out[k] = self.text(v)
                elif isinstance(v, (dict, list, tuple)):
                    out[k] = self.scrub(v)
                else:
                    out[k] = v
            return out
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        """structlog processor: every event is scrubbed before any renderer or sink sees it."""
        return self.scrub(event)

    # -- cut edges -------------------------------------------------------------------------

    def _literal(self, m: re.Match[str]) -> str:
        opening, body, closing = (m.group(1), m.group(2), m.group(3)) if m.group(1) else m.group(4, 5, 6)
        ellipsis = next((e for e in _ELLIPSES if body.endswith(e)), "")
        body = self._hide_head(self._hide_tail(body[:len(body) - len(ellipsis)]))
        body = _HEADER_LINE.sub(lambda h: h[1] + REDACTED if h[2].lower() in self._headers else h[0], body)
        return f"{opening}{body}{ellipsis}{closing}"

    def _hide_tail(self, text: str) -> str:
        """Hide the longest end of ``text`` that is the head of a secret (at least FRAGMENT chars)."""
        longest = 0
        for form in self._forms:
            for n in range(min(len(form) - 1, len(text)), max(FRAGMENT, longest + 1) - 1, -1):
                if text.endswith(form[:n]):
                    longest = n
                    break
        return text[:len(text) - longest] + REDACTED if longest else text

    def _hide_head(self, text: str) -> str:
        """Hide the longest start of ``text`` that is the end of a secret (at least FRAGMENT chars)."""
        longest = 0
        for form in self._forms:
            for n in range(min(len(form) - 1, len(text)), max(FRAGMENT, longest + 1) - 1, -1):
                if text.startswith(form[len(form) - n:]):
                    longest = n
                    break
        return REDACTED + text[longest:] if longest else text


def cut(text: str, cap: int) -> str:
    """``text`` cut to at most ``cap`` UTF-8 bytes, on a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= cap:
        return text
    return raw[:cap].decode("utf-8", "ignore")


def redact_url(url: str) -> str:
    """Hide credentials in a URL: userinfo (``https://***@host/…``) and query values whose names look
    like secrets (``?token=***``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a broken IPv6 host, a port out of range or not a number
        return "<unparseable url>"
    netloc, query = parts.netloc, parts.query
    if parts.username or parts.password:
        host = parts.hostname or ""
        if port:
            host += f":{port}"
        netloc = f"{REDACTED}@{host}"
    if query:
        pairs = []
        for pair in query.split("&"):
            name, sep, _value = pair.partition("=")
            pairs.append(f"{name}={REDACTED}" if sep and _SECRET_QUERY.search(name) else pair)
        query = "&".join(pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_http_url(url: Any, *, field: str) -> str:
    """``url`` if an HTTP client can send to it: an absolute http(s) URL with a host, a port from 1 to
    65535 if it names one, no whitespace or control characters. ConfigError naming ``field``
    otherwise (the URL shown without its credentials). Every URL the engine will POST to is checked
    here before anything is stored, so none can fail later in the client, or in a report."""
    if not isinstance(url, str) or not url:
        raise ConfigError("required, an http(s) URL", field=field)
    shown = redact_url(url)
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ConfigError(f"must not contain spaces or control characters, got {shown!r}", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a broken IPv6 host, a port out of range or not a number
        raise ConfigError(f"not a valid URL: {exc}", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"must be an absolute http(s) URL, got {shown!r}", field=field)
    if port == 0:
        raise ConfigError(f"port 0 cannot be connected to: {shown!r}", field=field)
    return url


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: its password and secret-looking query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = [v for v in (parts.password,) if v]
    for pair in parts.query.split("&") if parts.query else []:
        name, sep, value = pair.partition("=")
        if sep and value and _SECRET_QUERY.search(name):
            out.append(value)
    return out


def _parts(value: str) -> list[str]:
    """A secret, and the part of it that is a secret on its own (the key of a ``whsec_`` secret)."""
    return [value, value[len("whsec_"):]] if value.startswith("whsec_") else [value]


def _forms(value: str) -> set[str]:
    """The ways a receiver, or a library quoting it, may write a secret back. Each keeps the runs of
    :data:`_UNESCAPED` characters of the value as they are."""
    escaped = json.dumps(value)[1:-1]
    literal = repr(value.encode("utf-8"))[2:-1]
    return {value, escaped, escaped.replace("/", "\\/"), json.dumps(value, ensure_ascii=False)[1:-1],
            quote(value, safe=""), quote(value, safe="/"),
            literal, literal.replace("\\'", "'"), literal.replace("'", "\\'")}


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    spans.sort()
    out: list[str] = []
    pos = 0
    start, end = spans[0]
    for s, e in spans[1:]:
        if s < end:  # overlapping occurrences: one marker
            end = max(end, e)
            continue
        out += [text[pos:start], REDACTED]
        pos, (start, end) = end, (s, e)
    out += [text[pos:start], REDACTED, text[end:]]
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _secret_key(key: Any) -> bool:
    k = str(key).lower()
    return any(p in k for p in _SECRET_KEY_PARTS)
