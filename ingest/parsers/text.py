""".txt and .md -> ParsedDocument.

Pages: form feeds (\\f) when the file has them (printed pages); otherwise markdown sections start at
`#`/`##` headings, and any section or plain-text run longer than ~3,000 characters continues on a
new page at a paragraph boundary (see ingest/parsers/sections.py). Lines of a paragraph are joined
CJK-aware (no space between Chinese characters, hyphenated English words rejoined).
"""

from __future__ import annotations

import re
from pathlib import Path

from ingest.parsers.files import check_size, decode_text, sha256_bytes
from ingest.parsers.sections import (
    Item,
    build_page,
    build_pages,
    check_pages,
    first_heading,
)
from ingest.parsers.textclean import clean_line
from rag.errors import ParseError
from rag.lang import join_lines
from rag.records import ParsedDocument
from rag.settings import IngestSettings

_ATX_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT_RE = re.compile(r"^(=+|-+)\s*$")
_LIST_RE = re.compile(r"^\s*([-*+]|\d+[.)])\s+")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_TABLE_SEP_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _flush(buf: list[str], items: list[Item]) -> None:
    if buf:
        text = ""
        for line in buf:
            text = join_lines(text, line)
        items.append(Item("text", text))
        buf.clear()


def text_items(text: str) -> list[Item]:
    """Plain text: paragraphs separated by blank lines."""
    items: list[Item] = []
    buf: list[str] = []
    for raw in text.splitlines():
        line = clean_line(raw)
        if not line:
            _flush(buf, items)
        else:
            buf.append(line)
    _flush(buf, items)
    return items


def _table_rows(lines: list[str]) -> list[list[str]]:
    rows = []
    for line in lines:
        if _TABLE_SEP_RE.match(line):
            continue
        cells = line.strip().strip("|").split("|")
        rows.append([clean_line(c) for c in cells])
    return rows


def markdown_items(text: str) -> list[Item]:
    """Markdown: ATX/setext headings, pipe tables, fenced code kept verbatim, list items as paragraphs."""
    items: list[Item] = []
    buf: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        if _FENCE_RE.match(raw):
            _flush(buf, items)
            fence = _FENCE_RE.match(raw).group(1)  # type: ignore[union-attr]
            code = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                code.append(lines[i].rstrip())
                i += 1
            if any(c.strip() for c in code):
                items.append(Item("text", "\n".join(code).strip("\n")))
            i += 1
            continue
        heading = _ATX_RE.match(raw)
        if heading:
            _flush(buf, items)
            items.append(Item("heading", clean_line(heading.group(2)), len(heading.group(1))))
            i += 1
            continue
        if raw.lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_SEP_RE.match(lines[i + 1]):
            _flush(buf, items)
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            items.append(Item("table", rows=_table_rows(block)))
            continue
        line = clean_line(raw)
        if not line:
            _flush(buf, items)
        elif len(buf) == 1 and _SETEXT_RE.match(raw.strip()):
            items.append(Item("heading", buf.pop(), 1 if raw.strip().startswith("=") else 2))
        elif _LIST_RE.match(raw):
            _flush(buf, items)
            buf.append(line)
        else:
            buf.append(line)
        i += 1
    _flush(buf, items)
    return items


def parse_text(path: Path, settings: IngestSettings, password: str | None = None) -> ParsedDocument:
    """Parse a .txt / .md file (the password is ignored: text files are not encrypted)."""
    check_size(path, settings)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(str(path), f"cannot read file ({exc.strerror or exc})") from exc
    text = decode_text(path, data)
    is_md = path.suffix.lower() in {".md", ".markdown"}
    to_items = markdown_items if is_md else text_items
    if "\f" in text:
        chunks = text.split("\f")
        if chunks and not chunks[-1].strip():
            chunks.pop()
        groups = [to_items(chunk) for chunk in chunks]
        pages = [build_page(i, group) for i, group in enumerate(groups, 1)]
        all_items = [item for group in groups for item in group]
        unit = "page"
    else:
        all_items = to_items(text)
        pages = build_pages(all_items)
        unit = "section"
    check_pages(str(path), pages, settings.max_pages, empty="no text in file")
    return ParsedDocument(
        source=str(path),
        sha256=sha256_bytes(data),
        title=(first_heading(all_items) if is_md else "") or path.stem,
        pages=pages,
        metadata={"format": "markdown" if is_md else "text", "page_unit": unit},
    )
