"""What every parser checks before it reads a file: size limits, emptiness, content type, hash, encoding."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rag.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, ParseError
from rag.settings import IngestSettings

PDF_MAGIC = b"%PDF-"
ZIP_MAGIC = b"PK\x03\x04"
_SNIFF_BYTES = 1024  # the PDF spec lets "%PDF-" appear anywhere in the first 1024 bytes


def check_size(path: Path, settings: IngestSettings) -> int:
    """Return the file size; refuse a missing, zero-byte or oversized file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ParseError(str(path), f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise EmptyDocument(str(path), "empty file (0 bytes)")
    if size > settings.max_file_mb * 1024 * 1024:
        raise DocumentTooLarge(
            str(path),
            f"file is {size / 1024 / 1024:.1f} MB, over the limit of {settings.max_file_mb} MB (ingest.max_file_mb)",
        )
    return size


def read_head(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise ParseError(str(path), f"cannot read file ({exc.strerror or exc})") from exc


def sniff(head: bytes) -> str | None:
    """The format the first bytes say the file is: 'pdf', 'zip' or None (text or unknown)."""
    if PDF_MAGIC in head[:_SNIFF_BYTES]:
        return "pdf"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    return None


def zip_kind(path: Path) -> str | None:
    """'.docx' or '.epub' when a ZIP file is one (by the parts it holds), else None.

    Only the ZIP's directory is read. An EPUB says so in its `mimetype` part or has its
    META-INF/container.xml; a Word file has word/document.xml.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "META-INF/container.xml" in names:
                return ".epub"
            if "word/document.xml" in names and "[Content_Types].xml" in names:
                return ".docx"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    return None


def starts_as_pdf(head: bytes) -> bool:
    """The PDF header at the very start (after whitespace): strict enough to overrule a file's extension."""
    return head.lstrip(b" \t\r\n\x00\xef\xbb\xbf").startswith(PDF_MAGIC)


# Formats that turn up under a text extension (a download or an attachment renamed .txt).
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (ZIP_MAGIC, "a ZIP archive (e.g. .docx, .epub, .xlsx)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file (.doc/.xls)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "gzip data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "a program (ELF)"),
)
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v\x1b")


def binary_kind(head: bytes) -> str | None:
    """Why a file's first bytes cannot be text ('a PNG image', "starts with '...'"); None when they can be.

    UTF-16 text (with its BOM) holds NUL bytes and is text; otherwise NUL bytes, or more than 10% of
    control characters, mean binary data in any encoding decode_text would try.
    """
    for magic, what in _BINARY_MAGIC:
        if head.startswith(magic):
            return what
    if not head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    controls = sum(1 for b in head if (b < 0x20 and b not in _TEXT_CONTROLS) or b == 0x7F)
    if b"\x00" in head or controls > len(head) // 10:
        return f"starts with {describe_head(head)!r}"
    return None


def describe_head(head: bytes) -> str:
    """A short printable picture of a file's first bytes, for error messages."""
    shown = head[:16]
    return repr(shown)[2:-1] if shown else "nothing"


def require_pdf(path: Path, head: bytes) -> None:
    if sniff(head) != "pdf":
        raise CorruptDocument(str(path), f"not a PDF (starts with {describe_head(head)!r})")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_text(path: Path, data: bytes) -> str:
    """Decode a text file: BOMs first, then UTF-8, then GB18030 (Chinese), then Latin-1.

    A file with NUL bytes that is not UTF-16 is binary, not text.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:4096]:
        raise CorruptDocument(str(path), "binary content in a text file (NUL bytes)")
    for encoding in ("utf-8", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")
