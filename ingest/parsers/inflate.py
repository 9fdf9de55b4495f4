"""Decompression-bomb guards: what a file's compressed parts may inflate to (ingest.max_inflated_mb).

A 3 MB .docx can hold a 1 GB document.xml and a 3 KB PDF a content stream of gigabytes; a parser that
inflates first and checks later has already spent the memory and the minutes. So the sizes a ZIP's
directory declares are checked before anything is read, and every read is counted against one
budget per file while it inflates, so a header that lies about a member's size gains nothing.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from rag.errors import CorruptDocument, DocumentTooLarge
from rag.settings import IngestSettings
from rag.terminal import safe_text

MB = 1024 * 1024
MAX_ZIP_MEMBERS = 50_000  # a book of 10,000 chapters and its images; more is an archive, not a document
_BLOCK = 1 << 20
# Word and EPUB packages are stored or deflated; bzip2/LZMA members would be inflated in one call.
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


def part_name(name: str) -> str:
    """A member name for an error line: made by whoever made the file, so control characters escaped."""
    return safe_text(name)[:160]


def _mb(n: int) -> str:
    return f"{n / MB:,.0f} MB" if n >= MB else f"{n / MB:.1f} MB"


class InflateBudget:
    """The bytes one file may inflate to, spent as its parts are read."""

    def __init__(self, path: Path | str, settings: IngestSettings) -> None:
        self.path = str(path)
        self.limit_mb = settings.max_inflated_mb
        self.limit = settings.max_inflated_mb * MB
        self.used = 0

    @property
    def limit_text(self) -> str:
        return f"the limit of {self.limit_mb} MB inflated (ingest.max_inflated_mb)"

    def too_large(self, what: str) -> DocumentTooLarge:
        """`what` ends where the limit is named: "page 3 interprets 2 GB of content, over the limit ..."."""
        return DocumentTooLarge(self.path, f"{what}, over {self.limit_text}")

    def charge(self, n: int, what: str) -> None:
        """Count `n` more inflated bytes of `what`; refuse the file once the total passes the limit."""
        self.used += n
        if self.used > self.limit:
            raise DocumentTooLarge(self.path, f"{what} inflates past {self.limit_text}; a decompression bomb?")


def check_zip(zf: zipfile.ZipFile, budget: InflateBudget) -> None:
    """Refuse a package before reading it: too many members, an unexpected compression method, or
    declared sizes that add up to more than the budget."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise DocumentTooLarge(budget.path, f"{len(infos):,} parts in the package, over {MAX_ZIP_MEMBERS:,}")
    for info in infos:
        if info.compress_type not in _ZIP_METHODS:
            raise CorruptDocument(
                budget.path,
                f"package part {part_name(info.filename)} uses compression method {info.compress_type}, not deflate",
            )
    total = sum(info.file_size for info in infos)
    if total > budget.limit:
        biggest = max(infos, key=lambda i: i.file_size)
        raise budget.too_large(
            f"its parts would inflate to {_mb(total)} ({part_name(biggest.filename)} alone {_mb(biggest.file_size)}: "
            "a decompression bomb?)"
        )


def _blocks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: InflateBudget) -> Iterator[bytes]:
    """A member inflated a block at a time (zipfile then stops at the declared size and checks the CRC:
    a header that understates the size fails there), each block charged to `budget`."""
    try:
        with zf.open(info) as fh:
            while block := fh.read(_BLOCK):
                budget.charge(len(block), f"package part {part_name(info.filename)}")
                yield block
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CorruptDocument(
            budget.path, f"damaged package part {part_name(info.filename)} ({part_name(str(exc))})"
        ) from exc


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: InflateBudget) -> bytes:
    """A member's bytes, inflated block by block and charged to `budget` as they come."""
    return b"".join(_blocks(zf, info, budget))


def verify_members(zf: zipfile.ZipFile, budget: InflateBudget) -> None:
    """Inflate every member once, a block at a time, keeping nothing: for a library that reads members
    with `ZipFile.read`, which inflates a member in one call, whatever its header declared (a 2 KB
    entry that holds 1.2 GB takes 1.2 GB and 13 s before its CRC fails). After this pass every member
    is known to inflate to its declared size."""
    for info in zf.infolist():
        for _ in _blocks(zf, info, budget):
            pass


def inflate_blocks(data: bytes) -> Iterator[bytes]:
    """zlib (PDF FlateDecode) `data`, inflated a block at a time: the caller charges each block to its
    budget before the next is made, so a bomb is never inflated past the limit.

    A damaged stream ends at the damage, as MuPDF's reader ends it.
    """
    inflater = zlib.decompressobj()
    pending = data
    try:
        while pending:
            block = inflater.decompress(pending, _BLOCK)
            pending = inflater.unconsumed_tail
            if not block:
                return
            yield block
            if inflater.eof:
                return
        if rest := inflater.flush(_BLOCK):  # all input taken: what zlib still holds is at most a window
            yield rest
    except zlib.error:
        return
