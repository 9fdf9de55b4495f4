"""Files -> ParsedDocument. One module per format; `parse_file` picks one by extension and magic bytes.

`parse_file` is a module-level function of picklable arguments, so the ingest pipeline can run it
in worker processes. Every failure is a rag.errors.ParseError subclass whose one-line message names
the file. Format modules (and PyMuPDF, python-docx) are imported only when a file needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from ingest.parsers.files import ZIP_MAGIC, binary_kind, check_size, read_head, sniff, starts_as_pdf, zip_kind
from rag.errors import CorruptDocument, UnsupportedFormat
from rag.records import ParsedDocument
from rag.registry import Registry
from rag.settings import IngestSettings

ParseFunc = Callable[[Path, IngestSettings, "str | None"], ParsedDocument]


class FormatParser:
    """A `rag.protocols.Parser` for one format, bound to the ingest settings."""

    def __init__(self, module: str, function: str, settings: IngestSettings) -> None:
        self.module = module
        self.function = function
        self.settings = settings

    def parse(self, path: Path, *, password: str | None = None) -> ParsedDocument:
        func: ParseFunc = getattr(importlib.import_module(self.module), self.function)
        return func(Path(path), self.settings, password)


PARSERS: Registry[FormatParser] = Registry("parser")

_BUILTIN = {
    ".pdf": ("ingest.parsers.pdf", "parse_pdf"),
    ".txt": ("ingest.parsers.text", "parse_text"),
    ".md": ("ingest.parsers.text", "parse_text"),
    ".markdown": ("ingest.parsers.text", "parse_text"),
    ".html": ("ingest.parsers.html", "parse_html"),
    ".htm": ("ingest.parsers.html", "parse_html"),
    ".docx": ("ingest.parsers.docx", "parse_docx"),
    ".epub": ("ingest.parsers.epub", "parse_epub"),
}
# Extensions whose parser reads the bytes as text: binary content under them is refused up front.
TEXT_EXTENSIONS = frozenset({".txt", ".md", ".markdown", ".html", ".htm"})


def _factory(module: str, function: str) -> Callable[..., FormatParser]:
    def make(argument: str, *, settings: IngestSettings) -> FormatParser:
        return FormatParser(module, function, settings)

    return make


for _ext, (_module, _function) in _BUILTIN.items():
    PARSERS.register(_ext, _factory(_module, _function))


def supported_extensions() -> set[str]:
    """File extensions (lower case, with the dot) that `parse_file` handles."""
    return set(PARSERS.names())


def parse_file(path: Path, settings: IngestSettings, password: str | None = None) -> ParsedDocument:
    """Parse one file into a ParsedDocument (sha256 of its bytes, 1-based pages, cleaned text).

    The extension picks the parser, but magic bytes win over it: a file that starts with `%PDF-` is
    parsed as a PDF whatever its name (without a known extension, `%PDF-` anywhere in the first 1024
    bytes will do, as the PDF spec allows); a ZIP that holds a Word document or an EPUB is parsed as
    one whatever its name; other binary data under a text extension (.txt, .md, .html) gets a
    CorruptDocument line instead of being indexed as garbage. A file named .pdf that is not one gets
    a CorruptDocument error, not a crash.
    """
    path = Path(path)
    ext = path.suffix.lower()
    check_size(path, settings)
    head = read_head(path)
    if ext not in PARSERS and sniff(head) == "pdf":
        ext = ".pdf"
    elif ext != ".pdf" and starts_as_pdf(head):
        ext = ".pdf"
    elif head.startswith(ZIP_MAGIC) and (packaged := zip_kind(path)) is not None:
        ext = packaged
    elif ext in TEXT_EXTENSIONS and (what := binary_kind(head)) is not None:
        raise CorruptDocument(
            str(path), f"binary content in a {ext} file ({what}); give it the extension of its real type"
        )
    if ext not in PARSERS:
        raise UnsupportedFormat(
            str(path),
            f"unsupported file type {ext or '(no extension)'}; supported: {', '.join(sorted(supported_extensions()))}",
        )
    return PARSERS.create(ext, settings=settings).parse(path, password=password)


__all__ = ["PARSERS", "FormatParser", "parse_file", "supported_extensions"]
