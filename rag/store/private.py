"""A knowledge base's files are its owner's alone: folders 0700, files 0600.

A KB holds the full text of every document in it (SQLite), its vectors (FAISS) and the uploaded
originals; on a shared machine none of that should be readable by other accounts, whatever the
umask. Modes are set explicitly, not through the process umask, which a library must not change
(a server's other threads create files too).
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(folder: Path) -> None:
    """Create `folder` (and missing parents) and make `folder` itself 0700, even if it existed."""
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(folder, DIR_MODE)  # mkdir's mode is masked by the umask, and an existing folder keeps its own


def touch_private(path: Path) -> None:
    """Create `path` empty with mode 0600 if it is missing (SQLite gives its WAL files the same mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))


def write_private_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path`, created or truncated, mode 0600, then fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, FILE_MODE)  # a file left over from an older version keeps its mode through O_CREAT
        fh.write(text)
        fh.flush()
        os.fsync(fd)
