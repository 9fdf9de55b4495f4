""".epub -> ParsedDocument: one page per chapter (spine document), read from the package itself.

An EPUB is a ZIP of XHTML chapters listed, in reading order, by the package's spine. Each chapter
with text becomes one page (page N = the N-th chapter with text), parsed with the HTML parser's
items, so headings and tables come out as they do for .html. A chapter longer than ~4 printed pages
continues on the next page at a paragraph boundary, so a citation points somewhere findable.
"""

from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree

from ingest.parsers.files import check_size, decode_text, sha256_file
from ingest.parsers.html import html_items
from ingest.parsers.inflate import InflateBudget, check_zip, part_name, read_member
from ingest.parsers.sections import PAGE_CHARS, build_page, first_heading, paginate
from ingest.parsers.textclean import clean_line
from rag.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument
from rag.records import Page, ParsedDocument
from rag.settings import IngestSettings

_CHAPTER_CHARS = 4 * PAGE_CHARS
_HTML_TYPES = {"application/xhtml+xml", "text/html", "application/xml"}
_MAX_ENTRY_BYTES = 64 * 1024 * 1024  # one chapter's HTML; the whole file has ingest.max_inflated_mb


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _read(zf: zipfile.ZipFile, name: str, budget: InflateBudget) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError as exc:
        raise CorruptDocument(budget.path, f"damaged EPUB (missing {part_name(name)})") from exc
    if info.file_size > _MAX_ENTRY_BYTES:
        raise DocumentTooLarge(
            budget.path, f"EPUB entry {part_name(name)} is {info.file_size // 1024 // 1024} MB uncompressed, over 64 MB"
        )
    return read_member(zf, info, budget)


def _spine(zf: zipfile.ZipFile, budget: InflateBudget) -> tuple[list[str], str]:
    """Chapter file names in reading order, each once, and the package's title."""
    path = budget.path
    container = ElementTree.fromstring(_read(zf, "META-INF/container.xml", budget))
    rootfile = next((el.get("full-path") for el in container.iter() if _local(el.tag) == "rootfile"), None)
    if not rootfile:
        raise CorruptDocument(str(path), "damaged EPUB (no rootfile in META-INF/container.xml)")
    opf = ElementTree.fromstring(_read(zf, rootfile, budget))
    base = posixpath.dirname(rootfile)
    manifest: dict[str, tuple[str, str]] = {}
    spine: list[str] = []
    title = ""
    for el in opf.iter():
        name = _local(el.tag)
        if name == "item" and el.get("id") and el.get("href"):
            href = posixpath.normpath(posixpath.join(base, unquote(el.get("href", ""))))
            manifest[el.get("id", "")] = (href, el.get("media-type", ""))
        elif name == "itemref" and el.get("idref"):
            spine.append(el.get("idref", ""))
        elif name == "title" and not title and el.text:
            title = clean_line(el.text)
    chapters = [manifest[i][0] for i in spine if i in manifest and manifest[i][1] in _HTML_TYPES]
    # A spine that lists one chapter many times (300 x a 60 MB chapter: hours of parsing) reads it once.
    return list(dict.fromkeys(chapters)), title


def parse_epub(path: Path, settings: IngestSettings, password: str | None = None) -> ParsedDocument:
    """Parse an EPUB into chapter pages."""
    check_size(path, settings)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptDocument(str(path), f"damaged EPUB (not a readable ZIP: {exc})") from exc
    budget = InflateBudget(path, settings)
    with zf:
        check_zip(zf, budget)
        names = set(zf.namelist())
        if "META-INF/encryption.xml" in names:
            enc = _read(zf, "META-INF/encryption.xml", budget).decode("utf-8", errors="replace")
            if any(ext in enc for ext in (".xhtml", ".html", ".htm")):
                raise EncryptedDocument(str(path), "EPUB chapters are encrypted (DRM)")
        try:
            chapters, title = _spine(zf, budget)
        except ElementTree.ParseError as exc:
            raise CorruptDocument(str(path), f"damaged EPUB package ({exc})") from exc
        pages: list[Page] = []
        all_items = []
        for name in chapters:
            if name not in names:
                continue
            items, _ = html_items(decode_text(path, _read(zf, name, budget)))
            if not items:
                continue
            all_items.extend(items)
            for group in paginate(items, split_level=0, page_chars=_CHAPTER_CHARS):
                pages.append(build_page(len(pages) + 1, group))
                if len(pages) > settings.max_pages:
                    raise DocumentTooLarge(
                        str(path), f"over the limit of {settings.max_pages} pages (ingest.max_pages)"
                    )
    if not any(p.text for p in pages):
        raise EmptyDocument(str(path), "no text in any EPUB chapter")
    return ParsedDocument(
        source=str(path),
        sha256=sha256_file(path),
        title=title or first_heading(all_items) or path.stem,
        pages=pages,
        metadata={"format": "epub", "page_unit": "chapter", "chapters": len(chapters)},
    )
