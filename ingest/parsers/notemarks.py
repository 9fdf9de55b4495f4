"""Footnote and trademark marks: superscript "1", "2,5", "*", "®", "TM" in a much smaller font.

PDF producers often draw them after all other text, so in the page's text stream they sit far from
the word they mark; joined into a line they make sentences ("Consumer Health) 6") that no reader
finds on the page. They are dropped: the marked text then reads as it does to the eye.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ingest.parsers.layout import Line

MARK_RATIO = 0.75  # a mark's font size at most this share of the page's usual size
_MARK_RE = re.compile(r"^(?:\d{1,2}(?:\s*,\s*\d{1,2})*|[*†‡§]{1,3}|[®™©]|TM|SM)$")


def _usual_size(lines: Sequence[Line]) -> float:
    """The char-weighted median font size of the page's lines."""
    sized = sorted((ln.size, len(ln.text)) for ln in lines)
    half = sum(n for _, n in sized) / 2
    seen = 0
    for size, n in sized:
        seen += n
        if seen >= half:
            return size
    return 0.0


def split_note_marks(lines: list[Line]) -> tuple[list[Line], list[tuple[float, float, float, float]]]:
    """(lines without footnote marks, the boxes of the marks removed)."""
    usual = _usual_size(lines)
    marks = [ln for ln in lines if ln.size <= MARK_RATIO * usual and _MARK_RE.match(ln.text)]
    if not marks:
        return lines, []
    ids = {id(ln) for ln in marks}
    return [ln for ln in lines if id(ln) not in ids], [(ln.x0, ln.y0, ln.x1, ln.y1) for ln in marks]


def words_outside(
    get_words: Callable[[], Sequence[tuple[Any, ...]]], boxes: Sequence[tuple[float, float, float, float]]
) -> Callable[[], Sequence[tuple[Any, ...]]]:
    """`get_words` without the words whose centre lies in one of `boxes` (the marks dropped)."""
    if not boxes:
        return get_words

    def words() -> list[tuple[Any, ...]]:
        out = []
        for w in get_words():
            xc, yc = (w[0] + w[2]) / 2, (w[1] + w[3]) / 2
            if not any(b[0] - 0.5 <= xc <= b[2] + 0.5 and b[1] - 0.5 <= yc <= b[3] + 0.5 for b in boxes):
                out.append(w)
        return out

    return words
