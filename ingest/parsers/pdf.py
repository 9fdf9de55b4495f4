"""PDF -> ParsedDocument with PyMuPDF: page by page, layout-aware, tables as markdown, OCR fallback.

Per page: extract positioned lines (`extract_page`) less superscript footnote marks, judge the text
layer (empty / garbled -> OCR), find ruled tables where the page's graphics form a grid (unruled ones
are found later, from rows of numbers that line up). Per window of up to 200 pages: the body font
size, the running headers/footers (lines repeated near the top or bottom of >= 40% of pages) and the
heading sizes. Then each page is laid out (`layout_page`: header removal, columns, paragraphs) and
assembled (`assemble_page`: text, blocks with offsets, tables). Windows bound memory on huge files.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.parsers.files import check_size, read_head, require_pdf, sha256_file
from ingest.parsers.headers import header_keys, split_header
from ingest.parsers.layout import (
    DocStats,
    Line,
    Paragraph,
    body_size,
    build_paragraphs,
    heading_candidate,
    heading_level,
    heading_sizes,
    reading_order,
)
from ingest.parsers.notemarks import split_note_marks, words_outside
from ingest.parsers.pdfguard import PageGuard, check_object_streams
from ingest.parsers.tables import FoundTable, grid_tables, rows_to_markdown, unruled_table
from ingest.parsers.textclean import clean_line, strip_bad_glyphs, text_quality
from rag.errors import (
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    ModelNotAvailable,
    ParseError,
)
from rag.records import Block, Page, ParsedDocument, Table
from rag.settings import IngestSettings

WINDOW = 200  # pages whose statistics (body size, running headers, heading sizes) are pooled
MAX_SIDE_PT = 200 * 72  # the PDF spec's largest page side (200 inches)
MAX_LINES_PER_PAGE = 20_000  # bound the work on pathological pages
_IMAGE_COVER = 0.3  # a near-textless page whose images cover this share of it is a scan
_BOLD_RE = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)


def _load_pymupdf() -> Any:
    if "pymupdf" not in sys.modules:
        # PyMuPDF 2.0 imports its optional ONNX layout analyser (pymupdf_layout) on import: ~2 s and
        # three ONNX sessions in every worker process. citeqa does its own layout: skip it.
        sys.modules.setdefault("pymupdf.layout", None)  # type: ignore[arg-type]
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)  # failures become typed errors, not stderr noise
    pymupdf.TOOLS.mupdf_display_warnings(False)
    return pymupdf


# Imported with the module, so a worker pool that preloads `ingest.parsers.pdf` starts warm.
pymupdf = _load_pymupdf()
_PAGE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, IndexError, pymupdf.mupdf.FzErrorBase)


@dataclass(slots=True)
class RawPage:
    """What one page yields before document-level statistics are known."""

    number: int
    width: float
    height: float
    lines: list[Line]
    tables: list[FoundTable] = field(default_factory=list)
    ocr: bool = False
    garbled: bool = False
    note: str = ""  # why the page came out worse than it could (e.g. OCR unavailable)
    find_tables: bool = True  # settings.tables: also turn aligned unruled rows into tables
    size_chars: Counter[float] = field(default_factory=Counter)


@dataclass(slots=True)
class LaidOutPage:
    raw: RawPage
    paragraphs: list[Paragraph]
    header: list[str]


# --- opening --------------------------------------------------------------------------------------


def open_pdf(path: Path, settings: IngestSettings, password: str | None = None) -> Any:
    """Open a PDF after the cheap checks; typed errors for every way it can fail."""
    check_size(path, settings)
    require_pdf(path, read_head(path))
    try:
        doc = pymupdf.open(str(path), filetype="pdf")
    except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
        raise CorruptDocument(str(path), f"damaged or truncated PDF ({_short(exc)})") from exc
    if doc.needs_pass:
        if password is None:
            doc.close()
            raise EncryptedDocument(str(path), "encrypted PDF; give its password (--password)")
        if not doc.authenticate(password):
            doc.close()
            raise EncryptedDocument(str(path), "encrypted PDF; the password given is wrong")
    try:
        check_object_streams(doc, str(path), settings)  # before the page tree is read out of them
    except DocumentTooLarge:
        doc.close()
        raise
    try:
        count = doc.page_count  # MuPDF counts the page tree here: a cut-off one raises
    except (RuntimeError, pymupdf.mupdf.FzErrorBase) as exc:
        doc.close()
        raise CorruptDocument(str(path), f"damaged or truncated PDF ({_short(exc)})") from exc
    if count == 0:
        doc.close()
        # A file cut off before its page tree is "repaired" by MuPDF into zero pages: say what happened.
        if not _ends_with_eof(path):
            raise CorruptDocument(
                str(path), "truncated PDF: the file ends before its %%EOF marker and no page survives"
            )
        raise EmptyDocument(str(path), "PDF has no pages")
    if count > settings.max_pages:
        doc.close()
        raise DocumentTooLarge(str(path), f"{count} pages, over the limit of {settings.max_pages} (ingest.max_pages)")
    return doc


def _ends_with_eof(path: Path, tail: int = 1024) -> bool:
    """Whether the last bytes hold %%EOF (viewers accept it anywhere in the final 1024 bytes)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - tail))
            return b"%%EOF" in fh.read(tail)
    except OSError:
        return False


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


