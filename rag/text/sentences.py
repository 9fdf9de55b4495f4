"""Sentences and citation markers: the one splitter every part of citeqa uses.

Chinese and English terminators and newlines end a sentence; a markdown table row is one sentence
whatever its cells say; closing quotes and citation markers right after a terminator stay with the
sentence before them ("营收为5亿元。[1]"). Markers: `[1]`, `[1, 3]`, `[2-4]`, `【1】`, `[Source 5]`.
"""

from __future__ import annotations

import re

_DIGITS = r"\d+(?:\s*[-–]\s*\d+)?"
_LIST = rf"{_DIGITS}(?:\s*[,，、;；]\s*{_DIGITS})*"
MARKER_RE = re.compile(
    rf"\[\s*(?:source|sources|来源|资料|文档)?\s*({_LIST})\s*\]|【\s*(?:来源|资料|文档)?\s*({_LIST})\s*】",
    re.IGNORECASE,
)
SPACED_MARKER_RE = re.compile(r"[ \t]*(?:" + MARKER_RE.pattern + ")", re.IGNORECASE)
PLACEHOLDER_RE = re.compile(r"[ \t]*[\[【]\s*n\s*[\]】]")
NESTED_PLACEHOLDER_RE = re.compile(r"\[\s*n\s*(\[\s*\d+\s*\])\s*\]")  # "[n [1]]" -> "[1]"
LIST_PREFIX = re.compile(r"^\s*(?:\d{1,2}[.)、]\s+|[-*•]\s+|#+\s+)")
SENTENCE_END = "。！？!?；;"
_ABBREV = frozenset(
    "inc corp co ltd llc plc mr mrs ms dr st no vs etc e.g i.e u.s u.k jan feb mar apr jun jul aug sep sept oct nov dec fig approx dept est".split()
)
CLOSERS = "”’\"'）)」』》】]"


def is_table_row(text: str) -> bool:
    """A markdown table row (the parser writes tables as markdown)."""
    return text.lstrip().startswith("|")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of `text` (Chinese and English terminators, newlines).

    Closing quotes and citation markers right after a terminator stay with the sentence before
    them, so "营收为5亿元。[1]" is one sentence that carries its marker.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        end: int | None = None
        if ch == "|" and not text[start:i].strip():  # a table row is one unit, whatever its cells say
            nl = text.find("\n", i)
            row_end = n if nl < 0 else nl
            if text[i:row_end].rstrip().endswith("|"):
                spans.append((start, row_end))
                start = i = row_end + 1
                continue
        if ch == "\n":
            end = i
        elif ch in SENTENCE_END or (
            ch == "."
            and (i + 1 >= n or text[i + 1].isspace() or text[i + 1] in "[【")
            and not (i > 0 and text[i - 1].isdigit() and i + 1 < n and text[i + 1].isdigit())
            and not _is_abbreviation(text, i)
        ):
            j = i + 1
            while True:  # absorb closers and markers: 。[1] / ." [2][3]
                while j < n and text[j] in CLOSERS:
                    j += 1
                k = j
                while k < n and text[k] == " ":
                    k += 1
                m = MARKER_RE.match(text, k)
                if m is None:
                    break
                j = m.end()
            end = j
        if end is not None:
            if text[start:end].strip():
                spans.append((start, end))
            start = end if ch != "\n" else end + 1
            i = max(i + 1, start)
            continue
        i += 1
    if text[start:].strip():
        spans.append((start, n))
    return [_strip_span(text, s, e) for s, e in spans]


def _is_abbreviation(text: str, dot: int) -> bool:
    """'Inc.', 'U.S.', 'e.g.' or a single initial ('J. Smith') before the dot at `dot`."""
    j = dot
    while j > 0 and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
    word = text[j:dot].lower()
    return word in _ABBREV or (len(word) == 1 and word.isalpha() and text[dot - 1].isupper())


def _strip_span(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _marker_numbers(m: re.Match[str]) -> list[int]:
    body = m.group(1) or m.group(2) or ""
    out: list[int] = []
    for part in re.split(r"[,，、;；]", body):
        part = part.strip()
        if not part:
            continue
        if re.search(r"[-–]", part):
            lo, hi = (int(x) for x in re.split(r"\s*[-–]\s*", part))
            out.extend(range(lo, min(hi, lo + 20) + 1))
        else:
            out.append(int(part))
    return out


def parse_markers(text: str) -> list[tuple[int, int, list[int]]]:
    """Every citation marker in `text` as (start, end, [numbers]); `[1, 3]`, `[2-4]` and `【1】` included."""
    return [(m.start(), m.end(), _marker_numbers(m)) for m in MARKER_RE.finditer(text)]
