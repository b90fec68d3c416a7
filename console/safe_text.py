"""Make untrusted text (names, emails, device models, resources) safe to show.

Users type their own names in the portal and devices report their own models,
so any of these may carry terminal escape sequences, bidi overrides or markup.
``printable`` is applied once where data enters a view (TUI or CLI); the result
must still be rendered as literal text, never parsed as markup.
"""

from __future__ import annotations

import re
import unicodedata

REPLACEMENT = "\ufffd"

# C0/C1 controls and DEL would reach the terminal as escape sequences; bidi
# embeddings/overrides/isolates reorder the rest of the line; line/paragraph
# separators break table rows.  Zero-width joiners stay: emoji need them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufff9-\ufffb]")


def printable(value: object, *, max_length: int | None = None) -> str:
    """``value`` as a single line with every unsafe character replaced by U+FFFD."""
    if value is None:
        return ""
    text = _UNSAFE.sub(REPLACEMENT, str(value))
    if max_length is not None and len(text) > max_length:
        text = text[: max(0, max_length - 1)] + "…"
    return text


def is_safe(value: str) -> bool:
    """True when ``value`` needs no replacement."""
    return _UNSAFE.search(value) is None and all(unicodedata.category(c) != "Cs" for c in value)
