"""Evidence units: the numbered sentences, table rows and list items an answer may cite.

The prompt shows the sentences of the retrieved chunks that rag.evidence chose for the question,
each as a unit numbered 1..N in rank order (the top hit's units first, document order inside a
hit). The model cites unit numbers; a citation quotes its unit exactly as it stands in the page
text, so `page_text[char_start:char_end] == quote` holds by construction (a unit not found on its
page keeps its number but is never cited). Headings, table header
rows and bare numbers ("4.", "38") are shown for context but get no number: a quote must carry a
claim. A unit's `context` — the unit with one sentence either side, a table row with its header
row — is what its support is judged on (rag.support).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rag.errors import CiteqaError
from rag.evidence import Window
from rag.records import EvidenceUnit, Hit
from rag.text.features import features
from rag.text.sentences import is_table_row

PageText = Callable[[str, int], str]  # (doc_id, 1-based page) -> page text

CONTEXT_SENTENCES = 2  # neighbours either side that a unit's support may draw on (a paragraph names its subject once)
SHORT_LABEL_GRAMS = 3  # fewer content words, no figure, short: a label even with a full stop
HEADING_CHARS = 40  # an unpunctuated line this short, without a figure, is a heading
_SECTION = re.compile(r"^\s*(?:第?[\d.]+[章节条]?|[IVX]+\.)\s*")  # "4.2 ", "第一", "IV. " before a title
_ENDS = "。！？!?；;.:：)）”\"'"
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)、]\s+|[-*•·]\s+|[（(]\d{1,2}[)）])")
_BARE = re.compile(r"^[\W\d_]*$")  # digits and punctuation only: "4.", "38", "(2)"


def unit_kind(text: str, is_header_row: bool = False) -> str:
    """ "row", "header", "item", "heading" or "sentence"."""
    stripped = text.strip()
    if is_table_row(stripped):
        return "header" if is_header_row or set(stripped) <= set("|-: ") else "row"
    if _BARE.match(stripped) or stripped.startswith("#"):
        return "heading"
    f = features(stripped)
    words = len(f.grams - f.numbers)
    if words < 2:  # "Item 2.", "Results": a label, nothing to quote
        return "heading"
    if words < SHORT_LABEL_GRAMS and len(stripped) <= HEADING_CHARS and not re.search(r"\d", stripped):
        return "heading"  # "Financial results.": a label with a full stop
    # a short line without a sentence end and without a figure: a title ("第一节 公司简介"); a short
    # line with a figure ("Net income $ 4,756") is a statement row that lost its table
    if (
        stripped[-1:] not in _ENDS
        and len(stripped) <= HEADING_CHARS
        and not re.search(r"\d", _SECTION.sub("", stripped))
    ):
        return "heading"
    return "item" if _LIST_ITEM.match(stripped) else "sentence"


class PageLocator:
    """Finds a chunk's text on the page(s) it comes from (cached per page)."""

    def __init__(self, page_text: PageText | None) -> None:
        self._page_text = page_text
        self._pages: dict[tuple[str, int], str] = {}

    def page(self, doc_id: str, number: int) -> str:
        key = (doc_id, number)
        if key not in self._pages:
            text = ""
            if self._page_text is not None:
                try:
                    text = self._page_text(doc_id, number) or ""
                except (CiteqaError, LookupError):  # document removed meanwhile / no such page
                    text = ""
            self._pages[key] = text
        return self._pages[key]

    def find(self, hit: Hit, text: str, near: int) -> tuple[int, int]:
        """(page, offset) of `text` on the chunk's pages, the occurrence nearest `near` on the first
        page; (page_start, -1) when it is on none."""
        chunk = hit.chunk
        for number in range(chunk.page_start, max(chunk.page_start, chunk.page_end) + 1):
            page = self.page(chunk.doc_id, number)
            if not page:
                continue
            pos = page.find(text, max(0, near - 8)) if number == chunk.page_start else -1
            if pos < 0:
                pos = page.find(text)
            if pos >= 0:
                return number, pos
        return chunk.page_start, -1


def build_units(windows: Sequence[Window], page_text: PageText | None) -> list[EvidenceUnit]:
    """The units of the chosen sentences of `windows`, numbered in rank order."""
    locator = PageLocator(page_text)
    units: list[EvidenceUnit] = []
    n = 0
    for w in windows:
        chunk = w.hit.chunk
        rows = w.sentences
        headers = {r.header for r in rows if r.header is not None}
        for i in sorted(w.chosen):
            a, b = rows[i].start, rows[i].end
            text = chunk.text[a:b]
            kind = unit_kind(text, i in headers)
            near = chunk.char_start + a if chunk.char_start >= 0 else 0
            page, start = locator.find(w.hit, text, near)
            header = rows[i].header
            if kind == "row":  # a cell is read with its row and column headers, never a neighbour row
                context = [chunk.text[rows[header].start : rows[header].end], text] if header is not None else [text]
            else:
                lo, hi = max(0, i - CONTEXT_SENTENCES), min(len(rows), i + CONTEXT_SENTENCES + 1)
                context = [chunk.text[rows[j].start : rows[j].end] for j in range(lo, hi)]
            numbered_ = kind not in ("heading", "header")  # shown with a number even if not placed: never cited then
            if numbered_:
                n += 1
            units.append(
                EvidenceUnit(
                    n=n if numbered_ else 0,
                    id=f"{chunk.id}:{a}",
                    doc=chunk.doc or chunk.doc_id,
                    doc_id=chunk.doc_id,
                    page=page,
                    char_start=start,
                    char_end=start + len(text) if start >= 0 else -1,
                    text=text,
                    kind=kind,
                    chunk_id=chunk.id,
                    score=w.hit.score,
                    context="\n".join(context),
                )
            )
    return units


def numbered(units: Sequence[EvidenceUnit]) -> dict[int, EvidenceUnit]:
    """The citable units (numbered and found on their page) by their prompt number."""
    return {u.n: u for u in units if u.citable}
