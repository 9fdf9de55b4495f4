"""What a PDF page will make MuPDF interpret, measured before it does: content streams and form XObjects.

Two small PDFs can hold a worker for hours: a content stream that inflates to gigabytes (a Flate bomb),
and form XObjects that each draw the next one many times (ten levels of ten draws each: 10^10 draws
from a 3 KB file; MuPDF has no limit on either). Before a page is extracted, `PageGuard` inflates each
of its content streams once, block by block and never past the limit (ingest.max_inflated_mb), counts
the `Do` operators in it, and adds up what the page draws, nested forms times the times they are drawn.
Streams and forms are measured once per document, so the check costs one extra inflate of the page
content, not a second interpretation. A page over a limit fails the file with one line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ingest.parsers.inflate import MB, InflateBudget, inflate_blocks
from rag.errors import DocumentTooLarge
from rag.settings import IngestSettings

# A form draw costs ~25-90 µs of extraction: 100,000 draws are 3-9 s. A scatter plot whose markers are
# forms (matplotlib's) draws one per point, so the limit is far above what a real page needs.
MAX_FORM_DRAWS = 100_000
MAX_FORM_DEPTH = 64  # forms inside forms; real documents use a few levels
_NAME = rb"[^\s/\[\]()<>{}%]{1,127}"
_DO = re.compile(rb"/(" + _NAME + rb")\s*Do(?![^\s/\[\]()<>{}%])")
_REF = re.compile(r"/([^\s/\[\]()<>{}%]{1,127})\s+(\d+)\s+\d+\s+R")
_XREF = re.compile(r"(\d+)\s+\d+\s+R")
# The streams a font brings along, which MuPDF inflates in full when the font is first used.
_FONT_STREAMS = (
    "ToUnicode",
    "Encoding",
    "FontDescriptor/FontFile",
    "FontDescriptor/FontFile2",
    "FontDescriptor/FontFile3",
)
_CARRY = 256  # a name (at most 127 bytes) and its `Do` that a block boundary cut


def _mupdf_errors() -> tuple[type[BaseException], ...]:
    import pymupdf  # already loaded by ingest.parsers.pdf, which skips its layout module

    return (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase)


def _decoded(doc: Any, xref: int, filters: tuple[str, str]) -> Iterable[bytes]:
    """A stream's decoded bytes: Flate a block at a time (the caller charges each before the next).

    A stream MuPDF cannot read gives nothing here: its own reading fails the same way, page by page.
    """
    kind, value = filters
    try:
        if kind == "null":
            return [doc.xref_stream_raw(xref) or b""]
        if value.strip("[] ").split() in (["/FlateDecode"], ["/Fl"]):
            return inflate_blocks(doc.xref_stream_raw(xref) or b"")
        # Other filters (LZW, ASCII85 before Flate...) are rare in these streams: MuPDF decodes them.
        return [doc.xref_stream(xref) or b""]
    except _mupdf_errors():
        return []


class PageGuard:
    """Checks pages of one open document; caches what it learnt about each stream and form."""

    def __init__(self, doc: Any, path: str, settings: IngestSettings) -> None:
        self.doc = doc
        self.budget = InflateBudget(path, settings)  # every distinct stream of the document, once
        self.per_page = settings.max_inflated_mb * MB  # what one page interprets, repeats counted
        self._streams: dict[int, tuple[int, Counter[str]]] = {}  # xref -> (inflated size, Do count by name)
        self._forms: dict[int, tuple[int, int]] = {}  # form xref -> (bytes interpreted, draws), nested included
        self._maps: dict[tuple[int, str], dict[str, int] | None] = {}  # (owner, kind) -> resource name -> xref
        self._fonts: set[int] = set()  # font dictionaries whose streams are measured

    def check_page(self, page: Any, number: int) -> None:
        """Refuse the file if page `number` (1-based) would interpret or draw more than the limits allow.

        Objects MuPDF cannot read end the check of the page (its extraction then fails or copes alone).
        """
        work = draws = 0
        try:
            names = self._page_map(page.xref)
            self._measure_fonts(self._page_map(page.xref, "Font"), number)
            for xref in page.get_contents():
                size, dos = self._stream(xref, number)
                w, d = self._cost(size, dos, names, [], number)
                work, draws = work + w, draws + d
        except _mupdf_errors():
            pass
        if draws > MAX_FORM_DRAWS:
            raise DocumentTooLarge(
                self.budget.path,
                f"page {number} draws form XObjects {_count(draws)} times (forms nested in forms), "
                f"over the limit of {MAX_FORM_DRAWS:,} a page",
            )
        if work > self.per_page:
            raise self.budget.too_large(
                f"page {number} interprets {_count(work)} bytes of content (form XObjects drawn again and again)"
            )

    # --- streams -----------------------------------------------------------------------------------

    def _stream(
        self, xref: int, number: int, what: str = "content stream", scan: bool = True
    ) -> tuple[int, Counter[str]]:
        """A stream's inflated size and (`scan`: content) its `Do` operators, inflated once, never past the budget."""
        known = self._streams.get(xref)
        if known is not None:
            return known
        filters = self.doc.xref_get_key(xref, "Filter")
        what = f"page {number}: {what} (object {xref})"
        dos: Counter[str] = Counter()
        size = 0
        carry = b""
        for block in _decoded(self.doc, xref, filters):
            size += len(block)
            self.budget.charge(len(block), what)
            buf = carry + block
            cut = buf.rfind(b"/", max(0, len(buf) - _CARRY))  # keep a name cut off at the end for the next block
            cut = cut if cut >= 0 else len(buf)
            if scan and b"Do" in buf:  # most blocks draw nothing: skip the regex
                dos.update(m.group(1).decode("latin-1") for m in _DO.finditer(buf, 0, cut))
            carry = buf[cut:]
        if scan:
            dos.update(m.group(1).decode("latin-1") for m in _DO.finditer(carry))
        self._streams[xref] = (size, dos)
        return size, dos

    # --- forms -------------------------------------------------------------------------------------

    def _cost(
        self, size: int, dos: Counter[str], names: dict[str, int], stack: list[int], number: int
    ) -> tuple[int, int]:
        """(bytes interpreted, forms drawn) for a stream of `size` bytes with these `Do` operators."""
        work, draws = size, 0
        for name, count in dos.items():
            child = names.get(name)
            if child is None:
                continue  # an image, or a name the resources lack (MuPDF skips it)
            draws += count
            if child in stack:
                continue  # a form that draws itself: MuPDF stops the cycle
            w, d = self._form(child, names, stack, number)
            work, draws = work + count * w, draws + count * d
        return work, draws

    def _form(self, xref: int, inherited: dict[str, int], stack: list[int], number: int) -> tuple[int, int]:
        known = self._forms.get(xref)
        if known is not None:
            return known
        if self.doc.xref_get_key(xref, "Subtype")[1] != "/Form":
            self._forms[xref] = (0, 0)
            return 0, 0
        if len(stack) >= MAX_FORM_DEPTH:
            raise DocumentTooLarge(
                self.budget.path, f"page {number} nests form XObjects more than {MAX_FORM_DEPTH} deep"
            )
        size, dos = self._stream(xref, number)
        self._measure_fonts(self._map(xref, "Font") or {}, number)
        names = self._map(xref) or inherited  # a form without resources uses its page's
        stack.append(xref)
        result = self._cost(size, dos, names, stack, number)
        stack.pop()
        self._forms[xref] = result
        return result

    # --- resources ---------------------------------------------------------------------------------

    def _measure_fonts(self, fonts: dict[str, int], number: int) -> None:
        """Inflate (once, within the budget) the font programs and CMaps of fonts not seen before."""
        for font in fonts.values():
            if font in self._fonts:
                continue
            self._fonts.add(font)
            kind, value = self.doc.xref_get_key(font, "DescendantFonts")
            if kind == "xref":
                value = self.doc.xref_object(int(value.split()[0]))
            for owner in [font, *(int(x) for x in _XREF.findall(value if kind in ("array", "xref") else ""))]:
                for key in _FONT_STREAMS:
                    kind, ref = self.doc.xref_get_key(owner, key)
                    if kind == "xref" and self.doc.xref_is_stream(xref := int(ref.split()[0])):
                        self._stream(xref, number, f"font stream {key.rsplit('/', 1)[-1]}", scan=False)

    def _map(self, owner: int, kind: str = "XObject") -> dict[str, int] | None:
        """The XObject (or Font) names of an object's own /Resources, or None when it has none."""
        if (owner, kind) in self._maps:
            return self._maps[(owner, kind)]
        found, value = self.doc.xref_get_key(owner, f"Resources/{kind}")
        if found == "xref":
            value = self.doc.xref_object(int(value.split()[0]))
        result = {m.group(1): int(m.group(2)) for m in _REF.finditer(value)} if found in ("dict", "xref") else None
        self._maps[(owner, kind)] = result
        return result

    def _page_map(self, xref: int, kind: str = "XObject") -> dict[str, int]:
        """A page's XObject (or Font) names, inherited from the page tree when the page has none of its own."""
        for _ in range(64):
            found = self._map(xref, kind)
            if found is not None:
                return found
            kind, value = self.doc.xref_get_key(xref, "Parent")
            if kind != "xref":
                break
            xref = int(value.split()[0])
        return {}


def check_object_streams(doc: Any, path: str, settings: IngestSettings) -> None:
    """Refuse a PDF whose object streams (objects packed in a compressed stream, read whole the first
    time one of their objects is needed, as the page tree is) inflate past the limit, before any is read.

    The cross-reference entries say which object stream holds each object; reading them loads nothing.
    """
    import pymupdf

    holders: set[int] = set()
    try:
        pdf = pymupdf._as_pdf_document(doc)
        for xref in range(1, pymupdf.mupdf.pdf_xref_len(pdf)):
            entry = pymupdf.mupdf.ll_pdf_get_xref_entry_no_null(pdf.m_internal, xref)
            if entry.type in ("o", ord("o")):  # a compressed object; `ofs` is its object stream's number
                holders.add(entry.ofs)
        filters = {xref: doc.xref_get_key(xref, "Filter") for xref in holders}
    except _mupdf_errors():
        return  # a cross-reference table MuPDF cannot walk: opening the pages fails with its own error
    budget = InflateBudget(path, settings)
    for xref in sorted(holders):
        for block in _decoded(doc, xref, filters[xref]):
            budget.charge(len(block), f"object stream {xref}")


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"{n:.1e}"