# --- one page ---------------------------------------------------------------------------------------

_FLAGS = 2 | 64  # TEXT_PRESERVE_WHITESPACE | TEXT_MEDIABOX_CLIP; ligatures expanded, no images


def lines_from_dict(data: dict[str, Any]) -> tuple[list[Line], str, bool]:
    """Positioned lines from `page.get_text("dict")`, the raw text they were made from, and whether
    the page's main writing direction is the usual left-to-right.

    Coordinates are turned so that the page's main writing direction runs left to right (a landscape
    table printed sideways reads like any other page); lines at another angle are marked off-axis.
    """
    lines: list[Line] = []
    dirs: list[tuple[float, float]] = []
    raw_parts: list[str] = []
    for block in data.get("blocks", ()):
        if block.get("type", 0) != 0:
            continue
        for ln in block.get("lines", ()):
            spans = ln.get("spans", ())
            if not spans:
                continue
            raw = "".join(s.get("text", "") for s in spans)
            raw_parts.append(raw)
            text = clean_line(raw)
            if not text:
                continue
            main = max(spans, key=lambda s: len(s.get("text", "").strip()))
            bold = sum(
                len(s.get("text", "")) for s in spans if s.get("flags", 0) & 16 or _BOLD_RE.search(s.get("font", ""))
            )
            x0, y0, x1, y1 = ln["bbox"]
            lines.append(Line(x0, y0, x1, y1, text, round(float(main.get("size", 10.0)), 1), bold * 2 > len(raw)))
            cos, sin = ln.get("dir", (1.0, 0.0))
            dirs.append((round(cos, 1), round(sin, 1)))
            if len(lines) >= MAX_LINES_PER_PAGE:
                break
    upright = _align(lines, dirs)
    return lines, "\n".join(raw_parts), upright


def _align(lines: list[Line], dirs: list[tuple[float, float]]) -> bool:
    weight: Counter[tuple[float, float]] = Counter()
    for ln, d in zip(lines, dirs):
        weight[d] += len(ln.text)
    if not weight:
        return True
    main = weight.most_common(1)[0][0]
    cos, sin = main
    for ln, d in zip(lines, dirs):
        ln.axis = d == main
        if main != (1.0, 0.0):  # rotate the frame so the main direction becomes +x
            xs = [ln.x0, ln.x1]
            ys = [ln.y0, ln.y1]
            pts = [(x * cos + y * sin, -x * sin + y * cos) for x in xs for y in ys]
            ln.x0, ln.x1 = min(p[0] for p in pts), max(p[0] for p in pts)
            ln.y0, ln.y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    return main == (1.0, 0.0)


def _image_cover(page: Any) -> float:
    area = abs(page.rect) or 1.0
    covered = 0.0
    for info in page.get_image_info():
        x0, y0, x1, y1 = info["bbox"]
        covered += max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return min(covered / area, 1.0)


def _ocr_lines(page: Any) -> list[Line]:
    from ingest.ocr import ocr_page

    out = []
    for ol in ocr_page(page):
        text = clean_line(ol.text)
        if text:
            # A recognised box is a little taller than the glyphs; 0.8 of it approximates the font size.
            out.append(Line(ol.x0, ol.y0, ol.x1, ol.y1, text, round((ol.y1 - ol.y0) * 0.8, 1)))
    return out


