"""Language facts shared by chunking, keyword search and prompting (Chinese vs English)."""

from __future__ import annotations

import re

# CJK Unified Ideographs (+ Ext A, compatibility), CJK punctuation, full-width forms.
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_OR_PUNCT = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_LATIN_RE = re.compile(r"[A-Za-z]")


def is_cjk_char(ch: str) -> bool:
    """True for Han characters and CJK/full-width punctuation (no space is needed around them)."""
    return bool(_CJK_OR_PUNCT.match(ch))


def cjk_ratio(text: str) -> float:
    """Share of Han characters among Han + Latin letters (0.0 for text with neither)."""
    han = len(_CJK_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    return han / (han + latin) if han + latin else 0.0


def detect_language(text: str) -> str:
    """'zh' when Han characters are a real share of the letters, else 'en'.

    Han characters carry ~4x the information of a Latin letter, so a 20% share already means a
    Chinese question that mentions an English name ("苹果 iPhone 的销量是多少").
    """
    return "zh" if cjk_ratio(text) >= 0.2 else "en"


def join_lines(left: str, right: str) -> str:
    """Join two lines of running text: no space between CJK characters, de-hyphenate English words."""
    if not left:
        return right
    if not right:
        return left
    a, b = left[-1], right[0]
    if is_cjk_char(a) or is_cjk_char(b):
        return left + right
    if a == "-" and len(left) >= 2 and left[-2].isalpha() and b.islower():
        return left[:-1] + right
    return left + " " + right
