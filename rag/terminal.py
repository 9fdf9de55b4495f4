"""Text that came from files (names, titles, error lines) made safe to print for a person.

A file name may hold terminal escape sequences (`\\x1b]0;...`, `\\x1b[2J`), C1 controls or Unicode bidi
overrides that rewrite what a terminal shows; printed raw, they can hide or fake lines. `safe_text`
writes every such character as a visible escape. JSON output is not passed through it: JSON must
stay exact, and its encoder already escapes what it must.
"""

from __future__ import annotations

import unicodedata

# Invisible characters that reorder the text around them (the "Trojan Source" characters).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """`text` with control characters (newlines and tabs too), bidi controls and lone surrogates escaped.

    Printable text, CJK included, is unchanged; so is a backslash (a Windows path stays readable).
    """
    if text.isprintable():  # the common case: nothing to do
        return text
    # Cs: a lone surrogate (a non-UTF-8 byte of a file name) cannot even be written to stdout.
    return "".join(_escape(ch) if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)
