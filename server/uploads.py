"""Uploaded files: safe names, allowed types, size and count limits, atomic saving under files/.

A name from a client is never used as a path: only its last component survives, reduced to letters
(any script), digits and a few punctuation marks, and the result must stay inside the KB's files/.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from rag.errors import InvalidRequest, PayloadTooLarge, UnsupportedFormat

_UNSAFE = re.compile(r"[^\w.\-() ]+")
MAX_NAME_BYTES = 180
COPY_CHUNK = 1 << 20


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
        raise UnsupportedFormat(name, f"type {ext or '(none)'!r} is not accepted; upload one of {', '.join(sorted(allowed))}")
    return ext


@dataclass(slots=True)
class SavedFile:
    original: str  # the name the client sent
    name: str  # the sanitised name it is stored under
    path: Path
    bytes: int


def save_upload(stream: BinaryIO, original: str, name: str, directory: Path, max_bytes: int) -> SavedFile:
    """Copy `stream` to `directory/name` atomically, refusing more than `max_bytes` (PayloadTooLarge)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = (directory / name).resolve()
    if target.parent != directory.resolve():  # belt and braces: sanitize_filename already prevents it
        raise InvalidRequest(f"upload name {original!r} does not resolve inside the knowledge base's files/")
    fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=directory)
    size = 0
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
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return SavedFile(original=original, name=name, path=target, bytes=size)
