"""Text from outside (a receiver's response, a stored label) made safe to print or to put in XML.

A control character (an escape sequence that recolours, retitles or rewrites a terminal, a NUL, a
backspace) or an invisible format character (a bidi override that reverses what follows) in text a
user reads could forge what they see, and most C0 controls are not allowed in XML 1.0 at all. Both
are shown as the Python escape (``\\x1b``, ``\\u202e``) so the reader sees that they were there.
"""
from __future__ import annotations

import re

#: Characters XML 1.0 does not allow in a document (everything outside its ``Char`` production).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escaped(c: str) -> str:
    return ascii(c)[1:-1]


def printable(text: str | None) -> str:
    """``text`` with every character that is not printable (controls C0, DEL and C1, format characters
    such as bidi overrides, separators other than the space, unassigned code points) as a visible
    escape, never sent to the terminal as it is."""
    return "".join(c if c.isprintable() else _escaped(c) for c in text or "")


def xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 forbids as visible escapes, so the document always parses."""
    return _NOT_XML.sub(lambda m: _escaped(m.group()), text)
