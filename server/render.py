"""Render one document page as PNG with a cited quote highlighted (PyMuPDF).

PDF originals are rendered as they are. For other formats (or when the original file is gone) the
page's stored text is typeset onto a plain page, so every citation can still be shown. The quote is
searched whole first, then in fragments, because the parser joins lines (no space between CJK lines,
de-hyphenation) while the PDF's text layer keeps them apart.
"""

from __future__ import annotations

from pathlib import Path

import pymupdf

from rag.errors import DocumentNotFound, InvalidRequest
from rag.lang import is_cjk_char
from rag.text.sentences import split_sentences

MAX_PIXELS_WIDE = 2000
HIGHLIGHT_RGB = (1.0, 0.85, 0.0)


def render_page_png(
    source: Path | None,
    page_number: int,
    *,
    page_text: str | None = None,
    highlight: str | None = None,
    zoom: float = 1.5,
) -> tuple[bytes, int]:
    """PNG bytes of page `page_number` (1-based) and how many places of `highlight` were marked."""
    doc = _open_pdf(source)
    if doc is None:
        if page_text is None:
            raise DocumentNotFound(f"page {page_number}: neither the original file nor the page text is available")
        doc = _typeset(page_text)
        index = 0
    else:
        count = doc.page_count
        if not 1 <= page_number <= count:
            doc.close()
            raise InvalidRequest(f"page {page_number} is out of range: the document has {count} pages")
        index = page_number - 1
    try:
        page = doc[index]
        matches = 0
        if highlight and highlight.strip():
            quads = find_quote(page, highlight)
            if quads:
                annot = page.add_highlight_annot(quads)
                annot.set_colors(stroke=HIGHLIGHT_RGB)
                annot.update()
                matches = len(quads)
        zoom = min(zoom, MAX_PIXELS_WIDE / max(1.0, page.rect.width))
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), annots=True)
        return pix.tobytes("png"), matches
    finally:
        doc.close()


def _open_pdf(source: Path | None) -> pymupdf.Document | None:
    if source is None or not source.is_file():
        return None
    try:
        doc = pymupdf.open(str(source))
    except (pymupdf.FileDataError, RuntimeError, ValueError):
        return None
    if not doc.is_pdf or doc.needs_pass:
        doc.close()
        return None
    return doc


def _typeset(text: str) -> pymupdf.Document:
    """A one-page PDF holding `text` (shrinking the font until it fits)."""
    doc = pymupdf.open()
    font = "china-s" if any(is_cjk_char(ch) for ch in text[:2000]) else "helv"
    size = 11.0
    height = 842.0
    while True:
        page = doc.new_page(width=595, height=height)
        spare = page.insert_textbox(pymupdf.Rect(48, 48, 547, height - 48), text, fontname=font, fontsize=size)
        if spare >= 0:
            return doc
        doc.delete_page(0)
        if size > 7:
            size -= 1
        else:
            height *= 1.5  # very long pages grow instead of becoming unreadable


def find_quote(page: pymupdf.Page, quote: str) -> list[pymupdf.Quad]:
    """Quads covering `quote` on `page`: the whole quote if found, else its sentences or fragments."""
    quote = " ".join(quote.split())
    if not quote:
        return []
    found = page.search_for(quote, quads=True)
    if found:
        return list(found)
    quads: list[pymupdf.Quad] = []
    for piece in _fragments(quote):
        for quad in page.search_for(piece, quads=True):
            if not any(_same_place(quad, q) for q in quads):
                quads.append(quad)
    return _join_on_lines(quads)


def _join_on_lines(quads: list[pymupdf.Quad]) -> list[pymupdf.Quad]:
    """Fragments found side by side on one line become one quad: no unmarked gaps inside a quoted line."""
    joined: list[pymupdf.Rect] = []
    for rect in sorted((q.rect for q in quads), key=lambda r: (round(r.y0), r.x0)):
        last = joined[-1] if joined else None
        height = rect.height or 1.0
        same_line = last is not None and min(last.y1, rect.y1) - max(last.y0, rect.y0) > 0.5 * height
        if last is not None and same_line and rect.x0 - last.x1 < 1.5 * height:
            joined[-1] = last | rect
        else:
            joined.append(pymupdf.Rect(rect))
    return [r.quad for r in joined]


def _fragments(quote: str) -> list[str]:
    """Sentences, then fixed-size pieces (characters for CJK, words otherwise) of a quote."""
    pieces: list[str] = []
    for s, e in split_sentences(quote):  # the sentences citations quote (rag.text)
        sentence = quote[s:e]
        cjk = sum(1 for ch in sentence if is_cjk_char(ch)) > len(sentence) / 3
        if cjk:
            compact = sentence.replace(" ", "")
            step = 8
            pieces.extend(compact[i : i + step] for i in range(0, len(compact), step))
        else:
            words = sentence.split()
            step = 4
            pieces.extend(" ".join(words[i : i + step]) for i in range(0, len(words), step))
    return [p for p in pieces if len(p.strip()) >= 3]


def _same_place(a: pymupdf.Quad, b: pymupdf.Quad) -> bool:
    ra, rb = a.rect, b.rect
    inter = ra & rb
    return not inter.is_empty and inter.get_area() > 0.5 * min(ra.get_area(), rb.get_area())
