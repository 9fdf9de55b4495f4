"""Pages for flowing formats (text, markdown, HTML, DOCX, EPUB), which have no fixed pages of their own.

A parser turns its file into a flat list of `Item`s (paragraphs, headings, tables, explicit page
breaks). The rule that makes a citation's "page" meaningful:

1. explicit page breaks (form feeds in text, page breaks in DOCX) are the pages, as printed;
2. otherwise a heading of level <= `split_level` starts a new page (a section), and a section longer
   than `page_chars` continues on a new page at a paragraph boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.parsers.tables import rows_to_markdown
from rag.errors import DocumentTooLarge, EmptyDocument
from rag.records import Block, Page, Table
from rag.text.sentences import split_sentences

PAGE_CHARS = 3000  # about one printed page of English (~1.5 of Chinese)


@dataclass(slots=True)
class Item:
    kind: str  # "text" | "heading" | "table" | "break"
    text: str = ""
    level: int = 0  # heading level as written (1 = top); blocks cap it at 3
    rows: list[list[str]] = field(default_factory=list)


def split_long(text: str, limit: int) -> list[str]:
    """Split a paragraph longer than `limit` at sentence ends (else spaces, else anywhere).

    Sentence ends are rag.text's (the sentences chunks and citations use): a cut falls where a sentence
    of the window starts, after the first third of it.
    """
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max((s for s, _ in split_sentences(window)[1:] if s > limit // 3), default=0)
        if not cut:
            cut = window.rfind(" ") + 1 or limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return pieces


def paginate(items: Sequence[Item], *, split_level: int = 2, page_chars: int = PAGE_CHARS) -> list[list[Item]]:
    """Group items into pages by the rule in the module docstring."""
    if any(item.kind == "break" for item in items):
        pages: list[list[Item]] = [[]]
        for item in items:
            if item.kind == "break":
                if pages[-1]:  # consecutive breaks (explicit + rendered) make one boundary
                    pages.append([])
            else:
                pages[-1].append(item)
        if not pages[-1] and len(pages) > 1:
            pages.pop()
        return pages
    pages = [[]]
    size = 0
    for item in items:
        if item.kind == "text" and len(item.text) > page_chars:
            parts = [Item("text", piece) for piece in split_long(item.text, page_chars)]
        else:
            parts = [item]
        for part in parts:
            length = len(part.text) + sum(len(" | ".join(r)) for r in part.rows)
            starts_section = part.kind == "heading" and part.level <= split_level
            if pages[-1] and (starts_section or size + length > page_chars):
                pages.append([])
                size = 0
            pages[-1].append(part)
            size += length
    return pages


def build_page(number: int, items: Sequence[Item]) -> Page:
    """One Page: items joined by blank lines, a Block per item with offsets into the text."""
    parts: list[str] = []
    blocks: list[Block] = []
    tables: list[Table] = []
    pos = 0
    for item in items:
        if item.kind == "table":
            if not item.rows:
                continue
            text, header = rows_to_markdown(item.rows)
            tables.append(Table(text, header))
            kind, level = "table", 0
        else:
            text = item.text.strip()
            if not text:
                continue
            kind = "text"
            level = min(max(item.level, 1), 3) if item.kind == "heading" else 0
        if parts:
            pos += 2
        blocks.append(Block(text, pos, pos + len(text), level, kind))
        parts.append(text)
        pos += len(text)
    return Page(number=number, text="\n\n".join(parts), blocks=blocks, tables=tables)


def build_pages(items: Sequence[Item], *, split_level: int = 2, page_chars: int = PAGE_CHARS) -> list[Page]:
    return [
        build_page(i, group)
        for i, group in enumerate(paginate(items, split_level=split_level, page_chars=page_chars), 1)
    ]


def first_heading(items: Sequence[Item]) -> str:
    for item in items:
        if item.kind == "heading" and item.text.strip():
            return " ".join(item.text.split())[:200]
    return ""


def check_pages(source: str, pages: Sequence[Page], max_pages: int, *, empty: str, unit: str = "pages") -> None:
    """The checks every flowing format applies to its pages: some text, and no more than `max_pages`."""
    if not any(p.text for p in pages):
        raise EmptyDocument(source, empty)
    if len(pages) > max_pages:
        raise DocumentTooLarge(source, f"{len(pages)} {unit}, over the limit of {max_pages} (ingest.max_pages)")
