"""Cleaning extracted text and judging whether a text layer is garbled."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Kangxi radicals / CJK radicals supplement (broken ToUnicode maps in Chinese PDFs emit "⽣" for "生"),
# CJK compatibility ideographs and Latin ligatures: NFKC maps all of them to the ordinary characters.
_COMPAT_RE = re.compile(r"[\u2e80-\u2fdf\uf900-\ufaff\ufb00-\ufb06]")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b\u200e\u200f\ufeff]")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_PUNCT = "\u3000-\u303f\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
# One space between two Han characters (or Han and CJK punctuation) is an extraction artefact.
_CJK_GAP_RE = re.compile(f"(?<=[{_HAN}{_CJK_PUNCT}]) +(?=[{_HAN}{_CJK_PUNCT}])")
_LEADER_RE = re.compile(r"\s*[.·•…．]{4,}\s*|\s*(?:\. ){3,}\.?\s*")  # table-of-contents dot leaders
_PUNCT_RUN_RE = re.compile(r"([^\w\s])\1{2,}")
_WHITESPACE_RE = re.compile(r"\s+")
_NOT_ALNUM_RE = re.compile(r"[\W_]+")
_BAD_RE = re.compile(r"[\ue000-\uf8ff\ufffd]|\(cid:\d+\)")
_PAGE_NUMBER_RE = re.compile(
    r"^(?:[-–—\s]*\d{1,4}[-–—\s]*|page\s+\d+(?:\s+of\s+\d+)?|第\s*\d+\s*页(?:\s*共\s*\d+\s*页)?|[ivxlc]{1,6})$",
    re.IGNORECASE,
)


def clean_line(text: str) -> str:
    """Normalise one extracted line: compatibility forms, control characters, runs of spaces, CJK gaps."""
    ascii_only = text.isascii()
    if not ascii_only:
        if _COMPAT_RE.search(text):
            text = _COMPAT_RE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
        if "\u00ad" in text:
            if text.endswith("\u00ad"):  # a soft hyphen at a line end is a hyphenated break
                text = text[:-1] + "-"
            text = text.replace("\u00ad", "")
    text = _CONTROL_RE.sub("", text)
    if "...." in text or ". . ." in text or not ascii_only:
        text = _LEADER_RE.sub(" … ", text)
    text = _SPACES_RE.sub(" ", text).strip()
    return text if ascii_only else _CJK_GAP_RE.sub("", text)


def strip_bad_glyphs(text: str) -> str:
    """Drop private-use glyphs, replacement characters and "(cid:NN)" codes."""
    return _BAD_RE.sub("", text)


def is_page_number(text: str) -> bool:
    return bool(_PAGE_NUMBER_RE.match(text.strip()))


def header_key(text: str) -> str:
    """The form of a line used to spot running headers: digits normalised, case and spaces folded."""
    return re.sub(r"\d+", "#", re.sub(r"\s+", " ", text.strip().lower()))


@dataclass(slots=True)
class TextQuality:
    chars: int  # non-space characters
    bad: int  # private-use / replacement / cid glyphs
    alnum: int  # letters (any script) and digits

    @property
    def empty(self) -> bool:
        return self.chars < 10

    @property
    def garbled(self) -> bool:
        if self.chars == 0:
            return False
        if self.bad >= 5 and self.bad > 0.05 * self.chars:
            return True
        # A text layer made of symbols (fonts with a custom encoding): too few letters and digits.
        return self.chars >= 50 and self.alnum < 0.35 * self.chars


def text_quality(text: str) -> TextQuality:
    text = _PUNCT_RUN_RE.sub("", text)  # leaders and rules are not a sign of a broken font
    chars = len(_WHITESPACE_RE.sub("", text))
    bad = len(_BAD_RE.findall(text))
    alnum = len(_NOT_ALNUM_RE.sub("", text))  # private-use glyphs are not \w
    return TextQuality(chars=chars, bad=bad, alnum=alnum)