def extract_page(doc: Any, index: int, settings: IngestSettings, path: str, guard: PageGuard | None = None) -> RawPage:
    """Extract one page: lines in page coordinates, OCR when the text layer is missing or garbled, tables.

    `guard` (one per document, so streams shared by pages are measured once) refuses a page whose
    content would inflate or draw past the limits before MuPDF interprets it.
    """
    page = doc.load_page(index)
    rect = page.rect
    if rect.width > MAX_SIDE_PT or rect.height > MAX_SIDE_PT:
        raise DocumentTooLarge(
            path, f"page {index + 1} is {rect.width / 72:.0f} x {rect.height / 72:.0f} inches, over 200 inches a side"
        )
    (guard or PageGuard(doc, path, settings)).check_page(page, index + 1)
    raw = RawPage(index + 1, rect.width, rect.height, [], find_tables=settings.tables)
    textpage = page.get_textpage(flags=_FLAGS)  # one extraction serves both lines and table words
    lines, raw_text, upright = lines_from_dict(page.get_text("dict", textpage=textpage))
    lines, marks = split_note_marks(lines)
    if not upright:  # text runs sideways: the band for running headers is along the other side
        raw.width, raw.height = rect.height, rect.width
    quality = text_quality(raw_text)
    needs_ocr = quality.garbled or (quality.chars < 50 and _image_cover(page) >= _IMAGE_COVER)
    if needs_ocr and settings.ocr:
        try:
            ocr_lines = _ocr_lines(page)
        except ModelNotAvailable as exc:
            raw.note = f"OCR unavailable: {exc}"
            ocr_lines = []
        if ocr_lines:
            raw.lines, raw.ocr = ocr_lines, True
    if not raw.ocr:
        if quality.garbled:
            raw.garbled = True
            for ln in lines:
                ln.text = clean_line(strip_bad_glyphs(ln.text))
            lines = [ln for ln in lines if ln.text]
        raw.lines = lines
        if settings.tables and raw.lines and upright:
            words = words_outside(lambda: page.get_text("words", textpage=textpage), marks)
            raw.tables = grid_tables(page.get_cdrawings(), words)
            if raw.tables:
                raw.lines = _place_tables(raw.lines, raw.tables)
    for ln in raw.lines:
        if ln.table < 0:
            raw.size_chars[ln.size] += len(ln.text)
    return raw


def _place_tables(lines: list[Line], tables: list[FoundTable]) -> list[Line]:
    """Replace the lines inside each table by one placeholder line carrying the table's index."""
    kept = []
    for ln in lines:
        xc, yc = (ln.x0 + ln.x1) / 2, (ln.y0 + ln.y1) / 2
        if not any(t.bbox[0] - 1 <= xc <= t.bbox[2] + 1 and t.bbox[1] - 1 <= yc <= t.bbox[3] + 1 for t in tables):
            kept.append(ln)
    for i, t in enumerate(tables):
        kept.append(Line(t.bbox[0], t.bbox[1], t.bbox[2], t.bbox[3], "", 0.0, table=i))
    return kept


# --- window statistics, layout, assembly -------------------------------------------------------------


def layout_page(raw: RawPage, stats: DocStats) -> LaidOutPage:
    """Remove running headers, order lines (columns), group them into paragraphs."""
    lines, header = split_header(raw.lines, raw.height, stats.header_keys)
    paragraphs = build_paragraphs(reading_order([ln for ln in lines if ln.axis]), stats.body_size)
    for par in paragraphs:
        if par.data and raw.find_tables:
            grid = unruled_table([ln.fragments() for ln in par.lines])
            if grid is not None:  # an unruled table that lines up: a markdown table like a ruled one
                par.table = len(raw.tables)
                raw.tables.append(FoundTable(par.bbox, grid))
    # Side labels and other text at an angle: kept, after the page's running text.
    paragraphs += [Paragraph([ln], ln.text) for ln in lines if not ln.axis]
    return LaidOutPage(raw, paragraphs, header)


def assemble_page(laid: LaidOutPage, stats: DocStats) -> Page:
    """Page.text from paragraphs ("\\n\\n" between them), Blocks with offsets into it, tables as markdown."""
    parts: list[str] = []
    blocks: list[Block] = []
    tables: list[Table] = []
    pos = 0
    for par in laid.paragraphs:
        if par.table >= 0:
            found = laid.raw.tables[par.table]
            text, header = rows_to_markdown(found.rows)
            tables.append(Table(text, header, found.bbox))
            kind, level = "table", 0
        else:
            text = par.text
            kind = "text"
            level = heading_level(par, stats) if heading_candidate(par, stats.body_size) else 0
        if parts:
            pos += 2
        blocks.append(Block(text, pos, pos + len(text), level, kind, par.bbox))
        parts.append(text)
        pos += len(text)
    return Page(
        number=laid.raw.number,
        text="\n\n".join(parts),
        blocks=blocks,
        tables=tables,
        ocr=laid.raw.ocr,
        header="\n".join(laid.header),
    )


