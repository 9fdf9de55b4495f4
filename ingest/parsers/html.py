""".html / .htm -> ParsedDocument with the standard library's HTML parser.

Script, style and other non-content elements are dropped; h1-h6 become headings; tables become
markdown. Pages are sections: each h1/h2 starts one, long sections continue at paragraph
boundaries (ingest/parsers/sections.py). `html_items` is shared with the EPUB parser.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from ingest.parsers.files import check_size, decode_text, sha256_bytes
from ingest.parsers.sections import Item, build_pages, check_pages, first_heading
from ingest.parsers.textclean import clean_line
from rag.errors import ParseError
from rag.records import ParsedDocument
from rag.settings import IngestSettings

_SKIP = {"script", "style", "noscript", "template", "svg", "math", "head", "iframe", "object", "canvas", "select"}
_BLOCK = {
    "p", "div", "section", "article", "main", "aside", "header", "footer", "nav", "li", "ul", "ol", "dl", "dt",
    "dd", "blockquote", "pre", "figure", "figcaption", "hr", "br", "address", "details", "summary", "form",
    "fieldset", "legend", "caption", "body", "html",
}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "track", "wbr"}
_TEXT_AFTER_TAG = re.compile(r">\s*[^\s<]")  # a '>' inside an attribute only makes it parse as usual
_META_CHARSET_RE = re.compile(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_\-]+)", re.IGNORECASE)


class _ItemBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[Item] = []
        self.title = ""
        self._buf: list[str] = []
        self._skip = 0
        self._in_title = False
        self._heading = 0
        self._pre = 0
        self._tables: list[list[list[str]]] = []  # a stack: nested tables flatten into the outer cell
        self._cell: list[str] | None = None

    # text -------------------------------------------------------------------------------------
    def _flush(self) -> None:
        raw = "".join(self._buf)
        self._buf.clear()
        text = raw.strip("\n") if self._pre else clean_line(raw)
        if not text.strip():
            return
        if self._heading:
            self.items.append(Item("heading", clean_line(text), self._heading))
        else:
            self.items.append(Item("text", text))

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._skip:
            return
        if self._cell is not None:
            self._cell.append(data)
            return
        self._buf.append(data if self._pre else re.sub(r"\s+", " ", data))

    # tags -------------------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
            return
        if tag in _SKIP:
            if tag not in _VOID:
                self._skip += 1
            return
        if self._skip:
            return
        if tag == "table":
            if not self._tables:
                self._flush()
            self._tables.append([])
            return
        if self._tables:
            if tag == "tr":
                self._tables[-1].append([])
            elif tag in ("td", "th"):
                if not self._tables[-1]:
                    self._tables[-1].append([])
                self._cell = []
            elif tag == "br" and self._cell is not None:
                self._cell.append(" ")
            return
        if tag in _HEADINGS:
            self._flush()
            self._heading = _HEADINGS[tag]
        elif tag in _BLOCK:
            self._flush()
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            return
        if tag in _SKIP:
            if tag not in _VOID and self._skip:
                self._skip -= 1
            return
        if self._skip:
            return
        if self._tables:
            if tag in ("td", "th") and self._cell is not None:
                self._tables[-1][-1].append(clean_line(" ".join(self._cell)))
                self._cell = None
            elif tag == "table":
                rows = [r for r in self._tables.pop() if any(r)]
                if self._tables:  # nested: its text goes into the enclosing cell
                    text = " ".join(" ".join(r) for r in rows)
                    if self._cell is None:
                        self._cell = []
                    self._cell.append(text)
                elif rows:
                    width = max(len(r) for r in rows)
                    if width >= 2:
                        self.items.append(Item("table", rows=[r + [""] * (width - len(r)) for r in rows]))
                    else:
                        self.items.extend(Item("text", r[0]) for r in rows if r and r[0])
            return
        if tag in _HEADINGS:
            self._flush()
            self._heading = 0
        elif tag in _BLOCK:
            self._flush()
            if tag == "pre" and self._pre:
                self._pre -= 1

    def close(self) -> None:
        super().close()
        while self._tables:
            self.handle_endtag("table")
        self._flush()


def html_items(text: str) -> tuple[list[Item], str]:
    """Items (paragraphs, headings, tables) and the <title> of an HTML document."""
    if not text.partition("<")[0].strip() and _TEXT_AFTER_TAG.search(text) is None:
        # Nothing but tags: the standard library's parser would take ~0.6 s a MB to find no text (an
        # EPUB chapter of 60 MB of empty <div>s: a minute); this scan takes a hundredth of that.
        return [], ""
    builder = _ItemBuilder()
    builder.feed(text)
    builder.close()
    return builder.items, clean_line(builder.title)


def decode_html(path: Path, data: bytes) -> str:
    declared = _META_CHARSET_RE.search(data[:4096])
    if declared:
        try:
            return data.decode(declared.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return decode_text(path, data)


def parse_html(path: Path, settings: IngestSettings, password: str | None = None) -> ParsedDocument:
    """Parse an HTML file into section pages."""
    check_size(path, settings)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(str(path), f"cannot read file ({exc.strerror or exc})") from exc
    items, title = html_items(decode_html(path, data))
    pages = build_pages(items)
    check_pages(str(path), pages, settings.max_pages, empty="no text in HTML", unit="sections")
    return ParsedDocument(
        source=str(path),
        sha256=sha256_bytes(data),
        title=title or first_heading(items) or path.stem,
        pages=pages,
        metadata={"format": "html", "page_unit": "section"},
    )
