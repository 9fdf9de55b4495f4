"""Finding the files to ingest, and their content identity (streaming sha256)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Editor, office and download leftovers that are never documents.
_TEMP_PREFIXES = ("~$", ".~", "~")
_TEMP_SUFFIXES = ("~", ".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".swp", ".lock")


@dataclass(frozen=True, slots=True)
class Found:
    """A file to consider; `path` is absolute and resolved, `explicit` when named on the command line."""

    path: Path
    size: int
    explicit: bool = False

    @property
    def key(self) -> str:
        """The path string a knowledge base records for this file."""
        return str(self.path)


def printable_path(path: Path | str) -> str:
    """`path` as text that can be stored, printed and sent as JSON: bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def undecodable_name_error(path: Path) -> str | None:
    """The one-line error for a path that is not valid UTF-8 (SQLite and JSON cannot hold it), else None.

    Such names come from zip archives made on Chinese Windows (GBK bytes); the file fails alone.
    """
    try:
        str(path).encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    hint = ""
    try:
        hint = f" (as GBK it reads {os.fsencode(path.name).decode('gb18030')!r})"
    except UnicodeDecodeError:
        pass
    return (
        f"{printable_path(path)}: the file name is not valid UTF-8{hint}; rename it to UTF-8 "
        "(e.g. convmv -f gbk -t utf-8 --notest) and ingest it again"
    )


def _outside_error(link: Path) -> str:
    # The target is not named: the line may reach someone who should not learn other paths.
    return (
        f"{printable_path(link)}: skipped, a symbolic link to a file outside the folder being ingested "
        "(name the file itself to ingest it)"
    )


def is_hidden_or_temp(name: str) -> bool:
    """Dot files, Office lock files (~$x.docx), editor backups (x~) and partial downloads."""
    lower = name.lower()
    return name.startswith(".") or lower.startswith(_TEMP_PREFIXES) or lower.endswith(_TEMP_SUFFIXES)


def _matches(glob: str | None, path: Path, root: Path) -> bool:
    if not glob:
        return True
    pattern = glob.lower()  # '*.pdf' also finds 'REPORT.PDF'
    if "/" in pattern:  # a path pattern, relative to the folder that was given
        rel = path.relative_to(root).as_posix().lower()
        return fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(rel, pattern.removeprefix("**/"))
    return fnmatch.fnmatchcase(path.name.lower(), pattern)


def discover(
    paths: Sequence[Path], extensions: Iterable[str], glob: str | None = None
) -> tuple[list[Found], list[tuple[str, str]]]:
    """Files under `paths` to ingest, sorted and without duplicates, plus (path, error) for bad arguments.

    Folders are walked recursively (hidden folders and hidden/temporary files skipped, symlinked
    folders not followed, a symlinked file that points outside the folder given skipped with an
    error line); only files with a supported extension and matching `glob` (a file-name
    pattern such as '*.pdf', or a relative path pattern such as 'reports/**/*.pdf') are kept. A file
    named explicitly is always kept (an unsupported type then fails with a clear message).
    """
    exts = {e.lower() for e in extensions}
    found: dict[Path, Found] = {}
    errors: list[tuple[str, str]] = []
    for given in paths:
        p = Path(given).expanduser()
        if p.is_file():
            rp = p.resolve()
            if (bad := undecodable_name_error(rp)) is not None:
                errors.append((printable_path(rp), bad))
                continue
            found.setdefault(rp, Found(rp, rp.stat().st_size, explicit=True))
            continue
        if not p.is_dir():
            errors.append((printable_path(p), f"{printable_path(p)}: no such file or folder"))
            continue
        root = p.resolve()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if is_hidden_or_temp(name) or Path(name).suffix.lower() not in exts:
                    continue
                fp = Path(dirpath) / name
                if not _matches(glob, fp, root):
                    continue
                try:
                    rp = fp.resolve()
                    if not rp.is_file():
                        continue
                    if not is_under(str(rp), [root]):
                        # Ingesting a folder means what is in it: a symlink out of it (e.g. to ~/.ssh)
                        # is not read unless that file is named on its own.
                        errors.append((printable_path(fp), _outside_error(fp)))
                        continue
                    if (bad := undecodable_name_error(rp)) is not None:
                        errors.append((printable_path(rp), bad))
                        continue
                    found.setdefault(rp, Found(rp, rp.stat().st_size))
                except OSError as exc:
                    errors.append((printable_path(fp), f"{printable_path(fp)}: cannot read ({exc.strerror or exc})"))
    return sorted(found.values(), key=lambda f: f.key), errors


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def folder_roots(paths: Sequence[Path]) -> list[Path]:
    """The resolved folders among `paths` (what `prune` is allowed to look under)."""
    return [Path(p).expanduser().resolve() for p in paths if Path(p).expanduser().is_dir()]


def is_under(path: str, roots: Sequence[Path]) -> bool:
    p = Path(path)
    return any(p == r or r in p.parents for r in roots)
