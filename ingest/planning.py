"""What a run must do before any parsing, and the clean-up after it: classify, detach, prune.

`classify` hashes every file (sha256 of its bytes, streamed) and settles what needs no parse:
content already stored at this path -> *skipped*; content already stored under another path, or
twice in this batch -> the path is recorded on the stored document (*skipped*, counted as
deduplicated); a known path with new content -> an *updated* task (written with `replaces=` the old
id, atomically); anything else -> an *added* task. `prune` removes what a folder no longer holds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ingest.discover import Found, is_under, sha256_file
from ingest.records import ParseTask, Tally
from rag.errors import DocumentNotFound
from rag.protocols import Store
from rag.records import DocumentInfo


def doc_paths(info: DocumentInfo) -> set[str]:
    """Every path a stored document is known under."""
    return set(info.paths) | ({info.source} if info.source else set())


def classify(files: list[Found], store: Store, tally: Tally, cancel: threading.Event) -> list[ParseTask]:
    """Hash every file; record skips and dedups now; return what must be parsed."""
    s = tally.summary
    tasks: list[ParseTask] = []
    by_sha: dict[str, ParseTask] = {}
    for f in files:
        if cancel.is_set():
            s.cancelled = True
            break
        t = time.perf_counter()
        try:
            sha = sha256_file(f.path)
        except OSError as exc:
            tally.fail(f.key, f"{f.key}: cannot read ({exc.strerror or exc})")
            continue
        finally:
            tally.t["hash"] += time.perf_counter() - t
        if sha in by_sha:  # the same content twice in this batch: parse once
            by_sha[sha].also.append(f.key)
            continue
        stored = store.find_by_sha(sha)
        at_path = store.find_by_path(f.key)
        if stored is not None:
            if f.key in doc_paths(stored):
                s.skipped.append(f.key)
            else:
                if at_path is not None and at_path.id != stored.id:
                    detach(store, at_path, f.key)
                store.add_path(stored.id, f.key)
                s.deduplicated.append(f.key)
            tally.done(f.key)
            tally.progress("scanning")
            continue
        task = ParseTask(f, sha, "added")
        if at_path is not None:  # changed content at a known path
            task.status = "updated"
            if doc_paths(at_path) <= {f.key}:
                task.replaces = at_path.id
            else:  # the old content still lives at other paths: keep it for them
                detach(store, at_path, f.key)
        by_sha[sha] = task
        tasks.append(task)
        tally.progress("scanning")
    return tasks


def detach(store: Store, info: DocumentInfo, path: str) -> None:
    """Make `path` stop pointing at document `info` (removing it when that was its only path)."""
    if doc_paths(info) <= {path}:
        store.remove_document(info.id)
        return
    remove_path = getattr(store, "remove_path", None)
    if remove_path is not None:
        remove_path(path)


def prune(roots: list[Path], store: Store, tally: Tally) -> None:
    """Remove documents whose files under `roots` are gone (one with another path only loses the missing one)."""
    if not roots or tally.summary.cancelled:
        return
    tally.progress("pruning", force=True)
    remove_path = getattr(store, "remove_path", None)
    for info in store.list_documents():
        paths = doc_paths(info)
        gone = {p for p in paths if is_under(p, roots) and not Path(p).exists()}
        if not gone:
            continue
        try:
            if gone == paths:
                store.remove_document(info.id)
            elif remove_path is not None:
                for p in sorted(gone):
                    remove_path(p)
            else:
                continue
        except DocumentNotFound:
            continue
        tally.summary.pruned.extend(sorted(gone))
