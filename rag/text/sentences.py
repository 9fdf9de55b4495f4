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
# The one list of words after which '.' does not end an English sentence (chunking uses it too).
_ABBREV = frozenset(
    "inc corp co ltd llc plc mr mrs ms dr prof jr sr st no vs etc e.g i.e u.s u.k a.m p.m jan feb mar apr jun jul aug sep sept oct nov dec fig approx dept est".split()
)
_ABBREV_MAX = max(map(len, _ABBREV))
CLOSERS = "”’\"'）)」』》】]"
# Where a sentence can end or a table row start; every other character is skipped by one regex search,
# so a text without sentence ends (a 5 MB one-line file) costs one C-level scan, not a Python loop.
_CANDIDATE = re.compile("[\n|.%s]" % re.escape(SENTENCE_END))
_NON_SPACE = re.compile(r"\S")


def is_table_row(text: str) -> bool:
    """A markdown table row (the parser writes tables as markdown)."""
    return text.lstrip().startswith("|")


def first_table_row(lines: list[str]) -> int | None:
    """Index of the first markdown table row among `lines` that holds cells (not a |---| separator)."""
    for i, line in enumerate(lines):
        if line.count("|") >= 2 and not set(line.strip()) <= set("|-: "):
            return i
    return None


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of `text` (Chinese and English terminators, newlines), whitespace-trimmed.

    Closing quotes and citation markers right after a terminator stay with the sentence before
    them, so "营收为5亿元。[1]" is one sentence that carries its marker. A line that starts and ends
    with '|' (a markdown table row) is one sentence whatever its cells say.
    Linear in len(text): each check looks at a bounded stretch or one cached per line / sentence start.
    """
    spans: list[tuple[int, int]] = []
    n = len(text)
    start = 0
    first_at, first = -1, -1  # first non-space character at or after `first_at` (n if none)
    row_line_end, row_is_table = -1, False  # the line last checked for being a table row
    i = 0
    while True:
        m = _CANDIDATE.search(text, i)
        if m is None:
            break
        i = m.start()
        ch = text[i]
        if first_at != start:
            nxt = _NON_SPACE.search(text, start)
            first_at, first = start, (nxt.start() if nxt else n)
        if ch == "|":
            if first >= i:  # only blanks since the sentence start: maybe a table row, one unit
                if i <= row_line_end:  # still on the line checked last (i only grows)
                    row_end = row_line_end
                else:
                    nl = text.find("\n", i)
                    row_end = n if nl < 0 else nl
                if row_end != row_line_end:  # the line's last non-space character decides, once per line
                    j = row_end
                    while text[j - 1].isspace():
                        j -= 1
                    row_line_end, row_is_table = row_end, text[j - 1] == "|"
                if row_is_table:
                    spans.append((start, row_end))
                    start = i = row_end + 1
                    continue
            i += 1
            continue
        end: int | None = None
        if ch == "\n":
            end = i
        elif ch != "." or (
            (i + 1 >= n or text[i + 1].isspace() or text[i + 1] in "[【")
            and not (i > 0 and text[i - 1].isdigit() and i + 1 < n and text[i + 1].isdigit())
            and not _is_abbreviation(text, i)
        ):
            end = _absorb_closers_and_markers(text, i + 1)
        if end is None:
            i += 1
            continue
        if first < end:
            spans.append((start, end))
        start = end if ch != "\n" else end + 1
        i = max(i + 1, start)
    if first_at != start:
        nxt = _NON_SPACE.search(text, start)
        first = nxt.start() if nxt else n
    if first < n:
        spans.append((start, n))
    return [strip_span(text, s, e) for s, e in spans]


def _absorb_closers_and_markers(text: str, j: int) -> int:
    """The end of a sentence whose terminator ends at `j`: closers and markers after it, '。[1]' / '." [2][3]'."""
    n = len(text)
    while True:
        while j < n and text[j] in CLOSERS:
            j += 1
        k = j
        while k < n and text[k] == " ":
            k += 1
        m = MARKER_RE.match(text, k)
        if m is None:
            return j
        j = m.end()


def _is_abbreviation(text: str, dot: int) -> bool:
    """'Inc.', 'U.S.', 'e.g.' or a single initial ('J. Smith') before the dot at `dot`."""
    j = dot
    while j > 0 and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
        if dot - j > _ABBREV_MAX:  # longer than every abbreviation (and than an initial)
            return False
    word = text[j:dot].lower()
    return word in _ABBREV or (len(word) == 1 and word.isalpha() and text[dot - 1].isupper())


def strip_span(text: str, s: int, e: int) -> tuple[int, int]:
    """text[s:e] without leading and trailing whitespace, as offsets."""
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
