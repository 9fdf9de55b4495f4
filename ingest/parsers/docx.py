""".docx -> ParsedDocument with python-docx.

Pages: explicit page breaks and the page breaks Word recorded when it last laid the document out
(`w:lastRenderedPageBreak`) are the pages, so citations match what the author saw; a document
without any is split into Heading-1 sections (long ones continue at paragraph boundaries).
"Heading N" / "Title" styles become headings; tables become markdown.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

from ingest.parsers.files import check_size, read_head, sha256_file, sniff
from ingest.parsers.inflate import InflateBudget, check_zip, verify_members
from ingest.parsers.sections import Item, build_pages, check_pages, first_heading
from ingest.parsers.textclean import clean_line
from rag.errors import (
    CorruptDocument,
    EncryptedDocument,
)
from rag.lang import join_lines
from rag.records import ParsedDocument
from rag.settings import IngestSettings

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_BREAK = object()


def _heading_level(style_name: str) -> int:
    name = style_name.strip().lower()
    if name == "title":
        return 1
    if name.startswith("heading "):
        digits = name.removeprefix("heading ").strip()
        if digits.isdigit():
            return int(digits)
    return 0


def _paragraph_segments(p_element: Any) -> list[object]:
    """Text runs and page breaks of one <w:p>, in document order."""
    out: list[object] = []
    buf: list[str] = []
    ppr = p_element.find(f"{_W}pPr")
    if ppr is not None:
        before = ppr.find(f"{_W}pageBreakBefore")
        if before is not None and before.get(f"{_W}val", "true") not in ("0", "false"):
            out.append(_BREAK)
    for el in p_element.iter():
        tag = el.tag
        if tag == f"{_W}t":
            buf.append(el.text or "")
        elif tag == f"{_W}tab":
            buf.append(" ")
        elif tag == f"{_W}br":
            if el.get(f"{_W}type") == "page":
                out.append("".join(buf))
                buf.clear()
                out.append(_BREAK)
            else:
                buf.append("\n")
        elif tag == f"{_W}lastRenderedPageBreak":
            out.append("".join(buf))
            buf.clear()
            out.append(_BREAK)
    out.append("".join(buf))
    return out


def _clean_multiline(text: str) -> str:
    joined = ""
    for line in text.split("\n"):
        joined = join_lines(joined, clean_line(line))
    return joined


def _table_rows(table: Any) -> list[list[str]]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell repeats: keep its text once
                cells.append("")
                continue
            seen.add(id(cell._tc))
            cells.append(_clean_multiline(cell.text))
        rows.append(cells)
    return [r for r in rows if any(r)]


def docx_items(document: Any) -> list[Item]:
    from docx.table import Table as DocxTable

    items: list[Item] = []
    for block in document.iter_inner_content():
        if isinstance(block, DocxTable):
            rows = _table_rows(block)
            if rows:
                items.append(Item("table", rows=rows))
            continue
        level = _heading_level(block.style.name if block.style is not None else "")
        for seg in _paragraph_segments(block._p):
            if seg is _BREAK:
                items.append(Item("break"))
                continue
            text = _clean_multiline(str(seg))
            if text:
                items.append(Item("heading", text, level) if level else Item("text", text))
    return items


def parse_docx(path: Path, settings: IngestSettings, password: str | None = None) -> ParsedDocument:
    """Parse a Word .docx file into pages (explicit/rendered page breaks) or Heading-1 sections."""
    check_size(path, settings)
    head = read_head(path)
    if head.startswith(b"\xd0\xcf\x11\xe0"):  # OLE container: a password-protected .docx or an old .doc
        raise EncryptedDocument(
            str(path), "encrypted (password-protected) Word file or legacy .doc; save it as .docx without a password"
        )
    if sniff(head) != "zip":
        raise CorruptDocument(str(path), "not a .docx (not a ZIP package)")
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        # python-docx reads every part into memory with ZipFile.read: the declared sizes are checked,
        # then every part is inflated once in blocks, so a header that lies fails before python-docx.
        with zipfile.ZipFile(path) as zf:
            budget = InflateBudget(path, settings)
            check_zip(zf, budget)
            verify_members(zf, budget)
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, zlib.error, EOFError, PackageNotFoundError, KeyError, ValueError, SyntaxError) as exc:
        raise CorruptDocument(str(path), f"damaged .docx ({' '.join(str(exc).split())[:160]})") from exc
    items = docx_items(document)
    pages = build_pages(items, split_level=1)
    check_pages(str(path), pages, settings.max_pages, empty="no text in document")
    title = clean_line(document.core_properties.title or "")
    return ParsedDocument(
        source=str(path),
        sha256=sha256_file(path),
        title=title or first_heading(items) or path.stem,
        pages=pages,
        metadata={"format": "docx", "page_unit": "page" if any(i.kind == "break" for i in items) else "section"},
    )
