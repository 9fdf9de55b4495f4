"""Uploaded files: safe names, allowed types, size and count limits, atomic saving under files/.

A name from a client is never used as a path: only its last component survives, reduced to letters
(any script), digits and a few punctuation marks, and the result must stay inside the KB's files/.
A saved file never replaces another: a name already taken (by this request or an earlier one) becomes
`name-2.ext`, `name-3.ext`... — otherwise a second, different `report.pdf` would be ingested as an
update of the first, and the first document would leave the knowledge base.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from rag.errors import InvalidRequest, PayloadTooLarge, UnsupportedFormat
from rag.settings import ServerSettings

_UNSAFE = re.compile(r"[^\w.\-() ]+")
MAX_NAME_BYTES = 180
COPY_CHUNK = 1 << 20


class FileTooLarge(MultiPartException):
    """A file part went past the per-file upload limit while the body was being read."""


class UploadFormParser(MultiPartParser):
    """Starlette's multipart parser with a per-file size limit checked as the bytes arrive.

    Without it a 2 GB file sent without Content-Length was spooled to disk in full before its size
    was looked at; now the upload stops at the first byte past server.max_upload_mb.
    """

    def __init__(self, *args: Any, max_file_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_file_bytes = max_file_bytes
        self._file_bytes = 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self.max_file_bytes:
                name = self._current_part.file.filename or "a file"
                raise FileTooLarge(
                    f"{name}: larger than the upload limit of {self.max_file_bytes >> 20} MB (server.max_upload_mb)"
                )
        super().on_part_data(data, start, end)


async def read_upload_form(request: Request, *, max_files: int, max_file_bytes: int) -> FormData:
    """The upload's multipart form, its files spooled with the per-file limit; typed errors (413, 400)."""
    try:
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            parser = UploadFormParser(
                request.headers, request.stream(), max_files=max_files, max_fields=100, max_file_bytes=max_file_bytes
            )
            return await parser.parse()
        return await request.form(max_files=max_files, max_fields=100)  # not multipart: no files in it
    except FileTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except (MultiPartException, StarletteHTTPException) as exc:
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 413:
            raise  # the whole body's limit (server.middleware.BodyLimitMiddleware)
        detail = exc.message if isinstance(exc, MultiPartException) else str(exc.detail)
        if "Too many files" in detail:
            raise PayloadTooLarge(
                f"too many files in one upload: at most {max_files} (server.max_upload_files)"
            ) from None
        raise InvalidRequest(f"malformed multipart upload: {detail}") from None


def upload_body_limit(server: ServerSettings) -> int:
    """The largest upload request body: every allowed file at the per-file limit, plus 1 MB of form overhead."""
    return server.max_upload_files * server.max_upload_mb * (1 << 20) + (1 << 20)


def sanitize_filename(raw: str) -> str:
    """A safe file name from a client's: no directories, no traversal, no control or odd characters."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/")
    name = PurePosixPath(name).name  # drops every directory part, including '..' and absolute roots
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip(" .")  # no hidden files, no trailing dots
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    while len(name.encode("utf-8")) > MAX_NAME_BYTES and stem:
        stem = stem[:-1]
        name = f"{stem}.{ext}" if ext else stem
    if not stem or name in {".", ".."}:
        name = f"upload.{ext}" if ext else "upload"
    return name


def check_extension(name: str, allowed: set[str]) -> str:
    """The lower-case extension of `name`, or UnsupportedFormat (415) naming what is accepted."""
    ext = Path(name).suffix.lower()
    if ext not in allowed:
        raise UnsupportedFormat(
            name, f"type {ext or '(none)'!r} is not accepted; upload one of {', '.join(sorted(allowed))}"
        )
    return ext


@dataclass(slots=True)
class SavedFile:
    original: str  # the name the client sent
    name: str  # the sanitised name it is stored under
    path: Path
    bytes: int


def candidate_names(name: str) -> Iterator[str]:
    """`name`, then `stem-2.ext`, `stem-3.ext`... (for the first one not taken yet)."""
    stem, ext = Path(name).stem, Path(name).suffix
    yield name
    n = 2
    while True:
        yield f"{stem}-{n}{ext}"
        n += 1


def _claim_free_name(directory: Path, name: str, original: str) -> tuple[str, Path]:
    """Create an empty file under the first free candidate name; O_EXCL makes it atomic across requests."""
    root = directory.resolve()
    for candidate in candidate_names(name):
        target = (directory / candidate).resolve()
        if target.parent != root:  # belt and braces: sanitize_filename already prevents it
            raise InvalidRequest(f"upload name {original!r} does not resolve inside the knowledge base's files/")
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        return candidate, target
    raise AssertionError("unreachable: candidate_names never ends")  # pragma: no cover


def save_upload(stream: BinaryIO, original: str, name: str, directory: Path, max_bytes: int) -> SavedFile:
    """Copy `stream` to `directory/name` (or the first free `name-N`) atomically, at most `max_bytes`.

    Raises PayloadTooLarge past the limit; nothing is left behind then.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / name).resolve().parent != directory.resolve():
        raise InvalidRequest(f"upload name {original!r} does not resolve inside the knowledge base's files/")
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=directory)
    size = 0
    claimed: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                block = stream.read(COPY_CHUNK)
                if not block:
                    break
                size += len(block)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"{original}: larger than the upload limit of {max_bytes // (1 << 20)} MB (server.max_upload_mb)"
                    )
                out.write(block)
        # The name is claimed only now, once the size is known to be fine: the placeholder is ours to replace.
        name, target = _claim_free_name(directory, name, original)
        claimed = target
        os.replace(tmp, target)
    except BaseException:
        if claimed is not None and Path(tmp).exists():  # not moved: drop the empty placeholder too
            claimed.unlink(missing_ok=True)
        Path(tmp).unlink(missing_ok=True)
        raise
    return SavedFile(original=original, name=name, path=target, bytes=size)