def _windows(n: int) -> list[range]:
    count = max(1, math.ceil(n / WINDOW))
    size = math.ceil(n / count)
    return [range(start, min(n, start + size)) for start in range(0, n, size)]


_JUNK_TITLE = re.compile(
    r"^(microsoft (word|powerpoint|excel) - .*|untitled.*|.*\.(docx?|pdf|indd|rtf|xlsx?)|[\d\W_]+)$", re.IGNORECASE
)


def _metadata_title(meta: dict[str, Any] | None) -> str:
    title = " ".join(str((meta or {}).get("title") or "").split())
    if len(title) < 4 or _JUNK_TITLE.match(title) or sum(ch.isalpha() for ch in title) < 3:
        return ""
    return title


def parse_pdf(path: Path, settings: IngestSettings, password: str | None = None) -> ParsedDocument:
    """Parse a PDF into pages of cleaned text with blocks, tables and OCR where needed."""
    doc = open_pdf(path, settings, password)
    name = str(path)
    try:
        sha256 = sha256_file(path)  # hashed as opened, so the hash names the bytes that were parsed
        n = doc.page_count
        meta = doc.metadata
        repaired = bool(doc.is_repaired)
        sizes: Counter[float] = Counter()
        pages: list[Page] = []
        failed: list[int] = []
        garbled: list[int] = []
        notes: dict[int, str] = {}
        first_error = ""
        guard = PageGuard(doc, name, settings)
        for window in _windows(n):
            raws = []
            for i in window:
                try:
                    raws.append(extract_page(doc, i, settings, name, guard))
                except _PAGE_ERRORS as exc:
                    failed.append(i + 1)
                    first_error = first_error or f"page {i + 1}: {_short(exc)}"
                    raws.append(RawPage(i + 1, 0.0, 0.0, []))
            for raw in raws:
                sizes.update(raw.size_chars)
                if raw.garbled:
                    garbled.append(raw.number)
                if raw.note:
                    notes[raw.number] = raw.note
            stats = DocStats(body_size=body_size(sizes))
            stats.header_keys = header_keys((r.lines, r.height) for r in raws if r.lines and not r.ocr)
            laid = [layout_page(raw, stats) for raw in raws]
            stats.heading_sizes = heading_sizes((lp.paragraphs for lp in laid), stats.body_size)
            pages.extend(assemble_page(lp, stats) for lp in laid)
    except OSError as exc:
        raise ParseError(name, f"cannot read file ({exc.strerror or exc})") from exc
    finally:
        doc.close()
    if len(failed) == n:
        raise CorruptDocument(name, f"no page could be read ({first_error})")
    if not any(p.text.strip() for p in pages) and repaired:
        raise CorruptDocument(name, "damaged or truncated PDF: repaired, but no text could be read from it")
    if not any(p.text.strip() for p in pages):
        hint = "" if settings.ocr else " (OCR is off: ingest.ocr = false)"
        if garbled:
            what = f"no usable text: the text layer is garbled on {len(garbled)} of its {n} page(s), empty on the rest"
        else:
            what = f"no extractable text on its {n} page(s)"
        raise EmptyDocument(name, what + hint)
    title = _metadata_title(meta) or _first_heading(pages) or path.stem
    return ParsedDocument(
        source=name,
        sha256=sha256,
        title=title,
        pages=pages,
        metadata={
            "format": "pdf",
            "page_unit": "page",
            "ocr_pages": [p.number for p in pages if p.ocr],
            "garbled_pages": garbled,  # text layer garbled and not OCR'd (OCR off or found nothing)
            "failed_pages": failed,
            "page_notes": notes,
            "repaired": repaired,  # MuPDF rebuilt a broken cross-reference table
        },
    )


def _first_heading(pages: list[Page]) -> str:
    for page in pages[:3]:
        for block in page.blocks:
            if block.heading_level == 1 and block.kind == "text":
                return " ".join(block.text.split())[:200]
    return ""
